"""The timing client: one HTTP/1.1 request, its reply kept as raw bytes with arrival timestamps.

This is the hot path of the load generator, so it does almost nothing per read: ``recvmsg``, one
clock read, append, and a cheap check for the end of the chunked body. SSE and JSON are parsed only
after the reply has ended (``loadgen.sse``). Arrival times come from the kernel where it can give them:
``SO_TIMESTAMPNS`` stamps each TCP segment when it reaches the socket, so a read that the event loop
serves late still carries the time the bytes arrived (a read that drains several segments carries the
last one's time; ``coalesced`` counts reads that found more than one HTTP chunk). All times are
``perf_counter_ns``; kernel stamps (``CLOCK_REALTIME``) are moved onto that clock with an offset taken
at send time and checked at the end.

gevent-native: the socket is ``gevent.socket``, so thousands of exchanges share one OS thread.
"""

from __future__ import annotations

import contextlib
import socket as _stdsocket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import gevent
from gevent import socket as gsocket
from gevent import ssl as gssl

SO_TIMESTAMPNS = getattr(_stdsocket, "SO_TIMESTAMPNS", 35)  # Linux value; not exported by Python 3.11
_CMSG_SPACE = _stdsocket.CMSG_SPACE(16)
_READ_SIZE = 262_144
_perf = time.perf_counter_ns
_wall = time.time_ns
_unpack_ts = struct.Struct("qq").unpack_from

ErrorKind = Literal["connect", "timeout", "disconnect", "bad_reply"]


class ExchangeTimeoutError(Exception):
    """The whole exchange ran past its deadline."""


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str
    port: int
    base_path: str  # path prefix before /v1 (e.g. "" or "/serve"), without a trailing slash

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"endpoint must be an http(s)://host[:port] URL, got {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        base = parts.path.rstrip("/")
        return cls(parts.scheme, parts.hostname, port, base[:-3] if base.endswith("/v1") else base)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.authority}{self.base_path}"

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class RawReply:
    """One exchange as it happened; parsed later by ``loadgen.sse``."""

    sent_ns: int = 0
    end_ns: int = 0
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    # one entry per read: (arrival ns, user-space ns, body length after this read)
    reads: list[tuple[int, int, int]] = field(default_factory=list)
    kernel_stamps: bool = False
    complete: bool = False
    error_kind: ErrorKind | None = None
    error: str = ""
    reused_connection: bool = False
    connect_ns: int | None = None  # opening a new connection, just before sent_ns; None when one was reused


