"""uvicorn for Strata's HTTP front ends, with ASGI's zero-copy send.

uvicorn does not implement the ASGI extension ``http.response.zerocopysend``
(https://asgi.readthedocs.io/en/latest/extensions.html#zero-copy-send). Its two HTTP/1.1
protocols are extended here: each request's cycle announces the extension in
``scope["extensions"]`` and sends a
``{"type": "http.response.zerocopysend", "file": f, "offset": o, "count": n, "more_body": b}``
message with ``loop.sendfile`` (the kernel copies file pages to the socket, no bytes pass through
Python), framed as any body: by h11 (``send_with_data_passthrough`` gives the bytes around the
file region), or as uvicorn's httptools cycle frames bodies (Content-Length, or chunks). The S3
gateway serves cached blocks so (:class:`api.s3.app.S3Gateway`).

:func:`server_config` takes the httptools protocol (a C parser: about a third of a millisecond
less per request here) when ``httptools`` is installed, else h11.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Awaitable, Callable
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol, RequestResponseCycle

ZERO_COPY = "http.response.zerocopysend"


class _Region:
    """A file region handed to h11 in place of its bytes (h11 only takes its length)."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count


async def _send_region(cycle: Any, message: Any) -> bool:
    """``loop.sendfile`` of a zero-copy message's file region on ``cycle``'s transport; False
    (the cycle marked disconnected, the transport closed) when the client went away mid-body,
    which uvicorn's own writes ignore too."""
    try:
        if cycle.transport.is_closing():
            raise ConnectionResetError("the client went away")
        await asyncio.get_running_loop().sendfile(
            cycle.transport, message["file"], int(message.get("offset", 0)),
            int(message.get("count", 0)))
        return True
    except OSError:
        cycle.disconnected = True
        cycle.transport.close()
        return False


async def _ready_for_region(cycle: Any) -> bool:
    """Waits out paused writing; whether the region is to be sent (False: client gone)."""
    if cycle.flow.write_paused and not cycle.disconnected:
        await cycle.flow.drain()
    if cycle.disconnected:
        return False
    if not cycle.response_started or cycle.response_complete:
        raise RuntimeError(f"unexpected ASGI message '{ZERO_COPY}' outside a response body")
    return True


async def _zero_copy_send(cycle: Any, message: Any,
                          send_framed: Callable[[Any, int], Awaitable[bool]],
                          send: Callable[[Any], Awaitable[None]]) -> None:
    """A ``http.response.zerocopysend`` on ``cycle``: its region sent framed by the protocol
    (``send_framed``: False when the client went away), then the end of the body unless more
    comes (``send``: the cycle's own send)."""
    if not await _ready_for_region(cycle):
        return
    count = int(message.get("count", 0))
    if count > 0 and cycle.scope["method"] != "HEAD":
        if not await send_framed(message, count):
            return
    if not message.get("more_body", False):
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class ZeroCopyCycle(RequestResponseCycle):
    """uvicorn's h11 request/response cycle that also sends ``http.response.zerocopysend``."""

    async def send(self, message: Any) -> None:
        if message.get("type") != ZERO_COPY:
            await super().send(message)
            return
        await _zero_copy_send(self, message, self._send_framed, super().send)

    async def _send_framed(self, message: Any, count: int) -> bool:
        region = _Region(count)
        # h11 frames any object with a length (its documented way to sendfile).
        data = h11.Data(data=region)  # type: ignore[arg-type]
        for piece in self.conn.send_with_data_passthrough(data) or []:
            if piece is not region:
                self.transport.write(piece)
            elif not await _send_region(self, message):
                return False
        return True


class ZeroCopyH11Protocol(H11Protocol):
    """uvicorn's h11 protocol whose request cycles are :class:`ZeroCopyCycle`."""

    def handle_events(self) -> None:
        super().handle_events()
        cycle = getattr(self, "cycle", None)
        # The cycle made by this call has not run yet (its task starts on the next loop turn):
        # give it the zero-copy send before the app sees its scope.
        if cycle is not None and type(cycle) is RequestResponseCycle:
            cycle.__class__ = ZeroCopyCycle
            scope: dict[str, Any] = cycle.scope  # type: ignore[assignment]
            scope.setdefault("extensions", {})[ZERO_COPY] = {}


#: Bodies up to this size are joined to their response head (one write); larger ones follow it.
JOIN_BODY_BYTES = 256 * 1024


