"""After a reply has ended: undo chunked framing, split SSE events, read the OpenAI chunks.

Each content event gets the arrival time of the read that carried its last byte (see
``loadgen.http_stream``). Usage comes from the server's ``usage`` chunk only; chunks are never counted
as tokens. A reply that is not an SSE stream, or whose data lines are not JSON, is ``bad_stream``.
"""

from __future__ import annotations

import bisect
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

from loadgen.http_stream import RawReply
from loadgen.records import Status


@dataclass
class ParsedReply:
    status: Status
    error: str = ""
    content_ns: list[int] = field(default_factory=list)  # arrival of each content event
    content_user_ns: list[int] = field(default_factory=list)  # user-space time of the same reads
    text: str = ""
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None
    coalesced_reads: int = 0  # reads that carried more than one content event
    cause: str | None = None  # a known cause of an error (classify_error)


def dechunk(body: bytes | bytearray) -> tuple[bytes, list[tuple[int, int]]]:
    """(payload, [(payload offset, raw offset)] at each chunk start) of a chunked body."""
    data = bytes(body)
    find = data.find
    pieces: list[bytes] = []
    marks: list[tuple[int, int]] = []
    position = 0
    produced = 0
    size_total = len(data)
    while position < size_total:
        line_end = find(b"\r\n", position)
        if line_end < 0:
            break
        size = int(data[position:line_end].split(b";", 1)[0], 16)
        if size == 0:
            break
        start = line_end + 2
        marks.append((produced, start))
        pieces.append(data[start : start + size])
        produced += size
        position = start + size + 2
    return b"".join(pieces), marks


def _events(payload: bytes) -> list[tuple[int, str]]:
    """(payload offset of the blank line ending it, joined data) for every event with data."""
    if b"\r" in payload:
        return _events_general(payload)
    # Fast path (LF only): split on blank lines; an event of one ``data:`` line is the common case.
    events: list[tuple[int, str]] = []
    position = 0
    blocks = payload.split(b"\n\n")
    for block in blocks[:-1]:  # the last piece is unterminated (or empty)
        end = position + len(block) + 1  # offset of the blank line's newline
        position = end + 1
        if block.startswith(b"data:") and b"\n" not in block:
            value = block[5:]
            events.append((end, (value[1:] if value.startswith(b" ") else value).decode("utf-8", "replace")))
        elif block:
            events += [(end, data) for _, data in _events_general(block + b"\n\n")]
    return events


def _events_general(payload: bytes) -> list[tuple[int, str]]:
    """Any SSE framing (CRLF, CR, several data lines, comments)."""
    events: list[tuple[int, str]] = []
    data: list[str] = []
    position = 0
    size = len(payload)
    while position < size:
        end = payload.find(b"\n", position)
        if end < 0:
            break  # an unterminated last line is not an event
        line = payload[position:end]
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            if data:
                events.append((end, "\n".join(data)))
                data = []
        elif line.startswith(b"data:"):
            value = line[5:]
            data.append((value[1:] if value.startswith(b" ") else value).decode("utf-8", "replace"))
        position = end + 1
    return events


def _load_all(datas: list[str]) -> list[Any] | tuple[int, str]:
    """All data payloads as JSON, or (index, message) of the first that is not JSON."""
    try:
        loaded = json.loads("[" + ",".join(datas) + "]")
        if isinstance(loaded, list) and len(loaded) == len(datas):
            return loaded
    except ValueError:
        pass
    out: list[Any] = []
    for index, data in enumerate(datas):
        try:
            out.append(json.loads(data))
        except json.JSONDecodeError as exc:
            return index, f"SSE event {index} is not JSON ({exc.msg}): {data[:80]!r}"
    return out


ERROR_HEAD, ERROR_TAIL = 1000, 1500  # characters kept of a long error: its start and its last lines

# Known causes, tried in order on the whole error text (a traceback names the exception at its end).
_CAUSES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "engine_dead",
        (
            "EngineDeadError",
            "EngineCore encountered an issue",
            "Engine loop is not running",
            "engine is dead",
        ),
    ),
    ("out_of_memory", ("OutOfMemoryError", "out of memory", "MemoryError", "Cannot allocate memory")),
    ("bad_request", ("BadRequestError", "maximum context length", "RequestValidationError")),
    ("not_found", ("NotFoundError", "does not exist")),
)
_CAUSE_BY_STATUS = {400: "bad_request", 413: "bad_request", 422: "bad_request", 404: "not_found"}


def clip_error(text: str, head: int = ERROR_HEAD, tail: int = ERROR_TAIL) -> str:
    """The start and the end of a long error; the end of a traceback names the exception."""
    if len(text) <= head + tail:
        return text
    return f"{text[:head]} [... {len(text) - head - tail} characters cut ...] {text[-tail:]}"


def classify_error(text: str, http_status: int | None = None) -> str | None:
    """The known cause an error names (engine_dead, out_of_memory, bad_request, not_found), or None."""
    for cause, needles in _CAUSES:
        if any(needle in text for needle in needles):
            return cause
    return _CAUSE_BY_STATUS.get(http_status or 0)


