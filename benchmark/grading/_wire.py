"""Plain-data wire format between the grader, the test harness and the answer process (stdlib only).

Runs inside the sandbox: the runner scripts are sent as source text, this module's source first, so it
imports only ``os`` and ``struct`` (cheap: a runner starts twice per grade, and ``json`` alone would
add ~10 ms of CPU to each start).

Frames are a 4-byte big-endian length and one value. A value is a tag byte and a body:
``N``/``T``/``F`` (None, True, False), ``i`` (decimal text), ``f`` (IEEE double), ``c`` (two doubles),
``s`` (UTF-8, surrogates passed), ``b`` (bytes), ``l``/``t``/``S``/``z`` (list, tuple, set, frozenset:
count then items), ``d`` (dict: count then key, value pairs). Whatever bytes the untrusted answer process
sends, the decoder yields only these builtins, with every length checked against what is left, so an
object with an always-true ``__eq__`` cannot cross the boundary.
"""

import os
import struct

MAX_FRAME_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 200
_U32 = struct.Struct(">I")
_F64 = struct.Struct(">d")
_C128 = struct.Struct(">dd")
_CONTAINERS = {list: b"l", tuple: b"t", set: b"S", frozenset: b"z"}


class WireError(Exception):
    """A frame or value that does not follow the format."""


class UnencodableError(Exception):
    """A value that is not plain data (a generator, a custom class, ...)."""


def _encode(value: object, out: list[bytes], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise UnencodableError("value nested too deeply")
    if value is None:
        out.append(b"N")
    elif value is True or value is False:
        out.append(b"T" if value else b"F")
    elif isinstance(value, str):
        data = str.__str__(value).encode("utf-8", "surrogatepass")
        out += [b"s", _U32.pack(len(data)), data]
    elif isinstance(value, int):
        try:
            digits = int.__repr__(value).encode("ascii")
        except ValueError:
            raise UnencodableError("integer too large to send") from None
        out += [b"i", _U32.pack(len(digits)), digits]
    elif isinstance(value, float):
        out += [b"f", _F64.pack(float(value))]
    elif isinstance(value, complex):
        out += [b"c", _C128.pack(complex(value).real, complex(value).imag)]
    elif isinstance(value, bytes | bytearray):
        out += [b"b", _U32.pack(len(value)), bytes(value)]
    elif isinstance(value, dict):
        out += [b"d", _U32.pack(len(value))]
        for key, item in value.items():
            _encode(key, out, depth + 1)
            _encode(item, out, depth + 1)
    else:
        for kind, tag in _CONTAINERS.items():
            if isinstance(value, kind):
                items = list(value)  # type: ignore[call-overload]
                out += [tag, _U32.pack(len(items))]
                for item in items:
                    _encode(item, out, depth + 1)
                return
        raise UnencodableError(f"a value of type {type(value).__name__} is not plain data")


def encode_value(value: object) -> bytes:
    out: list[bytes] = []
    _encode(value, out, 0)
    return b"".join(out)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.position = data, 0

    def take(self, size: int) -> bytes:
        end = self.position + size
        if size < 0 or end > len(self.data):
            raise WireError("truncated value")
        chunk = self.data[self.position : end]
        self.position = end
        return chunk

    def length(self) -> int:
        size = int(_U32.unpack(self.take(4))[0])
        if size > len(self.data) - self.position:  # every item takes at least one byte
            raise WireError("length larger than the frame")
        return size

    def value(self, depth: int = 0) -> object:
        if depth > MAX_DEPTH:
            raise WireError("value nested too deeply")
        tag = self.take(1)
        if tag in (b"N", b"T", b"F"):
            return None if tag == b"N" else tag == b"T"
        if tag == b"f":
            return _F64.unpack(self.take(8))[0]
        if tag == b"c":
            real, imag = _C128.unpack(self.take(16))
            return complex(real, imag)
        if tag in (b"i", b"s", b"b"):
            body = self.take(self.length())
            try:
                if tag == b"i":
                    return int(body.decode("ascii"))
                return body.decode("utf-8", "surrogatepass") if tag == b"s" else body
            except (ValueError, UnicodeDecodeError):
                raise WireError("malformed scalar") from None
        if tag not in (b"l", b"t", b"S", b"z", b"d"):
            raise WireError(f"unknown tag {tag!r}")
        count = self.length()
        try:
            if tag == b"d":
                return {self.value(depth + 1): self.value(depth + 1) for _ in range(count)}
            items = [self.value(depth + 1) for _ in range(count)]
            return {b"l": list, b"t": tuple, b"S": set, b"z": frozenset}[tag](items)
        except TypeError:
            raise WireError("unhashable set item or dict key") from None


def decode_value(data: bytes) -> object:
    reader = _Reader(data)
    value = reader.value()
    if reader.position != len(data):
        raise WireError("trailing bytes after the value")
    return value


def send_frame(fd: int, value: object) -> None:
    send_encoded(fd, encode_value(value))


def send_encoded(fd: int, body: bytes) -> None:
    view = memoryview(_U32.pack(len(body)) + body)
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
    """One decoded value, or ``None`` when the other side closed its end (messages are never None)."""
    header = _read_exact(fd, _U32.size)
    if header is None:
        return None
    (size,) = _U32.unpack(header)
    if size > limit:
        raise WireError(f"frame of {size} bytes exceeds the {limit}-byte limit")
    body = _read_exact(fd, size)
    if body is None:
        return None
    return decode_value(body)
