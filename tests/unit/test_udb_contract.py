"""The UDB contract over the fast implementations, plus HiveUdb against Strata's own Thrift server.

Cases: the in-memory fake (``FakeUdb``), ``directory`` on a local lake, and ``hive`` reading the
fake's sample data back through a real :class:`ThriftServer` (no Java). The last one also covers
HiveUdb's connection pool, retries, timeouts and its fallbacks for servers that lack a call.
"""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from api.thrift.server import ThriftServer
from catalog.config import Settings
from catalog.exceptions import NoSuchDatabaseError, UdbError, UdbUnavailableError
from catalog.models import Partition, Table
from catalog.service import CatalogService
from catalog.udb import load_udb
from catalog.udb.base import UnderDatabase
from catalog.udb.hive import HiveUdb
from tests.support.fake_udb import FakeSource
from tests.support.udb_contract import (
    LAKE_DB,
    LAKE_OPTIONS,
    LAKE_PARTITION_KEYS,
    LAKE_PARTITIONS,
    LAKE_TABLES,
    SAMPLE_DB,
    SAMPLE_PARTITION_KEYS,
    SAMPLE_PARTITIONS,
    SAMPLE_STATS_COLUMNS,
    SAMPLE_TABLES,
    UdbCase,
    UdbContract,
    contract_source,
    events_parquet,
    local_path,
    write_local_lake,
)

TIMEOUT_S = 2.0
RETRIES = 1
HIVE_OPTIONS = frozenset({"stats"})


# -- Strata serving the fake's sample data ---------------------------------------------------------


@dataclass
class StrataServed:
    """A CatalogService over a :class:`FakeSource` with ``sales`` attached, served over Thrift."""

    source: FakeSource
    service: CatalogService
    server: ThriftServer
    udb_settings: Settings

    @property
    def uri(self) -> str:
        return f"thrift://127.0.0.1:{self.server.port}"

    def hive(self, source_db: str = SAMPLE_DB, retries: int = RETRIES,
             **options: str) -> HiveUdb:
        settings = self.udb_settings.model_copy(update={"udb_retries": retries})
        return HiveUdb(self.uri, source_db, options, settings)

    def restart(self) -> None:
        """Stop the server and start a new one on the same port."""
        port = self.server.port
        self.server.stop()
        self.server = ThriftServer(self.service, "127.0.0.1", port, idle_timeout_s=5).start()


@pytest.fixture
def strata(tmp_path: Path) -> Iterator[StrataServed]:
    source = contract_source(tmp_path / "data")
    service = CatalogService(Settings(data_dir=tmp_path / "state", sync_interval_s=0),
                             udb_factory=source.factory)
    service.attach_database("fake", "fake://", SAMPLE_DB)
    server = ThriftServer(service, "127.0.0.1", 0, idle_timeout_s=5).start()
    served = StrataServed(source, service, server, Settings(
        data_dir=tmp_path / "udb", udb_timeout_s=TIMEOUT_S, udb_retries=RETRIES))
    try:
        yield served
    finally:
        served.server.stop()
        service.close()


# -- the cases -------------------------------------------------------------------------------------


def _add_local_file(location: str) -> None:
    (local_path(location) / "contract-added.parquet").write_bytes(events_parquet(1000))


def fake_case(tmp_path: Path) -> UdbCase:
    source = contract_source()
    settings = Settings(data_dir=tmp_path / "state")
    touched: list[int] = []

    def touch(location: str) -> None:
        touched.append(1)
        source.touch(location, f"fp-changed-{len(touched)}")

    return UdbCase(
        name="fake",
        open_db=lambda db: source.factory("fake", "fake://", db, {}, settings),
        source_db=SAMPLE_DB, database_name=SAMPLE_DB, tables=SAMPLE_TABLES,
        plain_table="customers", partitioned_table="events",
        partition_keys=SAMPLE_PARTITION_KEYS, partitions=SAMPLE_PARTITIONS,
        options=frozenset({"fake.flag"}), view="recent_events",
        stats_table="customers", stats_columns=SAMPLE_STATS_COLUMNS,
        change_data=touch, drop_table=lambda name: source.drop_table(SAMPLE_DB, name))


def directory_case(tmp_path: Path) -> UdbCase:
    root = tmp_path / "lake"
    write_local_lake(root)
    settings = Settings(data_dir=tmp_path / "state")
    return UdbCase(
        name="directory-local",
        open_db=lambda db: load_udb("directory", f"file://{root}", db, {}, settings),
        source_db=LAKE_DB, database_name=LAKE_DB, tables=LAKE_TABLES,
        plain_table="customers", partitioned_table="events",
        partition_keys=LAKE_PARTITION_KEYS, partitions=LAKE_PARTITIONS, options=LAKE_OPTIONS,
        change_data=_add_local_file,
        drop_table=lambda name: shutil.rmtree(root / LAKE_DB / name))


