"""A fault-injecting TCP proxy for tests, loopback only.

:class:`FaultProxy` listens on 127.0.0.1:<free port> and forwards to ``upstream_host:port``
from an asyncio event loop in a daemon thread. Faults are set at runtime, from any thread::

    with FaultProxy("127.0.0.1", s3.port) as proxy:
        client = s3_client(proxy.endpoint)
        proxy.latency_s = 0.02      # every chunk the client sends waits 20 ms
        proxy.mode = "http_503"     # every new request gets an S3 ServiceUnavailable reply
        proxy.mode = "reset"        # new connections are reset (RST) at once
        proxy.mode = "hang"         # new connections are accepted and never answered
        proxy.mode = "pass"

A mode applies to connections accepted after it is set; ``http_503`` also applies to the next
request on an already open connection. Leaving ``hang`` closes the hanging connections.
"""
from __future__ import annotations

import asyncio
import itertools
import re
import socket
import struct
import threading
from types import TracebackType
from typing import Literal, Self, cast, get_args

from tests.support.ports import LOOPBACK

Mode = Literal["pass", "http_503", "reset", "hang"]
MODES: tuple[str, ...] = get_args(Mode)

_CHUNK = 64 * 1024
_MAX_HEADER = 64 * 1024
_IO_TIMEOUT = 5.0
_LINGER = 1.0
# The start of an HTTP/1.x request: tells a new request from the middle of a request body.
_REQUEST_LINE = re.compile(rb"^[A-Z]{3,10} \S+ HTTP/1\.[01]\r?\n")
_SERVICE_UNAVAILABLE_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>ServiceUnavailable</Code>"
    b"<Message>Service Unavailable (injected by FaultProxy)</Message>"
    b"<RequestId>fault-proxy</RequestId></Error>"
)
_ids = itertools.count(1)


def service_unavailable_response(head: bool = False) -> bytes:
    """The HTTP/1.1 503 reply with an S3 ``ServiceUnavailable`` error body (none for HEAD)."""
    body = b"" if head else _SERVICE_UNAVAILABLE_BODY
    headers = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/xml\r\n"
        f"Content-Length: {len(_SERVICE_UNAVAILABLE_BODY)}\r\n"
        "x-amz-request-id: fault-proxy\r\n"
        "Connection: close\r\n\r\n"
    )
    return headers.encode("ascii") + body


