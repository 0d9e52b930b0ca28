"""Steady-state output throughput from a `vllm bench serve --save-detailed` result (stdlib only).

    python3 deploy/device/steady_state.py RESULT.json[.gz] [...]

`vllm bench serve` divides all output tokens by the whole run, ramp-up (the first wave's prefills)
and drain (the last requests finishing at falling concurrency) included. m3bench's closed-loop stage
measures a window at full concurrency after a warm-up. For a like-for-like figure this rebuilds every
chunk's arrival time (start + TTFT + cumulative ITL) and counts the chunks that arrived between
T0 = the first request's completion (the first wave's prefills are done) and T1 = the last request's
start (the drain has not begun). A chunk is a token on a bare vLLM server (257 chunks per 256-token
answer, the last carries the finish); Ray Serve may merge chunks, so its count is a lower bound.
"""

from __future__ import annotations

import gzip
import json
import sys
from itertools import accumulate


def steady(path: str) -> dict[str, float]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        data = json.load(fh)
    starts, ttfts, itls = data["start_times"], data["ttfts"], data["itls"]
    arrivals: list[float] = []
    ends: list[float] = []
    for start, ttft, gaps in zip(starts, ttfts, itls, strict=True):
        times = [start + ttft + g for g in accumulate(gaps, initial=0.0)]
        arrivals.extend(times)
        ends.append(times[-1])
    t0, t1 = min(ends), max(starts)
    inside = sum(1 for t in arrivals if t0 <= t < t1)
    return {
        "window_s": t1 - t0,
        "tokens_in_window": inside,
        "steady_output_tok_per_s": inside / (t1 - t0) if t1 > t0 else float("nan"),
        "whole_run_output_tok_per_s": data.get("output_throughput", float("nan")),
        "chunks_per_request_mean": sum(len(g) + 1 for g in itls) / len(itls),
    }


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print(p, json.dumps(steady(p)))