def strata_case(strata: StrataServed) -> UdbCase:
    def drop(name: str) -> None:
        strata.source.drop_table(SAMPLE_DB, name)
        report = strata.service.sync(SAMPLE_DB)
        assert report.errors == [] and report.tables.removed == 1, report

    return UdbCase(
        name="hive-on-strata",
        open_db=lambda db: load_udb("hive", strata.uri, db, {}, strata.udb_settings),
        source_db=SAMPLE_DB, database_name=SAMPLE_DB, tables=SAMPLE_TABLES,
        plain_table="customers", partitioned_table="events",
        partition_keys=SAMPLE_PARTITION_KEYS, partitions=SAMPLE_PARTITIONS,
        options=HIVE_OPTIONS, view="recent_events",
        stats_table="customers", stats_columns=SAMPLE_STATS_COLUMNS,
        change_data=_add_local_file, drop_table=drop)


@pytest.fixture(params=["fake", "directory-local", "hive-on-strata"])
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[UdbCase]:
    built: UdbCase
    if request.param == "fake":
        built = fake_case(tmp_path)
    elif request.param == "directory-local":
        built = directory_case(tmp_path)
    else:
        built = strata_case(request.getfixturevalue("strata"))
    try:
        yield built
    finally:
        built.close_all()
        if request.param == "hive-on-strata":
            server: ThriftServer = request.getfixturevalue("strata").server
            assert not server.unknown_methods, server.unknown_methods


class TestUdbContract(UdbContract):
    """Every check of the contract, on each fast case."""


# -- HiveUdb against Strata: the methods it calls, fallbacks, pool, retries, timeouts ---------------

#: The request-style calls HiveUdb tries first; Strata answers all of them.
PRIMARY_CALLS = {"get_database", "get_all_tables", "get_table_objects_by_name_req",
                 "get_table_statistics_req", "get_partitions", "get_partitions_statistics_req"}


def read_everything(udb: UnderDatabase) -> dict[str, tuple[Table, list[Partition]]]:
    udb.get_database()
    return {t.name: (t, parts) for t, parts in udb.fetch_all(udb.list_tables() + ["nope"])}


def test_hive_udb_calls_only_methods_strata_serves(strata: StrataServed) -> None:
    udb = strata.hive()
    try:
        read = read_everything(udb)
        assert sorted(read) == sorted(SAMPLE_TABLES)
        assert udb.get_tables(["nope"]) == []
    finally:
        udb.close()
    assert not strata.server.unknown_methods
    assert PRIMARY_CALLS <= set(strata.server.calls), strata.server.calls
    # No fallback was needed.
    assert not {"get_tables", "get_table_objects_by_name", "get_table_req",
                "get_partitions_ps"} & set(strata.server.calls)


@pytest.mark.parametrize(("removed", "fallback"), [
    (("get_all_tables",), "get_tables"),
    (("get_table_objects_by_name_req",), "get_table_objects_by_name"),
    (("get_table_objects_by_name_req", "get_table_objects_by_name"), "get_table_req"),
    (("get_partitions",), "get_partitions_ps"),
])
def test_hive_udb_falls_back_when_a_call_is_unknown(strata: StrataServed,
                                                    removed: tuple[str, ...],
                                                    fallback: str) -> None:
    baseline_udb = strata.hive()
    baseline = read_everything(baseline_udb)
    baseline_udb.close()
    for method in removed:  # a metastore (Hive 4, or an old one) that lacks these calls
        del strata.server.methods[method]
    udb = strata.hive()
    try:
        assert read_everything(udb) == baseline
        # Sequential reads again: each unknown method was tried once, then remembered.
        assert udb.list_tables() == sorted(SAMPLE_TABLES)
        assert [t.name for t in udb.get_tables(["customers", "nope", "events"])] == [
            "customers", "events"]
        events = udb.get_tables(["events"])[0]
        assert len(udb.list_partitions(events)) == len(SAMPLE_PARTITIONS)
    finally:
        udb.close()
    assert set(strata.server.unknown_methods) == set(removed)
    assert strata.server.calls[fallback] > 0


def test_hive_udb_unknown_methods_are_tried_once(strata: StrataServed) -> None:
    del strata.server.methods["get_table_objects_by_name_req"]
    udb = strata.hive()
    try:
        for _ in range(3):
            assert [t.name for t in udb.get_tables(["customers"])] == ["customers"]
    finally:
        udb.close()
    assert strata.server.unknown_methods["get_table_objects_by_name_req"] == 1
    assert strata.server.calls["get_table_objects_by_name"] == 3


def test_hive_udb_without_any_table_call_is_a_udb_error(strata: StrataServed) -> None:
    for method in ("get_table_objects_by_name_req", "get_table_objects_by_name",
                   "get_table_req"):
        del strata.server.methods[method]
    udb = strata.hive()
    try:
        with pytest.raises(UdbError, match="supports none of the calls") as info:
            udb.get_tables(["customers"])
        assert not isinstance(info.value, UdbUnavailableError)
    finally:
        udb.close()


