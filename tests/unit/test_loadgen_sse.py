"""Reading replies after the fact: chunked framing, SSE events, OpenAI chunks, arrival times."""

from __future__ import annotations

import json

from loadgen.calibration.protocol import build_frames, chunked
from loadgen.http_stream import RawReply
from loadgen.sse import dechunk, parse_reply

HEADERS = {"content-type": "text/event-stream; charset=utf-8", "transfer-encoding": "chunked"}


def _reply(
    reads: list[tuple[int, bytes]], headers: dict[str, str] | None = None, status: int = 200
) -> RawReply:
    reply = RawReply(
        sent_ns=1_000, status=status, headers=headers or dict(HEADERS), complete=True, kernel_stamps=True
    )
    for arrival, data in reads:
        reply.body += data
        reply.reads.append((arrival, arrival + 50, len(reply.body)))
    reply.end_ns = reads[-1][0] if reads else 1_000
    return reply


def _frames(tokens: int = 3, usage: bool = True):
    return build_frames(
        chat=True,
        request_id="r",
        model="m",
        token_text=" a",
        output_tokens=tokens,
        prompt_tokens=7,
        include_usage=usage,
    )


def test_dechunk_maps_payload_back_to_raw_offsets() -> None:
    body = chunked(b"hello") + chunked(b" world") + b"0\r\n\r\n"
    payload, marks = dechunk(body)
    assert payload == b"hello world"
    assert marks == [(0, 3), (5, 13)]


def test_each_token_gets_the_arrival_of_its_own_read() -> None:
    frames = _frames(3)
    reply = _reply(
        [(10_000, frames.first), (20_000, frames.token), (30_000, frames.token), (31_000, frames.tail)]
    )
    parsed = parse_reply(reply)
    assert parsed.status == "ok", parsed.error
    assert parsed.content_ns == [10_000, 20_000, 30_000]
    assert parsed.content_user_ns == [10_050, 20_050, 30_050]
    assert parsed.text == " a a a"
    assert (parsed.prompt_tokens, parsed.output_tokens, parsed.finish_reason) == (7, 3, "length")
    assert parsed.coalesced_reads == 0


def test_reads_that_carry_two_tokens_are_counted_as_coalesced() -> None:
    frames = _frames(3)
    reply = _reply([(10_000, frames.first + frames.token), (30_000, frames.token + frames.tail)])
    parsed = parse_reply(reply)
    assert parsed.content_ns == [10_000, 10_000, 30_000]
    assert parsed.coalesced_reads == 1


def test_a_frame_split_across_reads_belongs_to_the_read_that_completed_it() -> None:
    frames = _frames(2)
    cut = len(frames.token) // 2
    reply = _reply(
        [
            (10_000, frames.first),
            (20_000, frames.token[:cut]),
            (25_000, frames.token[cut:]),
            (26_000, frames.tail),
        ]
    )
    assert parse_reply(reply).content_ns == [10_000, 25_000]


def test_role_chunk_alone_is_not_a_token() -> None:
    role = b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
    token = (
        b'data: {"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    )
    reply = _reply([(5_000, chunked(role)), (9_000, chunked(token) + b"0\r\n\r\n")])
    parsed = parse_reply(reply)
    assert parsed.content_ns == [9_000]
    assert parsed.output_tokens is None  # no usage chunk: never guessed from chunks


def test_reasoning_tokens_time_the_stream_but_are_not_the_answer() -> None:
    events = [
        {"choices": [{"delta": {"reasoning_content": "think"}}]},
        {"choices": [{"delta": {"content": "42"}, "finish_reason": "stop"}]},
    ]
    body = b"".join(chunked(b"data: " + json.dumps(e).encode() + b"\n\n") for e in events)
    parsed = parse_reply(_reply([(1, body + chunked(b"data: [DONE]\n\n") + b"0\r\n\r\n")]))
    assert len(parsed.content_ns) == 2
    assert parsed.text == "42"


def test_crlf_event_separators() -> None:
    body = chunked(
        b'data: {"choices":[{"delta":{"content":"x"},"finish_reason":"stop"}]}\r\n\r\ndata: [DONE]\r\n\r\n'
    )
    parsed = parse_reply(_reply([(3, body + b"0\r\n\r\n")]))
    assert parsed.status == "ok"
    assert parsed.text == "x"


def test_malformed_json_is_bad_stream_and_keeps_earlier_tokens() -> None:
    frames = _frames(3)
    reply = _reply([(10_000, frames.first), (20_000, frames.malformed + frames.tail)])
    parsed = parse_reply(reply)
    assert parsed.status == "bad_stream"
    assert "not JSON" in parsed.error
    assert parsed.content_ns == [10_000]


def test_non_sse_reply_is_bad_stream() -> None:
    reply = _reply([(5, b'{"choices": []}')], headers={"content-type": "application/json"})
    parsed = parse_reply(reply)
    assert parsed.status == "bad_stream"
    assert "not an SSE stream" in parsed.error


def test_http_error_carries_the_server_message() -> None:
    body = b'{"error": {"message": "The model `x` does not exist.", "code": 404}}'
    parsed = parse_reply(_reply([(5, body)], headers={"content-type": "application/json"}, status=404))
    assert parsed.status == "http_error"
    assert parsed.error == "HTTP 404: The model `x` does not exist."


def test_error_event_inside_a_stream_is_bad_stream() -> None:
    body = chunked(b'data: {"error": {"message": "engine died"}}\n\n') + b"0\r\n\r\n"
    parsed = parse_reply(_reply([(5, body)]))
    assert parsed.status == "bad_stream"
    assert "engine died" in parsed.error


def test_stream_without_end_marker_is_bad_stream() -> None:
    body = chunked(b'data: {"choices":[{"delta":{"content":"x"}}]}\n\n') + b"0\r\n\r\n"
    assert parse_reply(_reply([(5, body)])).status == "bad_stream"


def test_transport_failures_keep_their_class() -> None:
    frames = _frames(3)
    partial = _reply([(10_000, frames.first)])
    partial.complete, partial.error_kind, partial.error = False, "disconnect", "closed mid-reply"
    parsed = parse_reply(partial)
    assert (parsed.status, parsed.content_ns) == ("disconnect", [10_000])
    late = _reply([(10_000, frames.first)])
    late.complete, late.error_kind, late.error = False, "timeout", "no complete reply within 1 s"
    assert parse_reply(late).status == "timeout"
    refused = RawReply(error_kind="connect", error="connect failed: refused")
    assert parse_reply(refused).status == "disconnect"


def test_text_completions_stream() -> None:
    frames = build_frames(
        chat=False,
        request_id="r",
        model="m",
        token_text="b",
        output_tokens=2,
        prompt_tokens=1,
        include_usage=True,
    )
    parsed = parse_reply(_reply([(1, frames.first), (2, frames.token), (3, frames.tail)]), chat=False)
    assert (parsed.status, parsed.text, parsed.content_ns) == ("ok", "bb", [1, 2])