def _error_text(reply: RawReply) -> str:
    body = bytes(reply.body)
    if "chunked" in reply.headers.get("transfer-encoding", ""):
        with contextlib.suppress(ValueError):
            body = dechunk(body)[0]
    try:
        obj = json.loads(body)
        if isinstance(obj, dict):
            detail = obj.get("error", obj.get("detail", obj.get("message")))
            if isinstance(detail, dict):
                detail = detail.get("message", detail)
            return f"HTTP {reply.status}: {detail}"
    except ValueError:
        pass
    return f"HTTP {reply.status}: {body.decode('utf-8', 'replace')}"


def parse_reply(reply: RawReply, chat: bool = True) -> ParsedReply:
    """Classify and read one exchange. Partial streams keep whatever tokens did arrive; an error keeps
    its head and tail (``clip_error``) and its known cause (``classify_error``)."""
    parsed = _parse(reply, chat)
    if parsed.status != "ok":
        parsed.cause = classify_error(parsed.error, reply.status)
        parsed.error = clip_error(parsed.error)
    return parsed


def _parse(reply: RawReply, chat: bool) -> ParsedReply:
    if reply.error_kind == "connect":
        return ParsedReply("disconnect", reply.error)
    if reply.status is not None and reply.status != 200:
        return ParsedReply("http_error", _error_text(reply) if reply.complete else f"HTTP {reply.status}")
    content_type = reply.headers.get("content-type", "")
    if reply.status == 200 and not content_type.startswith("text/event-stream"):
        return ParsedReply(
            "bad_stream", f"reply is {content_type or 'untyped'}, not an SSE stream (text/event-stream)"
        )
    parsed = _read_stream(reply, chat)
    if reply.error_kind == "timeout":
        parsed.status, parsed.error = "timeout", reply.error
    elif reply.error_kind in ("disconnect", "bad_reply"):
        parsed.status = "disconnect" if reply.error_kind == "disconnect" else "bad_stream"
        parsed.error = reply.error
    return parsed


def _read_stream(reply: RawReply, chat: bool) -> ParsedReply:
    parsed = ParsedReply("ok")
    body = reply.body
    try:
        if "chunked" in reply.headers.get("transfer-encoding", ""):
            payload, marks = dechunk(body)
        else:
            payload, marks = bytes(body), [(0, 0)]
    except ValueError as exc:
        return ParsedReply("bad_stream", f"unreadable chunked framing: {exc}")
    events = _events(payload)
    done = bool(events) and events[-1][1].strip() == "[DONE]"
    datas = [data for _, data in events if data.strip() != "[DONE]"]
    loaded = _load_all(datas)
    if isinstance(loaded, tuple):
        parsed.status, parsed.error = "bad_stream", loaded[1]
        events = events[: loaded[0]]
        loaded = _load_all([data for _, data in events if data.strip() != "[DONE]"])
        assert isinstance(loaded, list)
    # map payload offsets back to raw body offsets, then to the read that delivered them
    payload_starts = [mark[0] for mark in marks]
    read_ends = [end for _, _, end in reply.reads]
    texts: list[str] = []
    last_read = -1
    in_this_read = 0
    objects = iter(loaded)
    for offset, data in events:
        if data.strip() == "[DONE]":
            continue
        obj = next(objects)
        if not isinstance(obj, dict):
            continue
        if "error" in obj and not obj.get("choices"):
            if parsed.status == "ok":
                parsed.status, parsed.error = "bad_stream", f"server error in stream: {obj['error']}"
            continue
        usage = obj.get("usage")
        if isinstance(usage, dict):
            parsed.prompt_tokens = usage.get("prompt_tokens", parsed.prompt_tokens)
            parsed.output_tokens = usage.get("completion_tokens", parsed.output_tokens)
        choices = obj.get("choices")
        if not choices or not isinstance(choices, list):
            continue
        choice = choices[0]
        if choice.get("finish_reason"):
            parsed.finish_reason = choice["finish_reason"]
        carried, text = _delta(choice, chat)
        if not carried:
            continue
        mark = marks[bisect.bisect_right(payload_starts, offset) - 1]
        raw_offset = mark[1] + (offset - mark[0])
        read = min(bisect.bisect_left(read_ends, raw_offset + 1), len(reply.reads) - 1)
        arrival, user_ns, _ = reply.reads[read] if reply.reads else (reply.end_ns, reply.end_ns, 0)
        if read == last_read:
            in_this_read += 1
            if in_this_read == 2:
                parsed.coalesced_reads += 1
        else:
            last_read, in_this_read = read, 1
        parsed.content_ns.append(arrival)
        parsed.content_user_ns.append(user_ns)
        texts.append(text)
    parsed.text = "".join(texts)
    if parsed.status == "ok" and reply.complete and not done and parsed.finish_reason is None:
        parsed.status, parsed.error = "bad_stream", "stream ended without a finish_reason or [DONE]"
    return parsed


def _delta(choice: dict[str, Any], chat: bool) -> tuple[bool, str]:
    """(whether the chunk carried generated text, the part that belongs to the answer).

    Reasoning text (``reasoning_content``/``reasoning``) counts as a token for timing but is not
    part of the answer that gets graded.
    """
    if not chat:
        text = choice.get("text")
        return (True, text) if isinstance(text, str) and text else (False, "")
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        return False, ""
    content = delta.get("content")
    if isinstance(content, str) and content:
        return True, content
    for key in ("reasoning_content", "reasoning"):
        value = delta.get(key)
        if isinstance(value, str) and value:
            return True, ""
    return False, ""
