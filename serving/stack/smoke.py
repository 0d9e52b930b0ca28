"""One streaming chat request with an image, read as raw SSE: what ``serve up`` sends to every model
once it is ready (so the first measured request does not pay the engine's warm-up), and what the
serving tests use to check an endpoint. Standard library only."""

from __future__ import annotations

import base64
import http.client
import io
import json
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

SMOKE_TEXT = "Describe the image in one short sentence."


def image_data_url(width: int = 224, height: int = 224) -> str:
    """A small PNG with a shape and some text, as a base64 data URL (an OpenAI ``image_url``)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), (240, 240, 235))
    draw = ImageDraw.Draw(image)
    draw.rectangle((16, 16, width - 16, height - 16), outline=(30, 30, 30), width=3)
    draw.ellipse((width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=(200, 40, 40))
    draw.text((24, height - 40), "def add(a, b)", fill=(0, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@dataclass
class StreamResult:
    status: int | None = None
    chunks: int = 0  # SSE data events with content
    content: str = ""
    usage: dict[str, Any] | None = None
    done: bool = False  # the stream ended with `data: [DONE]`
    error: str | None = None
    ttft_s: float | None = None  # first content chunk, from the send
    e2e_s: float = 0.0
    events: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.done and self.error is None and self.usage is not None


def chat_body(model: str, image_url: str | None, max_tokens: int, text: str = SMOKE_TEXT) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if image_url:
        content.append({"type": "image_url", "image_url": {"url": image_url}})
    content.append({"type": "text", "text": text})
    return {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def stream_chat(endpoint: str, body: dict[str, Any], timeout_s: float = 120.0) -> StreamResult:
    """POST ``<endpoint>/v1/chat/completions`` (the endpoint may carry a path: a model's route prefix)
    and read the SSE stream; errors are returned, never raised."""
    url = urllib.parse.urlsplit(endpoint)
    result = StreamResult()
    payload = json.dumps(body).encode()
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=timeout_s)
    start = time.perf_counter()
    try:
        path = url.path.rstrip("/") + "/v1/chat/completions"  # a model's own route prefix, if any
        connection.request("POST", path, payload, {"Content-Type": "application/json"})
        response = connection.getresponse()
        result.status = response.status
        if response.status != 200:
            result.error = f"HTTP {response.status}: {response.read()[:300]!r}"
            return result
        for raw in response:
            _event(result, raw.decode("utf-8", "replace").strip(), start)
    except (OSError, http.client.HTTPException) as e:
        result.error = f"{type(e).__name__}: {e}"
    finally:
        result.e2e_s = time.perf_counter() - start
        connection.close()
    if result.error is None and not result.done:
        result.error = "stream ended without [DONE]"
    return result


def _event(result: StreamResult, line: str, start: float) -> None:
    if not line.startswith("data:"):
        return
    data = line.removeprefix("data:").strip()
    result.events.append(data)
    if data == "[DONE]":
        result.done = True
        return
    chunk = json.loads(data)
    if "error" in chunk:
        result.error = str(chunk["error"])[:300]
    if chunk.get("usage"):
        result.usage = chunk["usage"]
    for choice in chunk.get("choices") or []:
        text = (choice.get("delta") or {}).get("content") or ""
        if text:
            if result.ttft_s is None:
                result.ttft_s = time.perf_counter() - start
            result.chunks += 1
            result.content += text
