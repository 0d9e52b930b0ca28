"""Before a run: is the endpoint there, does it serve the models, does it stream SSE?

Each failure is a ``PreflightError`` with one line that says what is wrong and what to check.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any

from loadgen.http_stream import Endpoint
from loadgen.profile import LoadgenError


class PreflightError(LoadgenError):
    pass


def _request(url: str, body: dict[str, Any] | None, timeout_s: float, headers: dict[str, str]) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")  # noqa: S310
    request.add_header("content-type", "application/json")
    for name, value in headers.items():
        request.add_header(name, value)
    return urllib.request.urlopen(request, timeout=timeout_s)  # noqa: S310 - http(s) only (Endpoint)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the server running and listening there?)"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    return str(exc) or type(exc).__name__


def served_models(
    endpoint: Endpoint, timeout_s: float = 10.0, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    url = f"{endpoint.url}/v1/models"
    try:
        with _request(url, None, timeout_s, headers or {}) as reply:
            payload = json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        raise PreflightError(f"{url} answered HTTP {exc.code}: not an OpenAI-compatible endpoint?") from None
    except (urllib.error.URLError, OSError) as exc:
        raise PreflightError(f"cannot reach {endpoint.url}: {_reason(exc)}") from None
    except ValueError:
        raise PreflightError(f"{url} did not answer JSON: not an OpenAI-compatible endpoint?") from None
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        raise PreflightError(f"{url} answered without a model list ('data')")
    return [entry for entry in data if isinstance(entry, dict)]


def check_models(endpoint: Endpoint, models: list[str], listed: list[dict[str, Any]]) -> None:
    names = [str(entry.get("id")) for entry in listed]
    missing = [model for model in models if model not in names]
    if missing:
        raise PreflightError(
            f"model {', '.join(repr(m) for m in missing)} not served by {endpoint.url} "
            f"(it serves: {', '.join(names) or 'nothing'})"
        )


def check_streaming(
    endpoint: Endpoint, model: str, chat: bool, timeout_s: float, headers: dict[str, str]
) -> None:
    """One tiny streamed request; the reply must be a text/event-stream."""
    path = "/v1/chat/completions" if chat else "/v1/completions"
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": 1,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if chat:
        body["messages"] = [{"role": "user", "content": "ping"}]
    else:
        body["prompt"] = "ping"
    url = f"{endpoint.url}{path}"
    try:
        with _request(url, body, timeout_s, headers) as reply:
            content_type = reply.headers.get("content-type", "")
            reply.read(1)
    except urllib.error.HTTPError as exc:
        detail = exc.read(300).decode("utf-8", "replace").strip()
        raise PreflightError(
            f"{url} refused a streaming request for {model!r}: HTTP {exc.code} {detail}"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        raise PreflightError(f"streaming request to {url} failed: {_reason(exc)}") from None
    if not content_type.startswith("text/event-stream"):
        raise PreflightError(
            f"{url} answered a streaming request with {content_type or 'no content-type'}, not an SSE stream "
            "(text/event-stream); the load generator needs streaming"
        )


def preflight(
    endpoint_url: str,
    models: list[str],
    chat: bool = True,
    timeout_s: float = 60.0,
    headers: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Run every check; return the endpoint's model list (recorded with the run)."""
    try:
        endpoint = Endpoint.parse(endpoint_url)
    except ValueError as exc:
        raise PreflightError(str(exc)) from None
    listed = served_models(endpoint, min(timeout_s, 10.0), headers)
    check_models(endpoint, models, listed)
    for model in models:
        check_streaming(endpoint, model, chat, timeout_s, headers or {})
    return listed
