"""Bytes the calibration server sends: HTTP heads, chunked SSE frames, OpenAI-shaped JSON.

Every frame of a stream is built once when the request arrives; sending a token is then a single
``socket.send`` of a prebuilt ``bytes`` object, which is what lets one core hold hundreds of streams.
The shapes follow vLLM's OpenAI server: the role chunk travels with the first token, a finish chunk,
then (with ``stream_options.include_usage``) a usage chunk with empty choices, then ``data: [DONE]``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
}


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def chunked(payload: bytes) -> bytes:
    """One HTTP/1.1 chunk (RFC 9112 section 7.1)."""
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def sse(obj: object) -> bytes:
    return b"data: " + _dumps(obj) + b"\n\n"


def response(status: int, body: bytes, content_type: str = "application/json", close: bool = False) -> bytes:
    head = (
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\ncontent-type: {content_type}\r\n"
        f"content-length: {len(body)}\r\n{'connection: close' if close else 'connection: keep-alive'}\r\n\r\n"
    )
    return head.encode() + body


def json_response(status: int, obj: object, close: bool = False) -> bytes:
    return response(status, _dumps(obj), close=close)


def error_response(status: int, message: str, kind: str, close: bool = False) -> bytes:
    return json_response(status, {"error": {"message": message, "type": kind, "code": status}}, close=close)


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n"
)
END_OF_BODY = b"0\r\n\r\n"


@dataclass(frozen=True)
class StreamFrames:
    """Prebuilt frames of one streamed response."""

    first: bytes  # role chunk (chat) and the first token, sent together at the TTFT deadline
    token: bytes  # every later token
    tail: bytes  # finish chunk, usage chunk (if asked), [DONE], end of the chunked body
    malformed: bytes  # what the ``malformed`` fault sends instead of the second token


def build_frames(
    *,
    chat: bool,
    request_id: str,
    model: str,
    token_text: str,
    output_tokens: int,
    prompt_tokens: int,
    include_usage: bool,
) -> StreamFrames:
    created = int(time.time())
    kind = "chat.completion.chunk" if chat else "text_completion"
    base: dict[str, Any] = {"id": request_id, "object": kind, "created": created, "model": model}

    def choice(delta_text: str | None, finish: str | None, role: bool = False) -> dict[str, Any]:
        if chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
            if delta_text is not None:
                delta["content"] = delta_text
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"index": 0, "text": delta_text or "", "logprobs": None, "finish_reason": finish}

    token = chunked(sse({**base, "choices": [choice(token_text, None)]}))
    first = token
    if chat:
        first = chunked(sse({**base, "choices": [choice(None, None, role=True)]})) + token
    tail = chunked(sse({**base, "choices": [choice(None if chat else "", "length")]}))
    if include_usage:
        usage = {
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens + output_tokens,
            "completion_tokens": output_tokens,
        }
        tail += chunked(sse({**base, "choices": [], "usage": usage}))
    tail += chunked(b"data: [DONE]\n\n") + END_OF_BODY
    malformed = chunked(b'data: {"choices": [{"delta": {"content": "unterminated\n\n')
    return StreamFrames(first=first, token=token, tail=tail, malformed=malformed)


def full_completion(
    *, chat: bool, request_id: str, model: str, text: str, output_tokens: int, prompt_tokens: int
) -> dict[str, Any]:
    """The non-streamed reply (also what the ``non_sse`` fault sends to a streaming request)."""
    usage = {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + output_tokens,
        "completion_tokens": output_tokens,
    }
    if chat:
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "length",
        }
        kind = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "finish_reason": "length"}
        kind = "text_completion"
    return {
        "id": request_id,
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": usage,
    }


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """A stand-in for a tokenizer: 4 characters of text per token and 64 tokens per image."""
    chars = 0
    images = 0
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        chars += len(prompt)
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "text":
                    chars += len(str(part.get("text", "")))
                elif isinstance(part, dict):
                    images += 1
    return max(1, chars // 4 + 64 * images)
