"""The answer process: loads the untrusted code, then serves calls from the test harness (stdlib only).

Sent into the sandbox as source text after ``_wire`` and ``_hardening``. Nothing this process says can
make a grade pass by itself: the harness decides, and it only sees plain data from here. Protocol (one
frame each way per step):

* first frame out: ``{"status": "ready"}``, ``{"status": "missing"}`` (entry point not defined) or
  ``{"status": "load_error", "type": ..., "message": ...}``;
* then, per call in: ``{"args": [...], "kwargs": [...]}`` -> out ``{"ok": value}``,
  ``{"raise": [type, message]}`` or ``{"unencodable": why}``.
"""

import builtins
import json
import sys
import traceback
from typing import Any

try:  # the sandbox receives these modules' source text ahead of this one
    from loadgen.grading._hardening import harden
    from loadgen.grading._wire import UnencodableError, decode_value, encode_value, recv_frame, send_frame
except ImportError:
    pass


def _short(exc: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return text[-400:]


def _message(exc: BaseException) -> str:
    try:
        return str(exc)[:400]
    except Exception:
        return "<unprintable>"


def _load(payload: dict[str, object], reply_fd: int) -> object:
    namespace: dict[str, object] = {"__name__": "__m3bench_answer__", "__builtins__": builtins}
    entry_point = str(payload["entry_point"])
    try:
        exec(compile(str(payload["prelude"]), "<problem>", "exec"), namespace)  # noqa: S102
    except BaseException as exc:
        send_frame(reply_fd, {"status": "load_error", "type": "PreludeError", "message": _short(exc)})
        return None
    stub = namespace.get(entry_point)
    try:
        exec(compile(str(payload["code"]), "<answer>", "exec"), namespace)  # noqa: S102
    except BaseException as exc:
        send_frame(reply_fd, {"status": "load_error", "type": type(exc).__name__, "message": _short(exc)})
        return None
    function = namespace.get(entry_point)
    if function is None or function is stub or not callable(function):
        send_frame(reply_fd, {"status": "missing"})
        return None
    send_frame(reply_fd, {"status": "ready"})
    return function


def _serve(function: object, call_fd: int, reply_fd: int) -> None:
    while True:
        message = recv_frame(call_fd)
        if message is None:
            return
        args: Any = decode_value(message["args"])  # type: ignore[index]
        kwargs: Any = decode_value(message["kwargs"])  # type: ignore[index]
        try:
            result = function(*args, **kwargs)  # type: ignore[operator]
        except BaseException as exc:
            reply: dict[str, object] = {"raise": [type(exc).__name__, _message(exc)]}
        else:
            try:
                reply = {"ok": encode_value(result)}
            except UnencodableError as exc:
                reply = {"unencodable": str(exc)}
            except RecursionError:
                reply = {"unencodable": "value nested too deeply"}
        send_frame(reply_fd, reply)


def main() -> None:
    payload_path, call_fd, reply_fd = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    with open(payload_path, encoding="utf-8") as handle:
        payload = json.load(handle)
    harden(int(payload["memory_mb"]), int(payload["cpu_s"]), int(payload["file_bytes"]))
    function = _load(payload, reply_fd)
    if function is not None:
        _serve(function, call_fd, reply_fd)


if __name__ == "__main__":
    main()