class FaultProxy:
    """A TCP proxy to ``upstream_host:upstream_port`` with runtime-settable faults."""

    def __init__(self, upstream_host: str, upstream_port: int, port: int = 0,
                 backlog: int = 2048) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.host = LOOPBACK
        self._requested_port = port
        self._backlog = backlog
        self.port = 0
        self.name = f"fault-proxy-{next(_ids)}"
        self._lock = threading.Lock()
        self._mode: Mode = "pass"
        self._latency_s = 0.0
        self._connections = 0
        self._requests = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        # Owned by the loop thread:
        self._stopping: asyncio.Event | None = None
        self._mode_changed: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._closing = False

    # -- runtime settings and counters (thread-safe) ---------------------------------------

    @property
    def thread_name(self) -> str:
        """The name of the proxy's event-loop thread."""
        return f"{self.name}:{self.port}"

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    @property
    def mode(self) -> Mode:
        """``pass`` | ``http_503`` | ``reset`` | ``hang``."""
        with self._lock:
            return self._mode

    @mode.setter
    def mode(self, value: Mode) -> None:
        if value not in MODES:
            raise ValueError(f"unknown FaultProxy mode {value!r}; one of {MODES}")
        with self._lock:
            self._mode = value
            loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._signal_mode_change)
            except RuntimeError:  # loop closed meanwhile
                pass

    @property
    def latency_s(self) -> float:
        """Delay added before forwarding each chunk the client sends."""
        with self._lock:
            return self._latency_s

    @latency_s.setter
    def latency_s(self, value: float) -> None:
        if value < 0:
            raise ValueError("latency_s must be >= 0")
        with self._lock:
            self._latency_s = float(value)

    @property
    def connections(self) -> int:
        """Client connections accepted so far."""
        with self._lock:
            return self._connections

    @property
    def requests(self) -> int:
        """Client chunks forwarded upstream plus requests answered with 503."""
        with self._lock:
            return self._requests

    @property
    def open_connections(self) -> int:
        """Client connections currently open (approximate, read from another thread)."""
        return len(self._tasks)

    def _count(self, connections: int = 0, requests: int = 0) -> None:
        with self._lock:
            self._connections += connections
            self._requests += requests

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> Self:
        """Start listening (returns once it accepts connections) and return ``self``."""
        if self._thread is not None:
            raise RuntimeError("FaultProxy already started")
        self._ready.clear()
        self._error = None
        self._closing = False
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._requested_port))
            sock.listen(self._backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.port = int(sock.getsockname()[1])
        self._thread = threading.Thread(target=self._run, args=(sock,),
                                        name=self.thread_name, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"FaultProxy on {self.endpoint} did not start within {timeout}s")
        if self._error is not None:
            raise RuntimeError(f"FaultProxy failed to start: {self._error!r}") from self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Close the listener and every open connection; join the thread."""
        thread, loop = self._thread, self._loop
        if thread is None:
            return
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._request_stop)
            except RuntimeError:
                pass
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError(f"FaultProxy thread {thread.name} did not stop within {timeout}s")
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- event loop (proxy thread) ----------------------------------------------------------

    def _run(self, sock: socket.socket) -> None:
        loop = asyncio.new_event_loop()
        try:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._serve(sock))
            loop.run_until_complete(loop.shutdown_asyncgens())
        except BaseException as exc:  # surfaced by start() if it happens before ready
            self._error = exc
        finally:
            sock.close()
            self._ready.set()
            with self._lock:
                self._loop = None
            loop.close()

    def _request_stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    def _signal_mode_change(self) -> None:
        if self._mode_changed is not None:
            self._mode_changed.set()
            self._mode_changed = asyncio.Event()

    async def _serve(self, sock: socket.socket) -> None:
        self._stopping = asyncio.Event()
        self._mode_changed = asyncio.Event()
        server = await asyncio.start_server(self._on_connect, sock=sock, backlog=self._backlog,
                                            limit=_CHUNK)
        with self._lock:
            self._loop = asyncio.get_running_loop()
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            self._closing = True
            server.close()
            await self._close_connections()
            await server.wait_closed()

    async def _close_connections(self) -> None:
        """Abort every connection and let its task finish (cancel it if it does not)."""
        current = asyncio.current_task()
        for _ in range(5):
            for writer in list(self._writers):
                _abort(writer)
            pending = [t for t in asyncio.all_tasks() if t is not current]
            if not pending:
                return
            _, still = await asyncio.wait(pending, timeout=2.0)
            for task in still:
                task.cancel()

    async def _on_connect(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self._count(connections=1)
        try:
            mode = self.mode
            if self._closing:
                return
            if mode == "reset":
                _reset(writer)
            elif mode == "hang":
                await self._hang(reader)
            elif mode == "http_503":
                await self._answer_503(reader, writer, b"")
            else:
                await self._forward(reader, writer)
        except (ConnectionError, OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            pass
        except asyncio.CancelledError:
            pass  # stop(): the writer is aborted below
        finally:
            self._writers.discard(writer)
            _abort(writer)
            self._tasks.discard(task)

    async def _hang(self, reader: asyncio.StreamReader) -> None:
        """Read and drop what the client sends until it leaves, the mode changes or stop()."""
        assert self._mode_changed is not None
        while self.mode == "hang":
            changed = asyncio.ensure_future(self._mode_changed.wait())
            read = asyncio.ensure_future(reader.read(_CHUNK))
            try:
                done, _ = await asyncio.wait({changed, read},
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                for fut in (changed, read):
                    if not fut.done():
                        fut.cancel()
                await asyncio.gather(changed, read, return_exceptions=True)
            if read in done and not read.cancelled() and read.exception() is None \
                    and not read.result():
                return  # client closed

    async def _answer_503(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          initial: bytes) -> None:
        """Read one request's head (and its Content-Length body), answer 503, close."""
        buf = bytearray(initial)
        while b"\r\n\r\n" not in buf:
            if len(buf) > _MAX_HEADER:
                break
            data = await asyncio.wait_for(reader.read(_CHUNK), _IO_TIMEOUT)
            if not data:
                return
            buf += data
        head, _, body = bytes(buf).partition(b"\r\n\r\n")
        headers = _parse_headers(head)
        if "100-continue" not in headers.get("expect", "").lower():
            remaining = _content_length(headers) - len(body)
            while remaining > 0:
                data = await asyncio.wait_for(reader.read(min(remaining, _CHUNK)), _IO_TIMEOUT)
                if not data:
                    break
                remaining -= len(data)
        self._count(requests=1)
        writer.write(service_unavailable_response(head=head.startswith(b"HEAD ")))
        await asyncio.wait_for(writer.drain(), _IO_TIMEOUT)
        await _lingering_close(reader, writer)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Pass bytes both ways; switch to a 503 reply if a new request comes in that mode."""
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(self.upstream_host, self.upstream_port, limit=_CHUNK),
                _IO_TIMEOUT)
        except (OSError, asyncio.TimeoutError):
            return
        self._writers.add(up_writer)
        if self._closing:
            _abort(up_writer)
            return
        to_client = asyncio.ensure_future(_pump(up_reader, writer))
        to_upstream = asyncio.ensure_future(self._pump_client(reader, up_writer))
        try:
            done, _ = await asyncio.wait({to_client, to_upstream},
                                         return_when=asyncio.FIRST_COMPLETED)
            pending_503: bytes | None = None
            if to_upstream in done and not to_upstream.cancelled() \
                    and to_upstream.exception() is None:
                pending_503 = to_upstream.result()
        finally:
            for fut in (to_client, to_upstream):
                if not fut.done():
                    fut.cancel()
            await asyncio.gather(to_client, to_upstream, return_exceptions=True)
            self._writers.discard(up_writer)
            _abort(up_writer)
        if pending_503 is not None:
            await self._answer_503(reader, writer, pending_503)

    async def _pump_client(self, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> bytes | None:
        """Client -> upstream, ``latency_s`` before each chunk; a 503-mode request is returned."""
        while True:
            data = await reader.read(_CHUNK)
            if not data:
                return None
            if self.mode == "http_503" and _REQUEST_LINE.match(data):
                return data
            latency = self.latency_s
            if latency > 0:
                await asyncio.sleep(latency)
            writer.write(data)
            await writer.drain()
            self._count(requests=1)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy ``reader`` to ``writer`` until EOF, then close ``writer`` once it is flushed."""
    while True:
        data = await reader.read(_CHUNK)
        if not data:
            break
        writer.write(data)
        await writer.drain()
    writer.close()
    await asyncio.wait_for(writer.wait_closed(), _IO_TIMEOUT)


async def _lingering_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Half-close, then drop input briefly so unread request bytes do not turn into an RST."""
    if writer.can_write_eof():
        writer.write_eof()
    try:
        async with asyncio.timeout(_LINGER):
            while await reader.read(_CHUNK):
                pass
    except (TimeoutError, OSError):
        pass


def _parse_headers(head: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return headers


def _content_length(headers: dict[str, str]) -> int:
    try:
        return max(0, int(headers.get("content-length", "0")))
    except ValueError:
        return 0


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close the connection with an RST (SO_LINGER 0)."""
    sock = cast(socket.socket | None, writer.get_extra_info("socket"))
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close the connection now, dropping unsent data (no-op if already closed)."""
    writer.transport.abort()
