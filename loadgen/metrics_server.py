"""The Prometheus endpoint of one Locust process, served by a child process of its own.

prometheus_client renders a scrape in pure Python. Inside a Locust process that render ran on the gevent
loop that reads the replies (Locust's monkey-patching makes the exporter's server thread a greenlet): at the
end of a 4-level demo sweep one process held 5,714 samples and a scrape took up to 171 ms (Prometheus'
``scrape_duration_seconds``), once a second, and first tokens that arrived meanwhile were read up to 102 ms
late (read delay p99 47-102 ms at 8 and 32 streams with the generator at 8 % CPU, never waiting for a core;
docs/loadgen.md, "Where the exporter renders").

So a Locust process started by ``m3bench load run`` keeps its metric values in prometheus_client's
multiprocess files (``PROMETHEUS_MULTIPROC_DIR``, one directory per process, set by ``loadgen.run``
before the process imports prometheus_client: the library's own mechanism for servers whose workers must
not render), and this child reads and renders them (``MultiProcessCollector``) together with the Locust
process's CPU (``ProcessCollector`` of its pid: ``process_cpu_seconds_total`` stays the generator's). The
series, names and labels are the same as with in-process serving. The child prints its port on stdout,
ends with its parent (``PR_SET_PDEATHSIG`` and a pid watch) and then removes the directory (nobody writes it
any more; ``loadgen.run`` removes it too, but cannot when it was killed: the CI run of 10:07 left two behind).

Run as ``python -m loadgen.metrics_server DIR PID HOST PORT`` (``ClientMetrics.serve`` does it).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import sys
import time

PR_SET_PDEATHSIG = 1
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def serve(directory: str, pid: int, host: str, port: int) -> int:
    """Serve ``directory``'s values and ``pid``'s process metrics on ``host:port``; returns the port."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector
    from prometheus_client.process_collector import ProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    ProcessCollector(pid=lambda: pid, registry=registry)
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return int(server.server_port)


def main(argv: list[str]) -> int:
    directory, pid, host, port = argv[0], int(argv[1]), argv[2], int(argv[3])
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    try:
        bound = serve(directory, pid, host, port)
        print(bound, flush=True)
        while os.getppid() == pid:  # the pid watch covers a parent that died before the prctl took effect
            time.sleep(0.5)
    finally:  # the Locust process is gone (or we were told to stop): its values are no one's any more
        shutil.rmtree(directory, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(os.path.abspath(directory)))  # loadgen.run's root, once empty
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sys.exit(main(sys.argv[1:]))
