"""The Strata service process: state, HMS Thrift server, REST API and periodic sync together."""

from __future__ import annotations

import logging
import threading

from typing import Any

import uvicorn

from api.asgi_server import server_config
from api.rest.app import create_app, resolve_api_token
from api.thrift.server import ThriftServer
from catalog.config import Settings
from catalog.scheduler import SyncScheduler
from catalog.service import CatalogService
from catalog.serving import ClientView

log = logging.getLogger(__name__)


class StrataServer:
    """Starts and stops every front end over one :class:`CatalogService`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.service = CatalogService(settings)
        self.thrift = self._thrift_listener(settings.thrift_port, ClientView.VERBATIM)
        self.trino_thrift = (self._thrift_listener(settings.trino_thrift_port, ClientView.TRINO)
                             if settings.trino_thrift_port else None)
        self.scheduler = SyncScheduler(self.service)
        token = resolve_api_token(settings)  # never logged
        app = create_app(self.service, token=token, status=self.status)
        config = uvicorn.Config(app, host=settings.host,
                                port=settings.rest_port, log_level="warning", access_log=False)
        self.rest = uvicorn.Server(config)
        self._rest_thread: threading.Thread | None = None
        self.s3: uvicorn.Server | None = None
        self._s3_thread: threading.Thread | None = None
        if settings.s3_port:
            from api.s3 import create_s3_app  # refuses anonymous access beyond loopback

            gateway = create_s3_app(self.service.fs, settings,
                                    spool_dir=settings.data_dir / "s3-spool")
            self.s3 = uvicorn.Server(server_config(gateway, settings.host, settings.s3_port))

    def _thrift_listener(self, port: int, view: ClientView) -> ThriftServer:
        s = self.settings
        return ThriftServer(self.service, s.host, port, max_connections=s.thrift_max_connections,
                            idle_timeout_s=s.thrift_idle_timeout_s,
                            max_message_bytes=s.thrift_max_message_bytes, view=view,
                            max_connections_per_client=s.thrift_max_connections_per_client,
                            min_idle_timeout_s=s.thrift_min_idle_timeout_s,
                            request_timeout_s=s.thrift_request_timeout_s,
                            min_request_bytes_per_s=s.thrift_min_request_bytes_per_s,
                            worker_idle_s=s.thrift_worker_idle_s)

    @property
    def rest_port(self) -> int:
        servers = getattr(self.rest, "servers", None) or []
        for srv in servers:
            for sock in srv.sockets:
                return int(sock.getsockname()[1])
        return self.settings.rest_port

    @property
    def s3_port(self) -> int | None:
        """The S3 gateway's bound port (None when it is off)."""
        if self.s3 is None:
            return None
        for srv in getattr(self.s3, "servers", None) or []:
            for sock in srv.sockets:
                return int(sock.getsockname()[1])
        return self.settings.s3_port

    def status(self) -> dict[str, Any]:
        """The server-level part of ``GET /api/v1/status``: listeners and the scheduler."""
        host = self.settings.host
        listeners = [{"name": "rest", "protocol": "http", "host": host, "port": self.rest_port},
                     {"name": "thrift", "protocol": "thrift", "host": host,
                      "port": self.thrift.port}]
        if self.trino_thrift is not None:
            listeners.append({"name": "thrift-trino", "protocol": "thrift", "host": host,
                              "port": self.trino_thrift.port})
        if self.s3 is not None:
            listeners.append({"name": "s3", "protocol": "http", "host": host,
                              "port": self.s3_port})
        return {"listeners": listeners, "scheduler": self.scheduler.state()}

    def start(self) -> StrataServer:
        self.thrift.start()
        if self.trino_thrift is not None:
            self.trino_thrift.start()
        self.scheduler.start()
        self.service.transforms.start()
        self._rest_thread = threading.Thread(target=self.rest.run, name="rest", daemon=True)
        self._rest_thread.start()
        if self.s3 is not None:
            self._s3_thread = threading.Thread(target=self.s3.run, name="s3", daemon=True)
            self._s3_thread.start()
        return self

    def wait_started(self, timeout: float = 30.0) -> None:
        import time

        deadline = time.monotonic() + timeout
        while not self.rest.started:
            if self._rest_thread is not None and not self._rest_thread.is_alive():
                raise RuntimeError(f"REST server failed to start on port {self.settings.rest_port}")
            if time.monotonic() > deadline:
                raise TimeoutError("REST server did not start")
            time.sleep(0.05)
        while self.s3 is not None and not self.s3.started:
            if self._s3_thread is not None and not self._s3_thread.is_alive():
                raise RuntimeError(f"S3 gateway failed to start on port {self.settings.s3_port}")
            if time.monotonic() > deadline:
                raise TimeoutError("S3 gateway did not start")
            time.sleep(0.05)

    def serve_forever(self) -> None:
        self.start()
        self.wait_started()
        log.info("Strata serving: thrift://%s:%d  http://%s:%d", self.settings.host,
                 self.thrift.port, self.settings.host, self.rest_port)
        if self.trino_thrift is not None:
            log.info("Strata serving Trino (local:/// locations): thrift://%s:%d",
                     self.settings.host, self.trino_thrift.port)
        if self.s3 is not None:
            log.info("Strata serving S3 (gateway over the namespace): http://%s:%d%s",
                     self.settings.host, self.s3_port,
                     "" if self.settings.s3_access_key else " (anonymous: no keys set)")
        if self.settings.api_token is None or not self.settings.api_token.get_secret_value():
            log.info("REST API token (for catalogctl on this host): %s",
                     self.settings.data_dir / "api-token")
        try:
            while self._rest_thread is not None and self._rest_thread.is_alive():
                self._rest_thread.join(timeout=1)
        finally:
            self.stop()

    def stop(self) -> None:
        self.rest.should_exit = True
        if self.s3 is not None:
            self.s3.should_exit = True
        self.scheduler.stop()
        self.service.transforms.stop()
        self.thrift.stop()
        if self.trino_thrift is not None:
            self.trino_thrift.stop()
        if self._rest_thread is not None:
            self._rest_thread.join(timeout=10)
        if self._s3_thread is not None:
            self._s3_thread.join(timeout=10)
        self.service.close()