class _HeldHead:
    """A cycle's transport while its response head waits for the first body bytes: writes are
    kept; :meth:`sending` then makes the next write carry them, :meth:`flush` writes what is
    still kept (before a close, or when no body bytes came)."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._parts: list[bytes] = []
        self._sending = False

    def write(self, data: bytes) -> None:
        if not self._sending:
            self._parts.append(bytes(data))
            return
        if self._parts and len(data) <= JOIN_BODY_BYTES:  # one write; a big body is not copied
            self._parts.append(data)
            data = b"".join(self._parts)
            self._parts = []
        self.flush()
        self._transport.write(data)

    def sending(self) -> _HeldHead:
        self._sending = True
        return self

    def flush(self) -> None:
        if self._parts:
            data, self._parts = b"".join(self._parts), []
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


HAS_HTTPTOOLS = importlib.util.find_spec("httptools") is not None

if HAS_HTTPTOOLS:
    from uvicorn.protocols.http import httptools_impl

    class ZeroCopyHttpToolsCycle(httptools_impl.RequestResponseCycle):
        """uvicorn's httptools request/response cycle that also sends
        ``http.response.zerocopysend``, framed as that cycle frames body bytes. The response
        head is held back and written with the first body bytes: one write, and one wake-up of
        the client, per small response."""

        _held: _HeldHead | None = None

        async def send(self, message: Any) -> None:
            kind = message.get("type")
            if kind == "http.response.start" and not self.response_started:
                real = self.transport
                head = self._held = _HeldHead(real)
                self.transport = head  # type: ignore[assignment]
                try:
                    await super().send(message)
                finally:
                    self.transport = real
                return
            held, self._held = self._held, None
            if held is not None and kind == "http.response.body":
                real = self.transport
                self.transport = held.sending()  # type: ignore[assignment]
                try:
                    await super().send(message)
                finally:
                    self.transport = real
                    held.flush()
                return
            if held is not None:
                held.flush()
            if kind != ZERO_COPY:
                await super().send(message)
                return
            await _zero_copy_send(self, message, self._send_framed, super().send)

        async def _send_framed(self, message: Any, count: int) -> bool:
            if self.chunked_encoding:
                self.transport.write(b"%x\r\n" % count)
            elif count > self.expected_content_length:
                raise RuntimeError("Response content longer than Content-Length")
            else:
                self.expected_content_length -= count
            if not await _send_region(self, message):
                return False
            if self.chunked_encoding:
                self.transport.write(b"\r\n")
            return True

    class ZeroCopyHttpToolsProtocol(httptools_impl.HttpToolsProtocol):
        """uvicorn's httptools protocol whose request cycles are
        :class:`ZeroCopyHttpToolsCycle`."""

        def _start_asgi_task(self, cycle: Any, app: Any) -> None:
            # Every cycle starts here (pipelined ones later): before the app sees its scope.
            if type(cycle) is httptools_impl.RequestResponseCycle:
                cycle.__class__ = ZeroCopyHttpToolsCycle
                cycle.scope.setdefault("extensions", {})[ZERO_COPY] = {}
            super()._start_asgi_task(cycle, app)


def zero_copy_protocol(parser: str = "auto") -> type[Any]:
    """The zero-copy protocol class for ``parser``: ``h11``, ``httptools`` or ``auto``
    (httptools when installed)."""
    if parser == "h11" or (parser == "auto" and not HAS_HTTPTOOLS):
        return ZeroCopyH11Protocol
    if parser in ("httptools", "auto"):
        if not HAS_HTTPTOOLS:
            raise ValueError("the httptools HTTP parser is not installed (pip install httptools)")
        return ZeroCopyHttpToolsProtocol
    raise ValueError(f"unknown HTTP parser '{parser}': expected h11, httptools or auto")


def server_config(app: Any, host: str, port: int, *, parser: str = "auto", **kwargs: Any
                  ) -> uvicorn.Config:
    """A uvicorn config for ``app`` on ``host:port`` with a zero-copy protocol
    (:func:`zero_copy_protocol` of ``parser``), quiet logs,
    no lifespan (the caller owns the service) and no ``X-Forwarded-*`` rewriting (Strata's
    front ends are reached directly; the middleware costs every request)."""
    kwargs.setdefault("proxy_headers", False)
    kwargs.setdefault("log_level", "warning")
    kwargs.setdefault("access_log", False)
    kwargs.setdefault("lifespan", "off")
    return uvicorn.Config(app, host=host, port=port, http=zero_copy_protocol(parser), **kwargs)