class Connection:
    """A keep-alive HTTP/1.1 connection with kernel receive timestamps switched on."""

    def __init__(self, endpoint: Endpoint, connect_timeout_s: float) -> None:
        sock = gsocket.create_connection((endpoint.host, endpoint.port), timeout=connect_timeout_s)
        sock.settimeout(None)  # the exchange deadline is a gevent.Timeout around the whole thing
        sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
        self.kernel_stamps = False
        if endpoint.scheme == "https":
            context = gssl.create_default_context()
            sock = context.wrap_socket(sock, server_hostname=endpoint.host)
        else:
            try:
                sock.setsockopt(_stdsocket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                self.kernel_stamps = True
            except OSError:
                self.kernel_stamps = False
        self.sock = sock
        self.used = 0
        self.open = True

    def close(self) -> None:
        self.open = False
        with contextlib.suppress(OSError):
            self.sock.close()


class ConnectionPool:
    """Idle keep-alive connections to one endpoint, per process."""

    def __init__(self, endpoint: Endpoint, connect_timeout_s: float = 10.0) -> None:
        self.endpoint = endpoint
        self.connect_timeout_s = connect_timeout_s
        self.idle: list[Connection] = []

    def take(self) -> Connection:
        while self.idle:
            conn = self.idle.pop()
            if conn.open:
                return conn
        return Connection(self.endpoint, self.connect_timeout_s)

    def give_back(self, conn: Connection) -> None:
        if conn.open:
            self.idle.append(conn)

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


def build_request(endpoint: Endpoint, path: str, body: bytes, extra_headers: str = "") -> bytes:
    """The request bytes, built before the send timestamp is taken."""
    head = (
        f"POST {endpoint.base_path}{path} HTTP/1.1\r\nhost: {endpoint.authority}\r\n"
        f"content-type: application/json\r\naccept: text/event-stream\r\ncontent-length: {len(body)}\r\n"
        f"{extra_headers}\r\n"
    )
    return head.encode("latin-1") + body


def exchange(pool: ConnectionPool, request: bytes, timeout_s: float) -> RawReply:
    """Send ``request`` and read the whole reply; never raises for network or protocol trouble."""
    reply = RawReply()
    timer = gevent.Timeout(timeout_s, ExchangeTimeoutError)
    timer.start()
    conn: Connection | None = None
    taken_ns = _perf()  # a stale kept-alive connection's failed try counts into the new one's connect_ns
    try:
        for attempt in (0, 1):
            try:
                conn = pool.take()
            except OSError as exc:
                reply.error_kind, reply.error = (
                    "connect",
                    f"connect to {pool.endpoint.authority} failed: {exc}",
                )
                reply.sent_ns = reply.end_ns = _perf()
                return reply
            reply.reused_connection = conn.used > 0
            if not reply.reused_connection:
                reply.connect_ns = _perf() - taken_ns
            _run(conn, request, reply)
            # A kept-alive connection the server closed while idle fails before any reply byte: retry once.
            stale = reply.error_kind == "disconnect" and reply.status is None and reply.reused_connection
            if not (stale and attempt == 0):
                break
            conn.close()
            reply = RawReply()
    except ExchangeTimeoutError:
        reply.error_kind = "timeout"
        reply.error = f"no complete reply within {timeout_s:g} s"
        reply.end_ns = _perf()
        if conn is not None:
            conn.close()
    finally:
        timer.close()
    if conn is not None:
        conn.used += 1
        if reply.complete and reply.error_kind is None and reply.headers.get("connection", "") != "close":
            pool.give_back(conn)
        else:
            conn.close()
    return reply


def _run(conn: Connection, request: bytes, reply: RawReply) -> None:
    sock = conn.sock
    kernel = conn.kernel_stamps
    reply.kernel_stamps = kernel
    read = _reader(sock, kernel)
    head = bytearray()
    body = reply.body
    reads = reply.reads
    offset = _wall() - _perf()  # CLOCK_REALTIME - perf_counter, for moving kernel stamps
    reply.sent_ns = _perf()
    try:
        sock.sendall(request)
        # ---- status line and headers
        framing = ""
        length = -1
        while True:
            data, ancillary, user_ns = read()
            if not data:
                reply.error_kind, reply.error = "disconnect", "connection closed before the reply head"
                reply.end_ns = user_ns
                return
            head += data
            end = head.find(b"\r\n\r\n")
            if end >= 0:
                _parse_head(reply, bytes(head[:end]))
                rest = head[end + 4 :]
                framing = "chunked" if "chunked" in reply.headers.get("transfer-encoding", "") else ""
                if not framing and "content-length" in reply.headers:
                    framing, length = "length", int(reply.headers["content-length"])
                if rest:
                    body += rest
                    reads.append((_arrival(ancillary, user_ns, offset), user_ns, len(body)))
                break
        # ---- body: one loop iteration per read, no parsing beyond chunk sizes
        scan = _ChunkScanner() if framing == "chunked" else None
        done = _body_done(scan, body, framing, length)
        while not done:
            data, ancillary, user_ns = read()
            if not data:
                if framing:
                    reply.error_kind = "disconnect"
                    reply.error = f"connection closed mid-reply after {len(body)} body bytes"
                    reply.end_ns = user_ns
                    return
                reply.complete = True  # close-delimited body
                break
            body += data
            reads.append((_arrival(ancillary, user_ns, offset), user_ns, len(body)))
            done = _body_done(scan, body, framing, length)
        reply.complete = True
        reply.end_ns = reads[-1][0] if reads else _perf()
        if kernel and abs((_wall() - _perf()) - offset) > 200_000:
            # The wall clock was stepped during the exchange: kernel stamps cannot be trusted.
            reply.reads[:] = [(user, user, size) for _, user, size in reads]
            reply.kernel_stamps = False
            reply.end_ns = reads[-1][1] if reads else reply.end_ns
    except OSError as exc:
        reply.error_kind, reply.error = "disconnect", f"{type(exc).__name__}: {exc}"
        reply.end_ns = _perf()
    except ValueError as exc:
        reply.error_kind, reply.error = "bad_reply", f"unreadable HTTP framing: {exc}"
        reply.end_ns = _perf()


_Read = tuple[bytes, list[tuple[int, int, bytes]], int]


def _reader(sock: Any, kernel_stamps: bool) -> Callable[[], _Read]:
    """One read of the socket: (bytes, ancillary data holding the kernel's arrival stamp when
    ``kernel_stamps``, perf_counter ns taken as soon as the read returned)."""
    if kernel_stamps:
        recvmsg = _waiting_recvmsg(sock)

        def read_stamped() -> _Read:
            data, ancillary, _, _ = recvmsg(_READ_SIZE, _CMSG_SPACE)
            return data, ancillary, _perf()

        return read_stamped
    recv = sock.recv

    def read() -> _Read:
        return recv(_READ_SIZE), [], _perf()

    return read


def _waiting_recvmsg(sock: Any) -> Any:
    """``recvmsg`` that waits for readability first, then reads once.

    gevent's own ``recvmsg`` tries the read first; on a stream that is read as soon as each chunk
    arrives that read fails (EAGAIN, an exception) once per chunk. Waiting first saves that syscall
    and exception on the hot path. Falls back to gevent's method if its internals differ.
    """
    raw = getattr(sock, "_sock", None)
    wait = getattr(sock, "_wait", None)
    event = getattr(sock, "_read_event", None)
    if raw is None or wait is None or event is None:
        return sock.recvmsg

    def recvmsg(size: int, ancillary_size: int) -> tuple[bytes, list[tuple[int, int, bytes]], int, Any]:
        while True:
            try:
                return raw.recvmsg(size, ancillary_size)  # type: ignore[no-any-return]
            except BlockingIOError:
                wait(event)

    first = True

    def recvmsg_waiting(
        size: int, ancillary_size: int
    ) -> tuple[bytes, list[tuple[int, int, bytes]], int, Any]:
        nonlocal first
        if first:
            first = False  # the first read may find data already there (the reply head)
            return recvmsg(size, ancillary_size)
        wait(event)
        return recvmsg(size, ancillary_size)

    return recvmsg_waiting


def _arrival(ancillary: list[tuple[int, int, bytes]], user_ns: int, offset: int) -> int:
    for level, kind, data in ancillary:
        if level == _stdsocket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            seconds, nanos = _unpack_ts(data)
            stamp = seconds * 1_000_000_000 + nanos - offset
            return stamp if stamp <= user_ns else user_ns
    return user_ns


def _parse_head(reply: RawReply, head: bytes) -> None:
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or not status[0].startswith("HTTP/"):
        raise ValueError(f"not an HTTP status line: {lines[0][:80]!r}")
    reply.status = int(status[1])
    for line in lines[1:]:
        name, _, value = line.partition(":")
        reply.headers[name.strip().lower()] = (
            value.strip().lower() if name.lower() in _LOWER else value.strip()
        )


_LOWER = {"transfer-encoding", "connection", "content-type"}


class _ChunkScanner:
    """Finds the end of a chunked body incrementally: only chunk-size lines are looked at."""

    __slots__ = ("next_line",)

    def __init__(self) -> None:
        self.next_line = 0  # body offset where the next chunk-size line starts

    def done(self, body: bytearray) -> bool:
        position = self.next_line
        size_total = len(body)
        while position < size_total:
            line_end = body.find(b"\r\n", position)
            if line_end < 0:
                return False
            line = body[position:line_end]
            size = int(line.split(b";", 1)[0] if b";" in line else line, 16)
            if size == 0:
                # last chunk: the body ends with an empty line after optional trailers
                return body.endswith(b"\r\n\r\n") and size_total >= line_end + 4
            position = line_end + 2 + size + 2
            self.next_line = position
        return False


def _body_done(scan: _ChunkScanner | None, body: bytearray, framing: str, length: int) -> bool:
    if scan is not None:
        return scan.done(body)
    if framing == "length":
        return len(body) >= length
    return False
