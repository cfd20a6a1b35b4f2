"""The catalog service and its state store: attach, detach, sync, restarts, atomicity."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from catalog.config import Settings
from catalog.exceptions import (
    AlreadyExistsError,
    InvalidInputError,
    InvalidOptionError,
    NoSuchDatabaseError,
    NoSuchTableError,
    StateStoreError,
    UdbError,
    UdbUnavailableError,
)
from catalog.models import Partition, Table
from catalog.service import CatalogService
from catalog.store import SCHEMA_VERSION, StateStore
from tests.support.fake_udb import FakeSource, FakeUdb, sample_source


def make_service(tmp_path: Path, source: FakeSource) -> CatalogService:
    return CatalogService(Settings(data_dir=tmp_path / "state"), udb_factory=source.factory)


def test_attach_lists_everything_and_survives_restart(tmp_path: Path) -> None:
    source = sample_source()
    service = make_service(tmp_path, source)
    report = service.attach_database("fake", "fake://", "sales")
    assert (report.tables.added, report.partitions.added) == (3, 6)
    service.close()

    again = make_service(tmp_path, source)
    assert again.list_databases() == ["sales"]
    assert again.list_tables("sales") == ["customers", "events", "recent_events"]
    assert len(again.partition_names("sales", "events")) == 6
    assert again.get_table("SALES", "Events").name == "events"  # names are case-insensitive
    assert again.store.schema_version() == SCHEMA_VERSION


def test_attach_name_clash_and_bad_names(tmp_path: Path) -> None:
    service = make_service(tmp_path, sample_source())
    service.attach_database("fake", "fake://", "sales")
    with pytest.raises(AlreadyExistsError, match="'sales' is already attached"):
        service.attach_database("fake", "fake://", "sales")
    with pytest.raises(InvalidInputError, match="not a valid database name"):
        service.attach_database("fake", "fake://", "sales", name="bad name;")
    with pytest.raises(InvalidInputError, match="unknown under-database type 'nope'"):
        service.attach_database("nope", "x://", "sales", name="s2")
    with pytest.raises(NoSuchDatabaseError):
        service.attach_database("fake", "fake://", "missing")
    assert service.list_databases() == ["sales"]


def test_unknown_and_bad_options_are_named(tmp_path: Path) -> None:
    service = make_service(tmp_path, sample_source())
    with pytest.raises(InvalidOptionError, match="colour"):
        service.attach_database("fake", "fake://", "sales", options={"colour": "red"})
    with pytest.raises(InvalidOptionError, match="include.tables"):
        service.attach_database("fake", "fake://", "sales", options={"include.tables": "(["})
    with pytest.raises(InvalidOptionError, match="sync.interval"):
        service.attach_database("fake", "fake://", "sales", options={"sync.interval": "soon"})
    for bad in ("inf", "1e309", "nan", "-1"):  # inf once broke the scheduler, nan became 300
        with pytest.raises(InvalidOptionError, match="sync.interval must be"):
            service.attach_database("fake", "fake://", "sales", options={"sync.interval": bad})
    assert service.list_databases() == []


def test_table_selection_options(tmp_path: Path) -> None:
    service = make_service(tmp_path, sample_source())
    service.attach_database("fake", "fake://", "sales", name="a",
                            options={"include.tables": "cust.*|events"})
    assert service.list_tables("a") == ["customers", "events"]
    service.attach_database("fake", "fake://", "sales", name="b",
                            options={"ignore.tables": "events, recent_events",
                                     "bypass.tables": "customers"})
    assert service.list_tables("b") == ["customers"]
    assert service.table_record("b", "customers").bypass is True


def test_unreachable_udb_attaches_nothing(tmp_path: Path) -> None:
    source = sample_source()
    source.unreachable = True
    service = make_service(tmp_path, source)
    with pytest.raises(UdbUnavailableError):
        service.attach_database("fake", "fake://", "sales")
    assert service.list_databases() == []


class FailingOnPartitions(FakeUdb):
    def list_partitions(self, table: Table) -> list[Partition]:
        raise UdbError("metastore went away while listing partitions")


def test_failure_midway_leaves_nothing_half_attached(tmp_path: Path) -> None:
    source = sample_source()
    service = CatalogService(
        Settings(data_dir=tmp_path / "state"),
        udb_factory=lambda t, uri, db, opts, s, fs=None: FailingOnPartitions(source, uri, db, opts))
    with pytest.raises(UdbError, match="nothing attached"):
        service.attach_database("fake", "fake://", "sales")
    assert service.list_databases() == []
    con = sqlite3.connect(tmp_path / "state" / "catalog.db")
    assert con.execute("SELECT count(*) FROM tables").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM partitions").fetchone() == (0,)


def test_sync_detects_metadata_and_data_changes(tmp_path: Path) -> None:
    source = sample_source()
    service = make_service(tmp_path, source)
    service.attach_database("fake", "fake://", "sales")
    version = service.table_record("sales", "events").version

    assert vars(service.sync("sales").tables) == {
        "unchanged": 3, "updated": 0, "added": 0, "removed": 0}
    assert service.table_record("sales", "events").version == version

    source.add_table("sales", "new_table")
    source.drop_table("sales", "customers")
    source.drop_partition("sales", "events", ["2024-01-01", "0"])
    source.add_partition("sales", "events", ["2024-01-09", "0"])
    changed = source.partitions[("sales", "events")][1]
    source.touch(changed.sd.location or "", "fp-new")  # data changed, metadata did not

    report = service.sync("sales")
    assert vars(report.tables) == {"unchanged": 1, "updated": 1, "added": 1, "removed": 1}
    assert vars(report.partitions) == {"unchanged": 4, "updated": 1, "added": 1, "removed": 1}
    assert service.list_tables("sales") == ["events", "new_table", "recent_events"]
    assert service.table_record("sales", "events").version == version + 1
    assert "dt=2024-01-01/h=0" not in service.partition_names("sales", "events")
    assert service.database_record("sales").last_sync["tables"]["added"] == 1  # type: ignore[index]


def test_sync_one_table(tmp_path: Path) -> None:
    source = sample_source()
    service = make_service(tmp_path, source)
    service.attach_database("fake", "fake://", "sales")
    source.add_partition("sales", "events", ["2024-02-01", "0"])
    source.add_table("sales", "customers", [("id", "bigint"), ("vip", "boolean")])
    report = service.sync("sales", "events")
    assert (report.tables.updated, report.partitions.added) == (1, 1)
    # only the named table was looked at
    assert [c.name for c in service.get_table("sales", "customers").sd.columns] == ["id", "name"]
    with pytest.raises(NoSuchTableError):
        service.sync("sales", "nope")


def test_sync_while_unreachable_keeps_last_good_state(tmp_path: Path) -> None:
    source = sample_source()
    service = make_service(tmp_path, source)
    service.attach_database("fake", "fake://", "sales")
    source.unreachable = True
    report = service.sync("sales")
    assert report.errors and "cannot reach" in report.errors[0]
    assert service.list_tables("sales") == ["customers", "events", "recent_events"]
    assert len(service.partition_names("sales", "events")) == 6
    source.unreachable = False
    source.drop_table("sales", "customers")
    assert service.sync("sales").tables.removed == 1


def test_detach(tmp_path: Path) -> None:
    service = make_service(tmp_path, sample_source())
    service.attach_database("fake", "fake://", "sales")
    service.detach_database("sales")
    assert service.list_databases() == []
    with pytest.raises(NoSuchDatabaseError):
        service.detach_database("sales")
    with pytest.raises(NoSuchDatabaseError):
        service.get_table("sales", "events")


def test_partition_selection(tmp_path: Path) -> None:
    service = make_service(tmp_path, sample_source())
    service.attach_database("fake", "fake://", "sales")
    assert service.select_partition_names("sales", "events", values=["", "1"]) == [
        "dt=2024-01-01/h=1", "dt=2024-01-02/h=1", "dt=2024-01-03/h=1"]
    assert service.select_partition_names(
        "sales", "events", filter_text="dt = '2024-01-02' or h < 1", max_parts=2) == [
        "dt=2024-01-01/h=0", "dt=2024-01-02/h=0"]
    with pytest.raises(InvalidInputError, match="3 partition values"):
        service.select_partition_names("sales", "events", values=["a", "b", "c"])


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    StateStore(tmp_path).close()
    con = sqlite3.connect(tmp_path / "catalog.db")
    con.execute("UPDATE schema_version SET version = 999")
    con.commit()
    con.close()
    with pytest.raises(StateStoreError, match="schema version 999"):
        StateStore(tmp_path)


def test_unwritable_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StateStoreError, match="cannot create data directory"):
        StateStore(blocker / "sub")


class RecordsGc(FakeUdb):
    seen: list[bool] = []

    def get_tables(self, names):  # type: ignore[no-untyped-def]
        RecordsGc.seen.append(__import__("gc").isenabled())
        return super().get_tables(names)


def test_bulk_fetch_pauses_the_cyclic_gc_and_restores_it(tmp_path: Path) -> None:
    import gc

    source = sample_source()
    service = CatalogService(
        Settings(data_dir=tmp_path / "state"),
        udb_factory=lambda t, uri, db, opts, s, fs=None: RecordsGc(source, uri, db, opts))
    assert gc.isenabled()
    service.attach_database("fake", "fake://", "sales")
    service.sync("sales")
    assert RecordsGc.seen == [False, False]
    assert gc.isenabled()
