"""Plain-data wire format between the test harness and the answer process (stdlib only).

Runs inside the sandbox: the runner scripts are sent as source text, this module's source first, so it
must import nothing outside the standard library and nothing from ``loadgen``.

Frames are a 4-byte big-endian length and a UTF-8 JSON body. Values are tagged so that what the harness
decodes is always a plain builtin (``None, bool, int, float, str, bytes, complex, list, tuple, dict, set,
frozenset``): whatever bytes the untrusted answer process sends, the tests compare plain data, so an
object with an always-true ``__eq__`` cannot cross the boundary.
"""

import base64
import json
import os
import struct

MAX_FRAME_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 200
_HEADER = struct.Struct(">I")


class WireError(Exception):
    """A frame or value that does not follow the format."""


class UnencodableError(Exception):
    """A value that is not plain data (a generator, a custom class, ...)."""


def encode_value(value: object, depth: int = 0) -> object:
    """Turn a plain-data value into its JSON-ready tagged form."""
    if depth > MAX_DEPTH:
        raise UnencodableError("value nested too deeply")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        try:
            return {"i": int.__repr__(value)}
        except ValueError:
            raise UnencodableError("integer too large to send") from None
    if isinstance(value, float):
        return {"f": float.__repr__(value)}
    if isinstance(value, complex):
        return {"c": [complex(value).real.hex(), complex(value).imag.hex()]}
    if isinstance(value, bytes | bytearray):
        return {"b": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, list):
        return {"l": [encode_value(v, depth + 1) for v in value]}
    if isinstance(value, tuple):
        return {"t": [encode_value(v, depth + 1) for v in value]}
    if isinstance(value, dict):
        return {"d": [[encode_value(k, depth + 1), encode_value(v, depth + 1)] for k, v in value.items()]}
    if isinstance(value, frozenset):
        return {"z": [encode_value(v, depth + 1) for v in value]}
    if isinstance(value, set):
        return {"s": [encode_value(v, depth + 1) for v in value]}
    raise UnencodableError(f"a value of type {type(value).__name__} is not plain data")


def decode_value(node: object, depth: int = 0) -> object:
    """Rebuild a plain builtin from its tagged form; anything unexpected raises ``WireError``."""
    if depth > MAX_DEPTH:
        raise WireError("value nested too deeply")
    if node is None or type(node) is bool or type(node) is str:
        return node
    if type(node) is not dict or len(node) != 1:
        raise WireError("malformed value")
    ((tag, body),) = node.items()
    try:
        if tag == "i" and type(body) is str:
            return int(body)
        if tag == "f" and type(body) is str:
            return float(body)
        if tag == "c" and type(body) is list and len(body) == 2:
            return complex(float.fromhex(body[0]), float.fromhex(body[1]))
        if tag == "b" and type(body) is str:
            return base64.b64decode(body.encode("ascii"), validate=True)
        if type(body) is not list:
            raise WireError("malformed container")
        if tag == "l":
            return [decode_value(v, depth + 1) for v in body]
        if tag == "t":
            return tuple(decode_value(v, depth + 1) for v in body)
        if tag == "s":
            return {decode_value(v, depth + 1) for v in body}
        if tag == "z":
            return frozenset(decode_value(v, depth + 1) for v in body)
        if tag == "d":
            out = {}
            for pair in body:
                if type(pair) is not list or len(pair) != 2:
                    raise WireError("malformed dict item")
                out[decode_value(pair[0], depth + 1)] = decode_value(pair[1], depth + 1)
            return out
    except (ValueError, TypeError, OverflowError, AttributeError) as exc:
        raise WireError(f"malformed value: {type(exc).__name__}") from None
    raise WireError(f"unknown tag {tag!r}")


def send_frame(fd: int, message: object) -> None:
    body = json.dumps(message, separators=(",", ":"), allow_nan=False).encode("utf-8")
    data = _HEADER.pack(len(body)) + body
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_exact(fd: int, size: int) -> bytes | None:
    chunks = []
    remaining = size
    while remaining:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def recv_frame(fd: int, limit: int = MAX_FRAME_BYTES) -> object:
    """One message, or ``None`` when the other side closed its end."""
    header = _read_exact(fd, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if size > limit:
        raise WireError(f"frame of {size} bytes exceeds the {limit}-byte limit")
    body = _read_exact(fd, size)
    if body is None:
        return None
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise WireError("frame is not valid JSON") from None
