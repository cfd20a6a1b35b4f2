"""The S3 gateway on a real uvicorn server for integration tests (127.0.0.1, a free port)::

    with GatewayServer(S3Gateway(ns, credentials=..., ...)) as gw:
        client = boto3.client("s3", endpoint_url=gw.endpoint, ...)

Optionally over TLS with a throw-away self-signed certificate (:func:`self_signed_cert`), which is
what makes boto3 send its default ``aws-chunked`` bodies with trailing checksums.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import uvicorn

from api.asgi_server import server_config
from tests.support.ports import LOOPBACK, free_port


def self_signed_cert(folder: Path) -> tuple[Path, Path] | None:
    """(certificate, key) for 127.0.0.1 / localhost made with ``openssl``; None without it."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    cert, key = folder / "gateway-cert.pem", folder / "gateway-key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


class GatewayServer:
    """Runs an ASGI app (the gateway, the REST app...) under uvicorn in a thread until the
    context exits."""

    def __init__(self, app: Any, *, port: int | None = None,
                 tls: tuple[Path, Path] | None = None, parser: str = "auto") -> None:
        self.port = port or free_port()
        self.tls = tls
        kwargs: dict[str, Any] = {}
        if tls is not None:
            kwargs = {"ssl_certfile": str(tls[0]), "ssl_keyfile": str(tls[1])}
        config = server_config(app, LOOPBACK, self.port, parser=parser,
                               timeout_graceful_shutdown=3, **kwargs)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name="s3-gateway-test",
                                        daemon=True)

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.tls else 'http'}://{LOOPBACK}:{self.port}"

    def __enter__(self) -> Self:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"the gateway did not start on port {self.port}")
            if time.monotonic() > deadline:
                raise TimeoutError("the gateway did not start within 30 s")
            time.sleep(0.02)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=15)
