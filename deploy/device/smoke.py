"""One streamed image request against an OpenAI-compatible endpoint (stdlib only; runs on the device).

    python3 deploy/device/smoke.py ENDPOINT MODEL TASK_DIR

Prints HTTP status, time to first chunk, chunks, and the server's usage; exits 1 unless the answer
streamed and has exactly 256 completion tokens (ignore_eos + min_tokens fix the length).
"""

from __future__ import annotations

import base64
import json
import sys
import time
import urllib.request
from pathlib import Path


def main(endpoint: str, model: str, task_dir: str) -> int:
    root = Path(task_dir)
    task = json.loads((root / "tasks.jsonl").open(encoding="utf-8").readline())
    image = base64.b64encode((root / task["images"][0]["path"]).read_bytes()).decode()
    body = {
        "model": model,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}},
                    {"type": "text", "text": task["prompt"]},
                ],
            }
        ],
        "max_tokens": 256,
        "min_tokens": 256,
        "ignore_eos": True,
        "stop": [],
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    request = urllib.request.Request(  # noqa: S310 - http(s) endpoint given by the caller
        f"{endpoint}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    t0 = time.perf_counter()
    first, chunks, usage, text = None, 0, None, []
    with urllib.request.urlopen(request, timeout=120) as reply:  # noqa: S310
        status = reply.status
        for raw in reply:
            line = raw.decode().strip()
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            event = json.loads(line[5:])
            if event.get("usage"):
                usage = event["usage"]
            for choice in event.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    chunks += 1
                    text.append(piece)
                    first = first or time.perf_counter() - t0
    total = time.perf_counter() - t0
    first_ms = f"{first * 1e3:.0f} ms" if first is not None else "none"
    print(
        f"smoke: HTTP {status}, first chunk {first_ms}, {chunks} chunks in {total:.2f} s, "
        f"usage {usage}, text starts {''.join(text)[:60]!r}"
    )
    ok = status == 200 and usage is not None and usage.get("completion_tokens") == 256
    print("smoke:", "ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
