"""Grading throughput and latency for HumanEval-sized execution tasks.

Grades every HumanEval problem's canonical solution (passes) and a plausible wrong answer (fails), in a
pool of worker processes, and prints answers per second and the latency distribution of one grade
(``GradeResult.duration_s``: sandbox start, the answer's load, the tests, teardown).

    .venv/bin/python tests/benchmarks/bench_grading.py --workers 2 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor

from benchmark.grading import GradeResult, grade
from benchmark.grading.sandbox import resolve_mode
from benchmark.tasks.loaders.humaneval import read_problems, to_record
from benchmark.tasks.schema import TaskRecord


def _jobs() -> list[tuple[TaskRecord, str, str]]:
    jobs = []
    for problem in read_problems():
        record = to_record(problem)
        jobs.append((record, f"```python\n{record.canonical_solution}\n```", "pass"))
        # wrong but well-formed: the right signature, a constant answer of a plausible type
        constant = "[]" if "List" in problem.prompt else "0"
        wrong = f"```python\n{problem.prompt}    return {constant}\n```"
        jobs.append((record, wrong, "fail"))
    return jobs


def _grade(job: tuple[TaskRecord, str, str]) -> tuple[str, str, float]:
    record, answer, expected = job
    result: GradeResult = grade(record, answer)
    return expected, result.verdict, result.duration_s


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="how many times to grade the 328 answers")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    jobs = _jobs() * args.rounds
    mode = resolve_mode()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        list(pool.map(_grade, jobs[: args.workers * 2]))  # warm the workers (imports, sandbox probe)
        started = time.perf_counter()
        results = list(pool.map(_grade, jobs, chunksize=1))
        wall = time.perf_counter() - started
    latencies = [duration for _, _, duration in results]
    verdicts = Counter(verdict for _, verdict, _ in results)
    mismatches = sum(1 for expected, verdict, _ in results if expected != verdict)
    figures = {
        "answers": len(results),
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "sandbox": mode,
        "python": platform.python_version(),
        "wall_s": round(wall, 2),
        "answers_per_s": round(len(results) / wall, 1),
        "latency_s": {
            "p50": round(statistics.median(latencies), 3),
            "p90": round(_percentile(latencies, 0.90), 3),
            "p99": round(_percentile(latencies, 0.99), 3),
            "max": round(max(latencies), 3),
        },
        "verdicts": dict(verdicts),
        "unexpected_verdicts": mismatches,
    }
    if args.json:
        print(json.dumps(figures))
        return
    print(f"{figures['answers']} answers, {args.workers} workers, {os.cpu_count()} CPUs, sandbox={mode}")
    print(f"{figures['answers_per_s']} answers/s over {figures['wall_s']} s")
    print("latency per grade (s): " + " ".join(f"{k}={v}" for k, v in figures["latency_s"].items()))  # type: ignore[attr-defined]
    print(f"verdicts: {dict(verdicts)}; unexpected: {mismatches}")


if __name__ == "__main__":
    main()
