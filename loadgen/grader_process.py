"""A grader process: reads (job id, task, answer) frames on stdin, writes verdict frames on stdout.

Started by ``loadgen.grading_pool``; runs ``module:function(task, answer) -> GradeResult`` (by default
``benchmark.grading:grade``) outside the load generator's event loop. Frames are a 4-byte big-endian
length and a pickle.
"""

from __future__ import annotations

import importlib
import pickle
import struct
import sys
import traceback
from collections.abc import Callable
from typing import Any, BinaryIO

_LENGTH = struct.Struct(">I")


def read_frame(stream: BinaryIO) -> Any | None:
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (size,) = _LENGTH.unpack(head)
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)  # noqa: S301 - frames come from our own parent process


def encode_frame(obj: object) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


def resolve(spec: str) -> Callable[[Any, str], Any]:
    module_name, _, attribute = spec.partition(":")
    function = getattr(importlib.import_module(module_name), attribute or "grade")
    if not callable(function):
        raise TypeError(f"{spec} is not callable")
    return function  # type: ignore[no-any-return]


def main() -> None:
    spec = sys.argv[1] if len(sys.argv) > 1 else "benchmark.grading:grade"
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    try:
        function = resolve(spec)
    except Exception as exc:
        failure = f"grader {spec} unavailable: {type(exc).__name__}: {exc}"
        function = None
    while (job := read_frame(stdin)) is not None:
        job_id, task, answer = job
        if function is None:
            reply = (job_id, "error", failure, 0.0)
        else:
            try:
                result = function(task, answer)
                reply = (job_id, str(result.verdict), str(result.detail), float(result.duration_s))
            except Exception as exc:
                detail = f"grader raised {type(exc).__name__}: {exc}; {traceback.format_exc(limit=2)[-300:]}"
                reply = (job_id, "error", detail, 0.0)
        stdout.write(encode_frame(reply))
        stdout.flush()


if __name__ == "__main__":
    main()
