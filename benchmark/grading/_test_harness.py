"""The test harness process: runs the task's trusted tests against a proxy of the answer (stdlib only).

Sent into the sandbox as source text after ``_wire`` and ``_hardening``. The answer runs in another
sandboxed process; the tests here call it through the proxy, which ships arguments out and plain data
back. The verdict is written to the result pipe only by this process, with the nonce it read from its
stdin, after the tests returned: an answer that exits early, patches ``assert`` or the check function, or
returns a cheating object cannot produce a pass from the other side of the pipe. Imports stay minimal
(no ``json``, ``traceback``, ``typing``): this process starts once per grade.
"""

import builtins
import os
import sys

try:  # the sandbox receives these modules' source text ahead of this one
    from benchmark.grading._hardening import harden
    from benchmark.grading._wire import (
        UnencodableError,
        WireError,
        decode_value,
        encode_value,
        recv_frame,
        send_encoded,
    )
except ImportError:
    pass


class AnswerDied(BaseException):
    """The answer process went away; BaseException so test code cannot swallow it."""


class HarnessFault(BaseException):
    """A protocol error or an argument the harness cannot ship; the grade is an error."""


class AnswerOutOfMemory(BaseException):
    """The answer hit its memory limit during a call."""


class AnswerRaisedError(Exception):
    """The answer raised an exception that is not a builtin exception type."""


def _make_proxy(entry_point: str, call_fd: int, reply_fd: int) -> object:
    def proxy(*args: object, **kwargs: object) -> object:
        try:
            body = encode_value({"args": list(args), "kwargs": kwargs})
        except UnencodableError as exc:
            raise HarnessFault(f"the tests pass an argument that cannot be shipped: {exc}") from None
        try:
            send_encoded(call_fd, body)
        except OSError:
            raise AnswerDied(f"before a call to {entry_point}()") from None
        try:
            reply = recv_frame(reply_fd)
        except WireError as exc:
            raise HarnessFault(f"malformed reply from the answer process: {exc}") from None
        if reply is None:
            raise AnswerDied(f"during a call to {entry_point}()")
        if type(reply) is not dict or len(reply) != 1:
            raise HarnessFault("malformed reply from the answer process")
        ((kind, body),) = reply.items()
        if kind == "ok":
            return body
        if kind == "unencodable":
            raise TypeError(f"{entry_point} returned something that is not plain data ({str(body)[:200]})")
        if kind == "raise":
            if type(body) is not list or len(body) != 2 or not all(type(part) is str for part in body):
                raise HarnessFault("malformed exception reply")
            error = _raise_reply(body[0][:80], body[1][:400])
            error.m3bench_from_answer = True  # type: ignore[attr-defined]
            raise error
        raise HarnessFault(f"unknown reply kind {kind!r}")

    proxy.__name__ = entry_point
    proxy.__qualname__ = entry_point
    return proxy


def _raise_reply(name: str, message: str) -> BaseException:
    if name == "MemoryError":
        return AnswerOutOfMemory(message)
    found = getattr(builtins, name, None)
    if isinstance(found, type) and issubclass(found, Exception) and found.__module__ == "builtins":
        try:
            return found(message)
        except Exception:
            return AnswerRaisedError(f"{name}: {message}")
    return AnswerRaisedError(f"{name}: {message}")


def _failure_detail(exc: BaseException, tests: str) -> str:
    lines = tests.splitlines()
    where = ""
    frame = exc.__traceback__
    while frame is not None:  # the innermost line of the tests themselves
        if frame.tb_frame.f_code.co_filename == "<tests>" and 0 < frame.tb_lineno <= len(lines):
            where = f" at test line {frame.tb_lineno}: {lines[frame.tb_lineno - 1].strip()[:200]}"
        frame = frame.tb_next
    text = str(exc).strip()
    if getattr(exc, "m3bench_from_answer", False):
        return f"the answer raised {text[:300] if isinstance(exc, AnswerRaisedError) else _typed(exc)}{where}"
    return _typed(exc) + where


def _typed(exc: BaseException) -> str:
    text = str(exc).strip()
    return type(exc).__name__ + (f": {text[:300]}" if text else "")


def _run_tests(payload: dict, call_fd: int, reply_fd: int) -> tuple[str, str]:  # type: ignore[type-arg]
    namespace: dict[str, object] = {"__name__": "__main__", "__builtins__": builtins}
    entry_point = str(payload["entry_point"])
    tests = str(payload["tests"])
    try:
        exec(compile(str(payload["prelude"]), "<problem>", "exec"), namespace)  # noqa: S102
    except BaseException as exc:
        return "error", f"the problem's own code does not run: {type(exc).__name__}: {exc}"[:500]
    try:
        status = recv_frame(reply_fd)
    except WireError as exc:
        return "error", f"malformed first message from the answer process: {exc}"
    if status is None:
        return "error", "died: while loading the answer"
    if type(status) is not dict:
        return "error", "malformed first message from the answer process"
    if status.get("status") == "missing":
        return "fail", f"the answer does not define {entry_point}()"
    if status.get("status") == "load_error":
        kind, message = str(status.get("type"))[:80], str(status.get("message"))[:400]
        if kind == "MemoryError":
            return "error", f"memory limit reached while loading the answer: {message}"
        return "error", f"the answer does not load: {message}"
    if status.get("status") != "ready":
        return "error", "malformed first message from the answer process"
    namespace[entry_point] = _make_proxy(entry_point, call_fd, reply_fd)
    try:
        exec(compile(tests, "<tests>", "exec"), namespace)  # noqa: S102
    except AnswerDied as exc:
        return "error", f"died: {exc}"
    except AnswerOutOfMemory as exc:
        return "error", f"memory limit reached in {entry_point}(): {str(exc)[:300]}"
    except HarnessFault as exc:
        return "error", str(exc)
    except SystemExit as exc:
        if exc.code in (None, 0):
            return "pass", "tests exited with status 0"
        return "fail", f"tests exited with status {exc.code!r}"
    except MemoryError:
        return "error", "memory limit reached in the tests"
    except AssertionError as exc:
        return "fail", "assertion failed" + _failure_detail(exc, tests).removeprefix("AssertionError")
    except BaseException as exc:
        return "fail", _failure_detail(exc, tests)
    return "pass", "all tests passed"


def main() -> None:
    payload_path, call_fd, reply_fd, result_fd = sys.argv[1], *map(int, sys.argv[2:5])
    nonce = sys.stdin.readline().strip()
    with open(payload_path, "rb") as handle:
        payload = decode_value(handle.read())
    harden(payload["memory_mb"], payload["cpu_s"], payload["file_bytes"], payload["seccomp"])  # type: ignore[index]
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 5000))
    verdict, detail = _run_tests(payload, call_fd, reply_fd)  # type: ignore[arg-type]
    os.write(result_fd, encode_value({"nonce": nonce, "verdict": verdict, "detail": detail}))
    os.close(result_fd)


if __name__ == "__main__":
    main()
