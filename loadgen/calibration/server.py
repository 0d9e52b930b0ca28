"""The calibration server: OpenAI-compatible streaming with programmed TTFT, ITL and length.

A dedicated single-threaded epoll loop, not asyncio: every token has an absolute deadline
(``receipt + TTFT + k * ITL``, never accumulated sleeps) kept in one heap; the loop sleeps in
``select`` on the epoll descriptor (microsecond timeouts, timer slack set to 1 ns) until shortly before
the next deadline and spins the last few tens of microseconds. A token send is one ``send`` of prebuilt
bytes. The server measures its own lateness (send time minus deadline) and reports it at
``GET /calibration/stats``, so a client's error can be told apart from the server's.

Run: ``python -m loadgen.calibration.server --port 8100 --ttft-ms 100 --itl-ms 10 --output-len 64``.
Faults for tests: ``--fault non_sse|malformed|http500`` and ``--die-after-s S`` (the process exits
abruptly S seconds after the first request, resetting every open stream) or ``--die-after-requests N``.
A knee for SLO searches: ``--capacity-tps C`` (one FIFO engine of C tokens/s; TTFT grows as a queue
above C / output_len requests/s).
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
import resource
import select
import signal
import socket
import sys
import time
from typing import Any

from loadgen.calibration import protocol
from loadgen.calibration.clock import (
    CMSG_SPACE,
    SO_TIMESTAMPNS,
    arrival_ns,
    raise_priority,
    reduce_timer_slack,
)
from loadgen.calibration.config import ServerConfig, parse_args
from loadgen.calibration.stats import ServerStats

SPIN_NS = 40_000
MAX_HEAD = 65_536
_now = time.perf_counter_ns


class _Conn:
    __slots__ = ("arrived_ns", "body_len", "close_after", "fd", "head", "inbuf", "out", "sock", "stream")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.inbuf = bytearray()
        self.out = bytearray()
        self.head: tuple[str, str, dict[str, str]] | None = None
        self.body_len = 0
        self.stream: _Stream | None = None
        self.close_after = False
        self.arrived_ns = 0  # kernel arrival of the last bytes read (perf_counter clock)


class _Stream:
    __slots__ = (
        "conn",
        "first_deadline",
        "first_sent_ns",
        "frames",
        "itl_ns",
        "received_ns",
        "request_id",
        "sent",
        "total",
    )

    def __init__(
        self, conn: _Conn, frames: protocol.StreamFrames, first_deadline: int, itl_ns: int, total: int
    ):
        self.conn = conn
        self.frames = frames
        self.first_deadline = first_deadline
        self.itl_ns = itl_ns
        self.total = total
        self.sent = 0
        self.request_id = ""
        self.received_ns = 0
        self.first_sent_ns = 0


class CalibrationServer:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.stats = ServerStats()
        self.listener = socket.create_server((config.host, config.port), backlog=4096, reuse_port=False)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.epoll = select.epoll()
        self.epoll.register(self.listener.fileno(), select.EPOLLIN)
        self.conns: dict[int, _Conn] = {}
        self.timers: list[tuple[int, int, _Stream]] = []
        self.seq = 0
        self.open_streams = 0
        self.started_wall = time.monotonic()
        self.die_at: int | None = None
        self.request_log = open(config.request_log, "a", encoding="utf-8") if config.request_log else None  # noqa: SIM115
        self.timing_log = open(config.timing_log, "a", encoding="utf-8") if config.timing_log else None  # noqa: SIM115
        self.priority = "default"
        self.frames_cache: dict[tuple[bool, str, int, int, bool], protocol.StreamFrames] = {}
        self.ttft_ns = int(config.ttft_ms * 1e6)
        self.engine_free_ns = 0  # --capacity-tps: when the FIFO engine is next free (perf_counter ns)
        self.itl_ns = int(config.itl_ms * 1e6)
        reduce_timer_slack()

    # ---------------------------------------------------------------- loop
    def serve_forever(self) -> None:
        epfd = self.epoll.fileno()
        while True:
            now = _now()
            if self.die_at is not None and now >= self.die_at:
                os._exit(3)
            timers = self.timers
            while timers and timers[0][0] <= now:
                _, _, stream = heapq.heappop(timers)
                self._fire(stream)
            if timers:
                wait_ns = timers[0][0] - _now() - SPIN_NS
                if wait_ns > 0:
                    select.select([epfd], [], [], wait_ns / 1e9)
            else:
                select.select([epfd], [], [], 0.5)
            for fd, mask in self.epoll.poll(0):
                self._on_event(fd, mask)

    def _on_event(self, fd: int, mask: int) -> None:
        if fd == self.listener.fileno():
            self._accept()
            return
        conn = self.conns.get(fd)
        if conn is None:
            return
        if mask & select.EPOLLOUT:
            self._flush(conn)
        if mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
            try:
                data, ancillary, _, _ = conn.sock.recvmsg(262_144, CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._close(conn)
                return
            if not data:
                self._close(conn)
                return
            conn.arrived_ns = arrival_ns(ancillary)
            conn.inbuf += data
            self._parse(conn)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            conn = _Conn(sock)
            self.conns[conn.fd] = conn
            self.epoll.register(conn.fd, select.EPOLLIN)

    # ---------------------------------------------------------------- output
    def _send(self, conn: _Conn, data: bytes) -> None:
        if conn.out:
            conn.out += data
            return
        try:
            sent = conn.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._close(conn)
            return
        if sent < len(data):
            conn.out += data[sent:]
            self.epoll.modify(conn.fd, select.EPOLLIN | select.EPOLLOUT)

    def _flush(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        del conn.out[:sent]
        if not conn.out:
            self.epoll.modify(conn.fd, select.EPOLLIN)
            if conn.close_after:
                self._close(conn)

    def _close(self, conn: _Conn) -> None:
        if self.conns.pop(conn.fd, None) is None:
            return
        if conn.stream is not None:
            conn.stream = None
            self.open_streams -= 1
        with contextlib.suppress(OSError):
            self.epoll.unregister(conn.fd)
        conn.sock.close()

    def _reply(self, conn: _Conn, data: bytes) -> None:
        self._send(conn, data)
        if conn.close_after and not conn.out and conn.fd in self.conns:
            self._close(conn)

    # ---------------------------------------------------------------- timers
    def _schedule(self, deadline: int, stream: _Stream) -> None:
        self.seq += 1
        heapq.heappush(self.timers, (deadline, self.seq, stream))

    def _fire(self, stream: _Stream) -> None:
        conn = stream.conn
        if conn.stream is not stream:
            return  # the client went away
        frames = stream.frames
        if stream.total == 0:  # a non-streamed reply, due all at once
            self._send(conn, frames.tail)
            self._end_stream(conn)
            return
        late = _now() - (stream.first_deadline + stream.sent * stream.itl_ns)
        self.stats.chunks_sent += 1
        if stream.sent == 0:
            self.stats.first_token.add(late)
            stream.first_sent_ns = _now()
            self._send(conn, frames.first)
        elif self.config.fault == "malformed":
            self.stats.later_tokens.add(late)
            self._send(conn, frames.malformed + frames.tail)
            self._end_stream(conn)
            return
        else:
            self.stats.later_tokens.add(late)
            self._send(conn, frames.token)
        stream.sent += 1
        if stream.sent >= stream.total:
            self._send(conn, frames.tail)
            self._end_stream(conn)
            return
        self._schedule(stream.first_deadline + stream.sent * stream.itl_ns, stream)

    def _end_stream(self, conn: _Conn) -> None:
        stream = conn.stream
        if stream is None:
            return
        if self.timing_log is not None and stream.total:
            self.timing_log.write(
                f"{stream.request_id} {stream.received_ns} {stream.first_sent_ns} {_now()}\n"
            )
            self.timing_log.flush()
        conn.stream = None
        self.open_streams -= 1
        self.stats.streams_done += 1
        if conn.fd not in self.conns:
            return
        if conn.close_after and not conn.out:
            self._close(conn)
        elif conn.inbuf:
            self._parse(conn)

    # ---------------------------------------------------------------- requests
    def _parse(self, conn: _Conn) -> None:
        while conn.stream is None and conn.fd in self.conns:
            if conn.head is None:
                end = conn.inbuf.find(b"\r\n\r\n")
                if end < 0:
                    if len(conn.inbuf) > MAX_HEAD:
                        conn.close_after = True
                        self._reply(
                            conn, protocol.error_response(400, "header too large", "BadRequest", True)
                        )
                    return
                lines = bytes(conn.inbuf[:end]).decode("latin-1").split("\r\n")
                del conn.inbuf[: end + 4]
                parts = lines[0].split(" ")
                if len(parts) < 3:
                    conn.close_after = True
                    self._reply(conn, protocol.error_response(400, "bad request line", "BadRequest", True))
                    return
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                conn.head = (parts[0], parts[1], headers)
                conn.body_len = int(headers.get("content-length", "0") or 0)
                if headers.get("connection", "").lower() == "close" or parts[2] == "HTTP/1.0":
                    conn.close_after = True
                if headers.get("expect", "").lower() == "100-continue":
                    self._send(conn, b"HTTP/1.1 100 Continue\r\n\r\n")
            if len(conn.inbuf) < conn.body_len:
                return
            body = bytes(conn.inbuf[: conn.body_len])
            del conn.inbuf[: conn.body_len]
            method, path, headers = conn.head
            conn.head = None
            # The programmed TTFT counts from when the request's last byte reached this host (kernel
            # stamp), so time this loop spends on other requests shows as lateness, not as a shift.
            self._route(conn, method, path.split("?", 1)[0], headers, body=body, at=conn.arrived_ns or _now())

    def _route(
        self, conn: _Conn, method: str, path: str, headers: dict[str, str], *, body: bytes, at: int
    ) -> None:
        close = conn.close_after
        if path in ("/v1/chat/completions", "/v1/completions") and method == "POST":
            self._completion(conn, path.endswith("chat/completions"), headers, body, at)
        elif path == "/v1/models" and method == "GET":
            data = [
                {"id": m, "object": "model", "owned_by": "m3bench-calibration"} for m in self.config.models
            ]
            self._reply(conn, protocol.json_response(200, {"object": "list", "data": data}, close))
        elif path in ("/health", "/ping") and method == "GET":
            self._reply(conn, protocol.response(200, b"", "text/plain", close))
        elif path == "/calibration/stats" and method == "GET":
            usage = resource.getrusage(resource.RUSAGE_SELF)
            stats = self.stats.as_json(
                self.open_streams, usage.ru_utime + usage.ru_stime, time.monotonic() - self.started_wall
            )
            stats["config"] = {k: v for k, v in vars(self.config).items() if k != "models"}
            stats["priority"] = self.priority
            self._reply(conn, protocol.json_response(200, stats, close))
        elif path == "/calibration/request_ids" and method == "GET":
            self._reply(conn, protocol.json_response(200, self.stats.request_ids, close))
        elif path == "/calibration/reset" and method == "POST":
            self.stats = ServerStats()
            self.started_wall = time.monotonic()
            self.engine_free_ns = 0
            self._reply(conn, protocol.json_response(200, {"reset": True}, close))
        else:
            self._reply(
                conn, protocol.error_response(404, f"no route {method} {path}", "NotFoundError", close)
            )

    def _admit(self, at: int, tokens: int) -> int:
        """When the request's programmed generation starts: at once, or (``--capacity-tps``) when the one
        FIFO engine is free; it then holds the engine for tokens / capacity seconds."""
        capacity = self.config.capacity_tps
        if capacity is None:
            return at
        start = max(at, self.engine_free_ns)
        self.engine_free_ns = start + int(tokens / capacity * 1e9)
        self.stats.queued += start > at
        return start

    def _completion(self, conn: _Conn, chat: bool, headers: dict[str, str], raw: bytes, at: int) -> None:
        close = conn.close_after
        config = self.config
        self.stats.requests += 1
        request_id = headers.get("x-request-id") or f"calib-{self.stats.requests}"
        self.stats.request_ids.append(request_id)
        if self.request_log is not None:
            self.request_log.write(request_id + "\n")
            self.request_log.flush()
        if config.die_after_s is not None and self.die_at is None:
            self.die_at = at + int(config.die_after_s * 1e9)
        if config.die_after_requests is not None and self.stats.requests == config.die_after_requests:
            self.die_at = at + 300_000_000
        try:
            body: dict[str, Any] = json.loads(raw)
        except ValueError as exc:
            self._reply(
                conn, protocol.error_response(400, f"invalid JSON body: {exc}", "BadRequestError", close)
            )
            return
        model = str(body.get("model", ""))
        if "*" not in config.models and model not in config.models:
            message = f"The model `{model}` does not exist."
            self._reply(conn, protocol.error_response(404, message, "NotFoundError", close))
            return
        if config.fault == "http500":
            self._reply(
                conn, protocol.error_response(500, "programmed failure", "InternalServerError", close)
            )
            return
        asked = body.get("max_completion_tokens") or body.get("max_tokens")
        total = config.output_len if config.output_len is not None else int(asked or 16)
        if asked:
            total = min(total, int(asked))
        total = max(1, total)
        start = self._admit(at, total)  # the programmed timing counts from here
        prompt_tokens = protocol.estimate_prompt_tokens(body)
        stream_opts = body.get("stream_options") or {}
        if not body.get("stream") or config.fault == "non_sse":
            # Reply after the whole programmed generation time, as a real server would.
            reply = protocol.full_completion(
                chat=chat,
                request_id=request_id,
                model=model,
                text=config.token_text * total,
                output_tokens=total,
                prompt_tokens=prompt_tokens,
            )
            frames = protocol.StreamFrames(
                first=b"", token=b"", tail=protocol.json_response(200, reply, close), malformed=b""
            )
            stream = _Stream(conn, frames, start + self.ttft_ns + (total - 1) * self.itl_ns, 0, 0)
            conn.stream = stream
            self.open_streams += 1
            self._schedule(stream.first_deadline, stream)
            return
        include_usage = bool(stream_opts.get("include_usage"))
        key = (chat, model, total, prompt_tokens, include_usage)
        cached = self.frames_cache.get(key)
        if cached is None:  # frames are shared by equal requests: the chunk id is not the request id
            if len(self.frames_cache) > 4096:
                self.frames_cache.clear()
            cached = self.frames_cache[key] = protocol.build_frames(
                chat=chat,
                request_id="cmpl-m3bench-calibration",
                model=model,
                token_text=config.token_text,
                output_tokens=total,
                prompt_tokens=prompt_tokens,
                include_usage=include_usage,
            )
        frames = cached
        self._send(conn, protocol.STREAM_HEAD)
        stream = _Stream(conn, frames, start + self.ttft_ns, self.itl_ns, total)
        stream.request_id, stream.received_ns = request_id, at
        conn.stream = stream
        self.open_streams += 1
        self.stats.max_open_streams = max(self.stats.max_open_streams, self.open_streams)
        self._schedule(stream.first_deadline, stream)


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    priority = raise_priority() if config.realtime else "default"
    server = CalibrationServer(config)
    server.priority = priority
    print(f"calibration server listening on http://{server.config.host}:{server.port}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        if server.timing_log is not None:
            server.timing_log.close()


if __name__ == "__main__":
    main()
