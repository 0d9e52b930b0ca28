"""The calibration server's settings and its command line."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Literal

Fault = Literal["none", "non_sse", "malformed", "http500"]


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8100
    ttft_ms: float = 100.0
    itl_ms: float = 10.0
    output_len: int | None = None  # None: the request's max_tokens (16 when absent)
    models: tuple[str, ...] = ("calib",)  # "*" accepts any model name
    token_text: str = " tok"
    fault: Fault = "none"
    die_after_s: float | None = None  # counted from the first request
    die_after_requests: int | None = None  # the process exits 0.3 s after this many requests arrived
    request_log: str | None = None  # append each request's x-request-id, one per line
    timing_log: str | None = None  # per stream: request id, receipt, first-token send, end (perf_counter ns)
    realtime: bool = False  # SCHED_FIFO (or a lower nice value) so a busy machine does not delay sends
    # One FIFO engine that generates this many tokens/s: a request of n tokens holds it n / capacity s and
    # its first token waits for it, so above capacity / n requests/s TTFT grows as a queue's wait would.
    capacity_tps: float | None = None


def parse_args(argv: list[str] | None) -> ServerConfig:
    parser = argparse.ArgumentParser(
        description="m3bench calibration server: programmed TTFT, ITL and length"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100, help="0 picks a free port (printed on stdout)")
    parser.add_argument("--ttft-ms", type=float, default=100.0)
    parser.add_argument("--itl-ms", type=float, default=10.0)
    parser.add_argument("--output-len", type=int, default=None, help="tokens per reply (default: max_tokens)")
    parser.add_argument("--models", default="calib", help="comma-separated served names; * accepts any")
    parser.add_argument("--token-text", default=" tok")
    parser.add_argument("--fault", choices=["none", "non_sse", "malformed", "http500"], default="none")
    parser.add_argument("--die-after-s", type=float, default=None)
    parser.add_argument("--request-log", default=None)
    parser.add_argument(
        "--timing-log", default=None, help="per stream: id, receipt, first send, end (perf ns)"
    )
    parser.add_argument("--die-after-requests", type=int, default=None)
    parser.add_argument("--realtime", action="store_true", help="run with SCHED_FIFO (or nice -10) priority")
    parser.add_argument(
        "--capacity-tps",
        type=float,
        default=None,
        help="tokens/s of one FIFO engine: above capacity / output_len requests/s, TTFT grows as a queue",
    )
    args = vars(parser.parse_args(argv))  # one option per ServerConfig field, named alike
    return ServerConfig(**{**args, "models": tuple(m for m in args["models"].split(",") if m)})
