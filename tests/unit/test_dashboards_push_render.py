"""Pushing to Grafana (against a stand-in Grafana API) and rendering panels (against stand-in data)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from typer.testing import CliRunner

from observability import cli as dashboards_cli
from observability import push, render, verify
from observability.dashboards import build


class _FakeGrafana(BaseHTTPRequestHandler):
    calls: ClassVar[list[tuple[str, str, str, Any]]] = []

    def _reply(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.calls.append(("GET", self.path, self.headers.get("Authorization", ""), None))
        self._reply(404, {"message": "folder not found"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.calls.append(("POST", self.path, self.headers.get("Authorization", ""), body))
        self._reply(200, {"status": "success", "uid": body.get("uid", "x")})

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def grafana() -> Iterator[str]:
    _FakeGrafana.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeGrafana)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_push_creates_the_folder_and_overwrites_each_dashboard(grafana: str) -> None:
    pushed = push.push(grafana, "s3cret", build.load_committed())
    assert sorted(pushed) == sorted(build.load_committed())
    methods = [(method, path) for method, path, _, _ in _FakeGrafana.calls]
    assert methods[:2] == [("GET", "/api/folders/m3bench"), ("POST", "/api/folders")]
    dashboards = [body for method, path, _, body in _FakeGrafana.calls if path == "/api/dashboards/db"]
    assert len(dashboards) == 3
    assert all(
        d["overwrite"] and d["folderUid"] == "m3bench" and d["dashboard"]["id"] is None for d in dashboards
    )
    assert all(auth == "Bearer s3cret" for _, _, auth, _ in _FakeGrafana.calls)


def test_token_comes_from_the_environment_or_a_file(tmp_path: Path) -> None:
    assert push.read_token(environ={"M3BENCH_GRAFANA_TOKEN": " t1\n"}) == "t1"
    assert push.read_token(environ={"GRAFANA_TOKEN": "t2"}) == "t2"
    (tmp_path / "token").write_text("t3\n")
    assert push.read_token(tmp_path / "token", environ={}) == "t3"
    with pytest.raises(push.PushError, match="no Grafana token"):
        push.read_token(environ={})
    with pytest.raises(push.PushError, match="cannot read"):
        push.read_token(tmp_path / "missing", environ={})


def test_cli_push_without_a_token_is_a_usage_error_and_there_is_no_token_option(grafana: str) -> None:
    runner = CliRunner(env={"M3BENCH_GRAFANA_TOKEN": "", "GRAFANA_TOKEN": ""})
    done = runner.invoke(dashboards_cli.app, ["push", "--url", grafana])
    assert done.exit_code == 2
    assert "no Grafana token" in done.output
    helptext = runner.invoke(dashboards_cli.app, ["push", "--help"], terminal_width=200).output
    assert "--token-file" in helptext
    assert "--token " not in helptext


class _FakePrometheus:
    """Two models, a p50 and a p99 series each, and instant accuracy / latency rows."""

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        labels = [{"run_id": "r", "model": m, "language": lang} for m in ("a", "b") for lang in ("en", "zh")]
        value = "0.75" if "accuracy" in promql else "0.42"
        return [{"metric": row, "value": [at, value]} for row in labels]

    def query_range(self, promql: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        points = [[start + i, str(0.1 + 0.01 * i)] for i in range(int(end - start))]
        return [{"metric": {"model": m, "model_name": m}, "values": points} for m in ("a", "b")]


def test_render_draws_one_key_panel_per_dashboard(tmp_path: Path) -> None:
    window = verify.Window(
        1000.0, 1060.0, {"run": "r", "model": ".*", "language": ".*", "__rate_interval": "4s"}
    )
    paths = render.render_dashboards(_FakePrometheus(), build.load_committed(), window, tmp_path)
    assert sorted(p.name for p in paths) == sorted(
        f"{uid.removeprefix('m3bench-')}--{render.slug(title)}.png"
        for uid, title in render.KEY_PANELS.items()
    )
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


def test_legend_templates_follow_grafana() -> None:
    assert render.legend("p99 {{model}} {{ language }}", {"model": "m", "language": "en"}) == "p99 m en"
    assert render.legend("", {"__name__": "x", "model": "m"}) == "model=m"


class _NoHaproxyPrometheus(_FakePrometheus):
    """Everything has data but HAProxy's series; whether HAProxy's job was scraped is a parameter."""

    def __init__(self, haproxy_scraped: bool) -> None:
        self.haproxy_scraped = haproxy_scraped

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        return [] if "haproxy_" in promql else super().query(promql, at)

    def query_range(self, promql: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        if promql == 'up{job="haproxy"}':
            return super().query_range(promql, start, end, step) if self.haproxy_scraped else []
        return [] if "haproxy_" in promql else super().query_range(promql, start, end, step)


def test_haproxy_panels_are_not_applicable_only_without_a_haproxy_target() -> None:
    window = verify.Window(
        1000.0, 1060.0, {"run": "r", "model": ".*", "language": ".*", "__rate_interval": "4s"}
    )
    documents = build.load_committed()
    absent = verify.check_panels(_NoHaproxyPrometheus(haproxy_scraped=False), documents, window)
    haproxy = [o for o in absent if "haproxy_" in o.expr]
    assert haproxy
    assert all(o.problem is None and o.not_applicable for o in haproxy)
    assert not any(o.not_applicable for o in absent if "haproxy_" not in o.expr)
    scraped = verify.check_panels(_NoHaproxyPrometheus(haproxy_scraped=True), documents, window)
    assert all(o.problem == "no data" for o in scraped if "haproxy_" in o.expr)
