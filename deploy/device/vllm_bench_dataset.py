"""Write an m3bench task set as a `vllm bench serve --dataset-name custom_image` JSONL, so both tools
replay the same prompts and images (stdlib only; runs on the device).

    python3 deploy/device/vllm_bench_dataset.py TASK_DIR OUT.jsonl [N] [SEED]

Draws N requests the way m3bench's `sampling: {by: language}` does (a language uniformly, then one of
its tasks uniformly), image-bearing tasks only. Images go in as base64 data URLs, as m3bench sends
them (vLLM's file:// URLs would need --allowed-local-media-path on the server).
"""

from __future__ import annotations

import base64
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}


def main(task_dir: str, out: str, n: int = 1024, seed: int = 0) -> None:
    root = Path(task_dir)
    by_language: dict[str, list[dict]] = defaultdict(list)
    with (root / "tasks.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            task = json.loads(line)
            if task.get("images"):
                by_language[task["natural_language"]].append(task)
    languages = sorted(by_language)
    rng = random.Random(seed)
    urls: dict[str, str] = {}
    with open(out, "w", encoding="utf-8") as fh:
        for _ in range(n):
            task = rng.choice(by_language[rng.choice(languages)])
            path = root / task["images"][0]["path"]
            if str(path) not in urls:
                data = base64.b64encode(path.read_bytes()).decode("ascii")
                urls[str(path)] = f"data:{MIME.get(path.suffix.lower(), 'image/png')};base64,{data}"
            fh.write(
                json.dumps({"prompt": task["prompt"], "image_files": [urls[str(path)]]}, ensure_ascii=False)
                + "\n"
            )
    print(f"{out}: {n} requests over {len(languages)} languages ({', '.join(languages)})")


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args[0], args[1], *(int(a) for a in args[2:4]))