def test_hive_udb_without_statistics_calls_reads_tables_without_stats(
        strata: StrataServed) -> None:
    del strata.server.methods["get_table_statistics_req"]
    del strata.server.methods["get_partitions_statistics_req"]
    udb = strata.hive()
    try:
        read = read_everything(udb)
        assert sorted(read) == sorted(SAMPLE_TABLES)
        assert read["customers"][0].column_stats == []
        assert len(read["events"][1]) == len(SAMPLE_PARTITIONS)
    finally:
        udb.close()


def test_hive_udb_stats_option_false_never_asks_for_statistics(strata: StrataServed) -> None:
    udb = strata.hive(stats="false")
    try:
        read = read_everything(udb)
    finally:
        udb.close()
    assert read["customers"][0].column_stats == []
    assert not {"get_table_statistics_req", "get_partitions_statistics_req"} & set(
        strata.server.calls)
    with_stats = strata.hive()
    try:
        assert [s.column for s in with_stats.get_tables(["customers"])[0].column_stats] == ["id"]
    finally:
        with_stats.close()


def _wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _open_connections(server: ThriftServer) -> int:
    with server._guard:  # noqa: SLF001 - the test watches the server's live connections
        return len(server._connections)  # noqa: SLF001


def test_hive_udb_pools_connections_and_close_releases_them(strata: StrataServed) -> None:
    udb = strata.hive()
    for _ in range(5):
        assert udb.get_database().name == SAMPLE_DB
    assert udb._pool.qsize() == 1  # noqa: SLF001 - one connection, reused
    assert _wait_until(lambda: _open_connections(strata.server) == 1)
    read_everything(udb)  # parallel: up to pool_size connections
    assert 1 <= udb._pool.qsize() <= strata.udb_settings.udb_pool_size  # noqa: SLF001
    udb.close()
    assert udb._pool.qsize() == 0  # noqa: SLF001
    assert _wait_until(lambda: _open_connections(strata.server) == 0)
    # A closed UDB opens new connections when used again.
    assert udb.list_tables() == sorted(SAMPLE_TABLES)
    udb.close()


def test_hive_udb_retries_a_connection_broken_by_a_server_restart(
        strata: StrataServed) -> None:
    retrying, single_shot = strata.hive(retries=1), strata.hive(retries=0)
    try:
        for udb in (retrying, single_shot):
            assert udb.get_database().name == SAMPLE_DB  # a pooled connection each
        strata.restart()
        # The pooled connection is dead: the retry opens a fresh one to the new server.
        assert retrying.get_database().name == SAMPLE_DB
        with pytest.raises(UdbUnavailableError, match="get_database"):
            single_shot.get_database()
        assert single_shot.get_database().name == SAMPLE_DB  # its next call reconnects
    finally:
        retrying.close()
        single_shot.close()


def test_hive_udb_server_stopped_midway_is_unavailable_within_bounds(
        strata: StrataServed) -> None:
    udb = strata.hive()
    try:
        names = udb.list_tables()
        assert udb.get_database().name == SAMPLE_DB
        strata.server.stop()
        # Every attempt fails at once (reset, then refused); only the backoff is waited.
        bound = TIMEOUT_S * (RETRIES + 1) + 1.0
        for read in (lambda: udb.get_tables(names),
                     lambda: list(udb.fetch_all(names)),
                     udb.get_database,
                     lambda: strata.hive().list_tables()):
            started = time.monotonic()
            with pytest.raises(UdbUnavailableError, match="unreachable") as info:
                read()
            assert time.monotonic() - started < bound
            assert f"127.0.0.1:{strata.server.port}" in str(info.value)
    finally:
        udb.close()


def test_hive_udb_hung_server_times_out_per_attempt() -> None:
    """A server that accepts connections and never answers: each attempt ends at the timeout."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=16)  # never accept()ed
    try:
        port = listener.getsockname()[1]
        udb = HiveUdb(f"thrift://127.0.0.1:{port}", SAMPLE_DB, {},
                      Settings(udb_timeout_s=TIMEOUT_S, udb_retries=RETRIES))
        started = time.monotonic()
        with pytest.raises(UdbUnavailableError, match="get_database"):
            udb.get_database()
        elapsed = time.monotonic() - started
        attempts = RETRIES + 1
        assert TIMEOUT_S * attempts - 0.2 <= elapsed < TIMEOUT_S * attempts + 1.5, elapsed
        udb.close()
    finally:
        listener.close()


def test_hive_udb_keeps_its_connection_after_an_error_answer(strata: StrataServed) -> None:
    """A server-side error (no such database) is a whole answer: the socket stays pooled."""
    udb = strata.hive()
    try:
        assert udb.get_database().name == SAMPLE_DB
        missing = strata.hive(source_db="no_such_db")
        missing._pool = udb._pool  # noqa: SLF001 - share the pool to watch it
        with pytest.raises(NoSuchDatabaseError):
            missing.get_database()
        assert udb._pool.qsize() == 1  # noqa: SLF001
        assert _wait_until(lambda: _open_connections(strata.server) == 1)
        assert strata.server.calls["get_database"] == 2
    finally:
        udb.close()
