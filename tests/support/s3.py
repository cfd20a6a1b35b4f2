"""A real S3 endpoint for tests: moto's S3 server as a subprocess on 127.0.0.1.

:class:`MotoS3Server` runs ``python3 -m moto.server -H 127.0.0.1 -p PORT`` (a free port), waits
until it answers HTTP, and stops it by pid::

    with MotoS3Server() as s3:
        s3.create_bucket("lake")
        s3.client().put_object(Bucket="lake", Key="t/a.csv", Body=b"1,2\\n")
        options = s3_options(s3.endpoint, s3.access_key, s3.secret_key, s3.region)

Every AWS SDK here gets explicit credentials and ``AWS_EC2_METADATA_DISABLED=true`` (set in
this process on import and in the server's environment), so nothing ever probes the EC2
instance-metadata endpoint.
"""
from __future__ import annotations

import atexit
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Self

from tests.support.ports import LOOPBACK, free_port, log_tail, stop_process, wait_for_port

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
else:
    S3Client = Any

# Never let an SDK in this process (boto3, pyarrow's AWS SDK for C++) try instance metadata.
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

#: Constant test credentials; moto accepts any.
TEST_ACCESS_KEY = "strata-test-access-key"
TEST_SECRET_KEY = "strata-test-secret-key"
TEST_REGION = "us-east-1"

_SESSION: Any = None
_SESSION_LOCK = threading.Lock()

# Inherited settings that could send the server's or a client's requests elsewhere.
_FOREIGN_ENV = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
                "AWS_ENDPOINT_URL_S3", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")


def s3_options(endpoint: str, access_key: str, secret_key: str, region: str) -> dict[str, str]:
    """The Strata mount options for an S3 endpoint, named as Trino names them."""
    return {
        "s3.endpoint": endpoint,
        "s3.region": region,
        "s3.aws-access-key": access_key,
        "s3.aws-secret-key": secret_key,
        "s3.path-style-access": "true",
    }


def _boto3_session() -> Any:
    """The process-wide boto3 Session (call with ``_SESSION_LOCK`` held)."""
    global _SESSION
    if _SESSION is None:
        import boto3

        _SESSION = boto3.session.Session()
    return _SESSION


def s3_client(
    endpoint: str,
    access_key: str = TEST_ACCESS_KEY,
    secret_key: str = TEST_SECRET_KEY,
    region: str = TEST_REGION,
    *,
    max_attempts: int | None = None,
    connect_timeout: float | None = None,
    read_timeout: float | None = None,
    max_pool_connections: int = 128,
) -> S3Client:
    """A boto3 S3 client for ``endpoint``: path-style, explicit credentials, optional limits.

    ``max_attempts`` is botocore's ``retries={"max_attempts": N}`` (retries after the first
    attempt in botocore's default retry mode; 0 means a single attempt).
    """
    from botocore.config import Config

    config: dict[str, Any] = {"s3": {"addressing_style": "path"},
                              "max_pool_connections": max_pool_connections}
    if max_attempts is not None:
        config["retries"] = {"max_attempts": max_attempts}
    if connect_timeout is not None:
        config["connect_timeout"] = connect_timeout
    if read_timeout is not None:
        config["read_timeout"] = read_timeout
    with _SESSION_LOCK:  # a boto3 Session is not thread-safe; sharing one caches its models
        return _boto3_session().client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name=region,
            config=Config(**config),
        )


class MotoS3Server:
    """moto's S3 server on 127.0.0.1:``port`` as a subprocess; log in ``work_dir/moto.log``."""

    access_key: str = TEST_ACCESS_KEY
    secret_key: str = TEST_SECRET_KEY
    region: str = TEST_REGION

    def __init__(
        self, work_dir: Path | str | None = None, port: int | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.host = LOOPBACK
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self.startup_timeout = startup_timeout
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if work_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="moto-s3-")
            work_dir = self._tmp.name
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.log_file = self.work_dir / "moto.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs."""
        return self._proc.pid if self._proc is not None else None

    def command(self) -> list[str]:
        """The server's command line (this interpreter, loopback only)."""
        return [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)]

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_ENV}
        env.update(
            AWS_EC2_METADATA_DISABLED="true",
            AWS_ACCESS_KEY_ID=self.access_key,
            AWS_SECRET_ACCESS_KEY=self.secret_key,
            AWS_DEFAULT_REGION=self.region,
            NO_PROXY="127.0.0.1,localhost",
            PYTHONUNBUFFERED="1",
        )
        return env

    def start(self) -> Self:
        """Launch the server and wait until it answers HTTP (``RuntimeError`` with log tail if not)."""
        if self._proc is not None and self._proc.poll() is None:
            return self
        for attempt in range(3):
            try:
                return self._start_once()
            except RuntimeError:
                # A free port can be taken between free_port() and the bind: pick another one.
                if self._fixed_port or attempt == 2 or "already in use" not in log_tail(
                        self.log_file, 5):
                    raise
                self.port = free_port()
        raise AssertionError("unreachable")

    def _start_once(self) -> Self:
        self._log = open(self.log_file, "ab")
        self._proc = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, env=self._env(), cwd=self.work_dir,
            start_new_session=True,
        )
        atexit.register(self.stop)
        deadline = time.monotonic() + self.startup_timeout
        try:
            wait_for_port(self.host, self.port, self.startup_timeout, self._proc,
                          self.log_file, what="moto S3 server")
            self._wait_http(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_http(self, deadline: float) -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        last: Exception | None = None
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"moto S3 server (pid {self._proc.pid}) exited with code "
                    f"{self._proc.returncode}; log tail:\n{log_tail(self.log_file)}")
            try:
                with opener.open(f"{self.endpoint}/moto-api/data.json", timeout=2.0) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = exc
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"moto S3 server on {self.endpoint} did not answer within "
                    f"{self.startup_timeout:.0f}s ({last}); log tail:\n{log_tail(self.log_file)}")
            time.sleep(0.1)

    def stop(self, grace: float = 10.0) -> None:
        """Stop the server by pid: SIGTERM, wait ``grace`` s, then SIGKILL."""
        proc, self._proc = self._proc, None
        stop_process(proc, grace=grace)
        if self._log is not None:
            self._log.close()
            self._log = None
        atexit.unregister(self.stop)

    def reset(self) -> None:
        """Drop every bucket and object (moto's ``POST /moto-api/reset``)."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", data=b"",
                                         method="POST")
        with opener.open(request, timeout=10.0) as resp:
            if resp.status != 200:
                raise RuntimeError(f"moto reset answered HTTP {resp.status}")

    def client(self, **limits: Any) -> S3Client:
        """A boto3 S3 client for this server (``limits``: see :func:`s3_client`)."""
        return s3_client(self.endpoint, self.access_key, self.secret_key, self.region, **limits)

    def create_bucket(self, name: str) -> str:
        """Create bucket ``name`` and return it."""
        self.client().create_bucket(Bucket=name)
        return name

    def options(self) -> dict[str, str]:
        """:func:`s3_options` for this server."""
        return s3_options(self.endpoint, self.access_key, self.secret_key, self.region)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
