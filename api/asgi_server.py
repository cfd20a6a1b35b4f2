"""uvicorn for Strata's HTTP front ends, with ASGI's zero-copy send.

uvicorn does not implement the ASGI extension ``http.response.zerocopysend``
(https://asgi.readthedocs.io/en/latest/extensions.html#zero-copy-send). Its h11 protocol is
extended here: each request's cycle announces the extension in ``scope["extensions"]`` and sends a
``{"type": "http.response.zerocopysend", "file": f, "offset": o, "count": n, "more_body": b}``
message with ``loop.sendfile`` (the kernel copies file pages to the socket, no bytes pass through
Python), framed by h11 as any body (``send_with_data_passthrough`` gives the bytes around the
file region). The S3 gateway serves cached blocks so (:class:`api.s3.app.S3Gateway`).
"""

from __future__ import annotations

import asyncio
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


class ZeroCopyCycle(RequestResponseCycle):
    """uvicorn's h11 request/response cycle that also sends ``http.response.zerocopysend``."""

    async def send(self, message: Any) -> None:
        if message.get("type") != ZERO_COPY:
            await super().send(message)
            return
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        if not self.response_started or self.response_complete:
            raise RuntimeError(f"unexpected ASGI message '{ZERO_COPY}' outside a response body")
        count = int(message.get("count", 0))
        if count > 0 and self.scope["method"] != "HEAD":
            region = _Region(count)
            loop = asyncio.get_running_loop()
            # h11 frames any object with a length (its documented way to sendfile).
            data = h11.Data(data=region)  # type: ignore[arg-type]
            pieces = self.conn.send_with_data_passthrough(data)
            for piece in pieces or []:
                if piece is not region:
                    self.transport.write(piece)
                    continue
                try:
                    if self.transport.is_closing():
                        raise ConnectionResetError("the client went away")
                    await loop.sendfile(self.transport, message["file"],
                                        int(message.get("offset", 0)), count)
                except OSError:  # the client went away mid-body, as uvicorn's writes ignore
                    self.disconnected = True
                    self.transport.close()
                    return
        if not message.get("more_body", False):
            await super().send({"type": "http.response.body", "body": b"", "more_body": False})


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


def server_config(app: Any, host: str, port: int, **kwargs: Any) -> uvicorn.Config:
    """A uvicorn config for ``app`` on ``host:port`` with the zero-copy h11 protocol, quiet logs,
    no lifespan (the caller owns the service) and no ``X-Forwarded-*`` rewriting (Strata's
    front ends are reached directly; the middleware costs every request)."""
    kwargs.setdefault("proxy_headers", False)
    kwargs.setdefault("log_level", "warning")
    kwargs.setdefault("access_log", False)
    kwargs.setdefault("lifespan", "off")
    return uvicorn.Config(app, host=host, port=port, http=ZeroCopyH11Protocol, **kwargs)
