"""The answer process: loads the untrusted code, then serves calls from the test harness (stdlib only).

Sent into the sandbox as source text after ``_wire`` and ``_hardening``. Nothing this process says can
make a grade pass by itself: the harness decides, and it only sees plain data from here. Protocol (one
frame each way per step):

* first frame out: ``{"status": "ready"}``, ``{"status": "missing"}`` (entry point not defined) or
  ``{"status": "load_error", "type": ..., "message": ...}``;
* then, per call in: ``{"args": [...], "kwargs": {...}}`` -> out ``{"ok": value}``,
  ``{"raise": [type, message]}`` or ``{"unencodable": why}``.

Imports stay minimal (no ``json``, ``traceback``, ``typing``): this process starts once per grade.
"""

import builtins
import sys

try:  # the sandbox receives these modules' source text ahead of this one
    from benchmark.grading._hardening import harden
    from benchmark.grading._wire import (
        UnencodableError,
        decode_value,
        encode_value,
        recv_frame,
        send_encoded,
        send_frame,
    )
except ImportError:
    pass


def _message(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # a broken __str__ must not stop the reply
        text = "<unprintable>"
    if isinstance(exc, SyntaxError) and exc.lineno:
        text = f"{exc.msg} (line {exc.lineno})"
    return text[:400]


def _load(payload: dict, reply_fd: int) -> object:  # type: ignore[type-arg]
    namespace: dict = {"__name__": "__m3bench_answer__", "__builtins__": builtins}  # type: ignore[type-arg]
    entry_point = payload["entry_point"]
    try:
        exec(compile(payload["prelude"], "<problem>", "exec"), namespace)  # noqa: S102
    except BaseException as exc:
        send_frame(reply_fd, {"status": "load_error", "type": "PreludeError", "message": _message(exc)})
        return None
    stub = namespace.get(entry_point)
    try:
        exec(compile(payload["code"], "<answer>", "exec"), namespace)  # noqa: S102
    except BaseException as exc:
        message = f"{type(exc).__name__}: {_message(exc)}"
        send_frame(reply_fd, {"status": "load_error", "type": type(exc).__name__, "message": message})
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
        args, kwargs = message["args"], message["kwargs"]  # type: ignore[index]
        try:
            result = function(*args, **kwargs)  # type: ignore[operator]
        except BaseException as exc:
            body = encode_value({"raise": [type(exc).__name__, _message(exc)]})
        else:
            try:
                body = encode_value({"ok": result})
            except UnencodableError as exc:
                body = encode_value({"unencodable": str(exc)})
            except RecursionError:
                body = encode_value({"unencodable": "value nested too deeply"})
        send_encoded(reply_fd, body)


def main() -> None:
    payload_path, call_fd, reply_fd = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    with open(payload_path, "rb") as handle:
        payload = decode_value(handle.read())
    harden(payload["memory_mb"], payload["cpu_s"], payload["file_bytes"], payload["seccomp"])  # type: ignore[index]
    function = _load(payload, reply_fd)  # type: ignore[arg-type]
    if function is not None:
        _serve(function, call_fd, reply_fd)


if __name__ == "__main__":
    main()
