"""Which task each trace row asks, and how long its answer must be.

The task is the one whose estimated prompt length is closest to the row's input length (ties: the
first in task-set order). Prompt length is estimated client-side, without the model's tokenizer:
UTF-8 bytes of the prompt / ``bytes_per_token`` + ``image_tokens`` per image (the estimate is written
into the run's trace.json so a user can compare it with the server's usage figures in the records).
Rows whose ``hash_ids`` start with the same block share a prefix in the original traffic: all of them
get the task chosen for the first such row, so they share its image and leading text and the server's
prefix cache sees what it saw in production. The output length is enforced through ``max_tokens`` (the
caller sets ``ignore_eos`` or ``min_tokens`` where the server supports it).

Every worker computes the same mapping from the same rows and tasks, so arrival ``i`` asks the same
request whichever worker sends it.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from benchmark.tasks.schema import TaskRecord
from loadgen.traces.formats import TraceRow


@dataclass(frozen=True)
class MappedRow:
    task_index: int
    max_tokens: int
    estimated_prompt_tokens: int


def estimate_prompt_tokens(task: TaskRecord, bytes_per_token: float, image_tokens: int) -> int:
    return round(len(task.prompt.encode("utf-8")) / bytes_per_token) + image_tokens * len(task.images)


def map_rows(
    rows: list[TraceRow], tasks: list[TaskRecord], bytes_per_token: float = 3.5, image_tokens: int = 0
) -> list[MappedRow]:
    estimates = [estimate_prompt_tokens(task, bytes_per_token, image_tokens) for task in tasks]
    order = sorted(range(len(tasks)), key=lambda i: (estimates[i], i))
    keys = [estimates[i] for i in order]

    def closest(length: int) -> int:
        at = bisect.bisect_left(keys, length)
        candidates = [p for p in (at - 1, at) if 0 <= p < len(order)]
        best = min(candidates, key=lambda p: (abs(keys[p] - length), order[p]))
        return order[best]

    by_prefix: dict[int, int] = {}
    mapped = []
    for row in rows:
        if row.hash_ids:
            task = by_prefix.setdefault(row.hash_ids[0], closest(row.input_tokens))
        else:
            task = closest(row.input_tokens)
        mapped.append(MappedRow(task, max(1, row.output_tokens), estimates[task]))
    return mapped
