"""The under-database contract (``catalog.udb.base.UnderDatabase``) as one reusable test suite.

A test module provides a ``case`` fixture yielding a :class:`UdbCase` (how to open the UDB and
what its source holds) and subclasses :class:`UdbContract` as ``Test...``; every implementation
(the in-memory fake, ``directory`` on local files and on S3, ``hive`` against a real HMS and
against Strata's own Thrift server) then runs the same checks.

Also here: the sample lake written for the ``directory`` cases (locally or to S3) and the fake
source, optionally relocated onto real folders so that its locations can be fingerprinted.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from catalog.exceptions import NoSuchDatabaseError, NotFoundError
from catalog.fs.fingerprint import ABSENT
from catalog.models import ColumnStatistics, Partition, Table, partition_name
from catalog.udb.base import UnderDatabase
from tests.support.fake_udb import FakeSource, sample_source

# -- what a case is ------------------------------------------------------------------------------


@dataclass
class UdbCase:
    """One implementation under test: how to open it and what its source database holds."""

    name: str
    #: Opens a new UDB on the given source database of the case's source.
    open_db: Callable[[str], UnderDatabase]
    source_db: str
    #: ``get_database().name`` and the ``db_name`` of every table and partition.
    database_name: str
    #: Every name ``list_tables`` must answer (tables and views).
    tables: tuple[str, ...]
    plain_table: str
    partitioned_table: str
    partition_keys: tuple[str, ...]
    #: Hive names (``k1=v1/k2=v2``) of every partition of ``partitioned_table``.
    partitions: tuple[str, ...]
    #: The connector's ``OPTIONS``.
    options: frozenset[str]
    view: str | None = None
    missing_table: str = "no_such_table"
    missing_db: str = "no_such_db"
    #: A table with column statistics in the source, and the columns they cover.
    stats_table: str | None = None
    stats_columns: tuple[str, ...] = ()
    #: Changes the data under a partition location (adds a file, or the fake's ``touch``).
    change_data: Callable[[str], None] | None = None
    #: Makes a table vanish from the source (between ``list_tables`` and ``get_tables``).
    drop_table: Callable[[str], None] | None = None
    opened: list[UnderDatabase] = field(default_factory=list)

    @property
    def partition_count(self) -> int:
        return len(self.partitions)

    def open(self, source_db: str | None = None) -> UnderDatabase:
        """A new UDB on ``source_db`` (default: the case's), closed by :meth:`close_all`."""
        udb = self.open_db(self.source_db if source_db is None else source_db)
        self.opened.append(udb)
        return udb

    def close_all(self) -> None:
        for udb in self.opened:
            udb.close()
        self.opened.clear()


# -- helpers -------------------------------------------------------------------------------------


def one_table(udb: UnderDatabase, name: str) -> Table:
    tables = udb.get_tables([name])
    assert [t.name for t in tables] == [name], (name, udb.problems)
    return tables[0]


def partition_names(table: Table, parts: Sequence[Partition]) -> list[str]:
    return sorted(partition_name(table.partition_keys, p.values) for p in parts)


def data_locations(udb: UnderDatabase, case: UdbCase) -> tuple[list[str], Table, list[Partition]]:
    """Locations of the plain table and of every partition, read afresh from ``udb``."""
    plain = one_table(udb, case.plain_table)
    partitioned = one_table(udb, case.partitioned_table)
    parts = udb.list_partitions(partitioned)
    assert plain.sd.location, plain
    locations = [plain.sd.location] + [p.sd.location for p in parts if p.sd.location]
    assert len(locations) == 1 + case.partition_count
    return locations, partitioned, parts


def _by_values(parts: Sequence[Partition]) -> list[Partition]:
    return sorted(parts, key=lambda p: p.values)


# -- the contract --------------------------------------------------------------------------------


class UdbContract:
    """The checks every UDB passes; subclass as ``TestX`` next to a ``case`` fixture."""

    def test_is_an_under_database_with_options(self, case: UdbCase) -> None:
        udb = case.open()
        assert isinstance(udb, UnderDatabase)
        assert udb.source_db == case.source_db
        assert isinstance(udb.OPTIONS, frozenset)
        assert all(isinstance(o, str) for o in udb.OPTIONS)
        assert udb.OPTIONS == case.options
        assert udb.problems == []

    def test_get_database_names_the_database(self, case: UdbCase) -> None:
        db = case.open().get_database()
        assert db.name == case.database_name
        assert db.location, db

    def test_list_tables_lists_tables_and_views(self, case: UdbCase) -> None:
        names = case.open().list_tables()
        assert names == sorted(case.tables)
        assert case.plain_table in names and case.partitioned_table in names
        if case.view is not None:
            assert case.view in names

    def test_get_tables_returns_tables_for_known_names(self, case: UdbCase) -> None:
        udb = case.open()
        wanted = [case.partitioned_table, case.plain_table] + ([case.view] if case.view else [])
        tables = udb.get_tables(wanted)
        assert all(isinstance(t, Table) for t in tables)
        assert sorted(t.name for t in tables) == sorted(wanted)
        by_name = {t.name: t for t in tables}
        for t in tables:
            assert t.db_name == case.database_name
        plain = by_name[case.plain_table]
        assert not plain.is_view and plain.partition_keys == []
        assert plain.sd.location and plain.sd.columns
        partitioned = by_name[case.partitioned_table]
        assert tuple(k.name for k in partitioned.partition_keys) == case.partition_keys
        assert partitioned.sd.location and partitioned.sd.columns
        assert not {c.name for c in partitioned.sd.columns} & set(case.partition_keys)
        if case.view is not None:
            view = by_name[case.view]
            assert view.is_view and view.view_original_text
        assert udb.get_tables([]) == []

    def test_get_tables_leaves_out_unknown_names(self, case: UdbCase) -> None:
        udb = case.open()
        tables = udb.get_tables([case.missing_table, case.plain_table, case.missing_table + "2"])
        assert [t.name for t in tables] == [case.plain_table]
        assert udb.get_tables([case.missing_table]) == []

    def test_get_tables_leaves_out_vanished_tables(self, case: UdbCase) -> None:
        if case.drop_table is None:
            pytest.skip(f"{case.name}: the source cannot drop a table")
        udb = case.open()
        names = udb.list_tables()
        assert case.plain_table in names
        case.drop_table(case.plain_table)
        tables = udb.get_tables(names)
        assert sorted(t.name for t in tables) == sorted(n for n in names if n != case.plain_table)
        fetched = [t.name for t, _ in udb.fetch_all(names)]
        assert sorted(fetched) == sorted(n for n in names if n != case.plain_table)

    def test_list_partitions_of_the_partitioned_table(self, case: UdbCase) -> None:
        udb = case.open()
        table = one_table(udb, case.partitioned_table)
        parts = udb.list_partitions(table)
        assert all(isinstance(p, Partition) for p in parts)
        assert len(parts) == case.partition_count
        assert partition_names(table, parts) == sorted(case.partitions)
        base = (table.sd.location or "").rstrip("/")
        for p in parts:
            assert len(p.values) == len(case.partition_keys)
            assert (p.db_name, p.table_name) == (case.database_name, case.partitioned_table)
            assert p.sd.location, p
            assert p.sd.location.rstrip("/") == f"{base}/{partition_name(table.partition_keys, p.values)}"
            assert p.sd.columns == table.sd.columns
        assert udb.list_partitions(one_table(udb, case.plain_table)) == []
        if case.view is not None:
            assert udb.list_partitions(one_table(udb, case.view)) == []

    def test_fetch_all_equals_get_tables_and_list_partitions(self, case: UdbCase) -> None:
        udb = case.open()
        names = udb.list_tables()
        fetched = {t.name: (t, parts) for t, parts in udb.fetch_all(names + [case.missing_table])}
        assert sorted(fetched) == sorted(names)
        other = case.open()
        for table in other.get_tables(names):
            got, parts = fetched[table.name]
            assert got == table
            assert _by_values(parts) == _by_values(other.list_partitions(table))
        assert len(fetched[case.partitioned_table][1]) == case.partition_count
        assert list(udb.fetch_all([])) == []

    def test_fingerprints_a_digest_per_location_stable(self, case: UdbCase) -> None:
        udb = case.open()
        locations, _, _ = data_locations(udb, case)
        fps = udb.fingerprints(locations)
        assert set(fps) == set(locations)
        for loc in locations:
            value = fps[loc]
            assert isinstance(value, str) and value and value != ABSENT, (loc, value)
        assert udb.fingerprints(locations) == fps
        assert udb.fingerprint(locations[-1]) == fps[locations[-1]]
        assert udb.fingerprint(None) is None
        assert udb.fingerprints([None, locations[0]]) == {locations[0]: fps[locations[0]]}
        fresh = case.open()
        data_locations(fresh, case)
        assert fresh.fingerprints(locations) == fps

    def test_fingerprints_change_with_the_data(self, case: UdbCase) -> None:
        if case.change_data is None:
            pytest.skip(f"{case.name}: the source data cannot be changed")
        udb = case.open()
        locations, _, _ = data_locations(udb, case)
        before = udb.fingerprints(locations)
        changed = locations[1]  # the first partition
        case.change_data(changed)
        # Read again, as every sync does, then fingerprint.
        again, _, _ = data_locations(udb, case)
        assert sorted(again) == sorted(locations)
        after = udb.fingerprints(locations)
        assert after[changed] != before[changed]
        assert {k: v for k, v in after.items() if k != changed} == {
            k: v for k, v in before.items() if k != changed}
        fresh = case.open()
        data_locations(fresh, case)
        assert fresh.fingerprints(locations) == after

    def test_missing_database_raises_no_such_database(self, case: UdbCase) -> None:
        udb = case.open(case.missing_db)
        with pytest.raises(NoSuchDatabaseError) as info:
            udb.get_database()
        assert isinstance(info.value, NotFoundError)
        assert case.missing_db in str(info.value)
        try:
            names = udb.list_tables()
        except NoSuchDatabaseError:
            pass
        else:
            assert names == []  # an HMS lists no tables of a missing database
        udb.close()

    def test_column_statistics_are_copied(self, case: UdbCase) -> None:
        if case.stats_table is None:
            pytest.skip(f"{case.name}: the source has no column statistics")
        table = one_table(case.open(), case.stats_table)
        assert all(isinstance(s, ColumnStatistics) for s in table.column_stats)
        assert sorted(s.column for s in table.column_stats) == sorted(case.stats_columns)
        columns = {c.name: c.type for c in table.sd.columns}
        for s in table.column_stats:
            assert s.kind != "none" and s.data, s
            assert columns[s.column] == s.type

    def test_clean_source_reports_no_problems(self, case: UdbCase) -> None:
        udb = case.open()
        read = list(udb.fetch_all(udb.list_tables()))
        assert len(read) == len(case.tables)
        assert udb.problems == []

    def test_close_after_use(self, case: UdbCase) -> None:
        udb = case.open()
        assert case.plain_table in udb.list_tables()
        list(udb.fetch_all([case.plain_table, case.partitioned_table]))
        udb.close()
        udb.close()  # a second close is harmless


# -- the sample lake (directory cases) -----------------------------------------------------------

LAKE_DB = "sales"
LAKE_TABLES = ("customers", "events")
LAKE_PARTITION_KEYS = ("dt", "h")
LAKE_PARTITIONS = tuple(f"dt={dt}/h={h}" for dt in ("2024-01-01", "2024-01-02", "2024-01-03")
                        for h in ("0", "1"))
LAKE_OPTIONS = frozenset({"format", "csv.delimiter", "csv.header", "csv.quoted"})


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def events_parquet(first_id: int) -> bytes:
    """A data file of the ``events`` table (same schema in every partition)."""
    return parquet_bytes(pa.table({"id": pa.array([first_id, first_id + 1], pa.int64()),
                                   "payload": [f"p{first_id}", f"p{first_id + 1}"]}))


def lake_files() -> dict[str, bytes]:
    """``sales/customers`` (plain Parquet) and ``sales/events`` (6 partitions by dt, h), as
    relative path -> bytes."""
    files = {f"{LAKE_DB}/customers/part-0.parquet": parquet_bytes(pa.table({
        "id": pa.array([1, 2, 3], pa.int64()), "name": ["a", "b", "c"]}))}
    for i, part in enumerate(LAKE_PARTITIONS):
        files[f"{LAKE_DB}/events/{part}/part-0.parquet"] = events_parquet(10 * i)
    return files


def write_local_lake(root: Path) -> None:
    for rel, data in lake_files().items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def local_path(location: str) -> Path:
    """The local path of a ``file:`` location (or of a plain absolute path)."""
    if location.startswith("file://"):
        return Path(location[len("file://"):])
    if location.startswith("file:"):
        return Path(location[len("file:"):])
    return Path(location)


# -- the fake source (fake and hive-on-Strata cases) ---------------------------------------------

SAMPLE_DB = "sales"
SAMPLE_TABLES = ("customers", "events", "recent_events")
SAMPLE_PARTITION_KEYS = ("dt", "h")
SAMPLE_PARTITIONS = LAKE_PARTITIONS
SAMPLE_STATS_COLUMNS = ("id",)


def contract_source(root: Path | None = None) -> FakeSource:
    """:func:`sample_source` with column statistics on ``customers``; with ``root``, every
    location moves under ``file://<root>`` and each table/partition folder gets a data file (so
    the locations can be fingerprinted and changed)."""
    src = sample_source()
    customers = src.tables[SAMPLE_DB]["customers"]
    src.tables[SAMPLE_DB]["customers"] = customers.model_copy(update={"column_stats": [
        ColumnStatistics(column="id", type="bigint", kind="long",
                         data={"lowValue": 1, "highValue": 99, "numNulls": 0, "numDVs": 42})]})
    if root is None:
        return src
    old = "/warehouse"
    new = "file://" + root.resolve().as_posix()

    def moved(location: str | None) -> str | None:
        if location is None:
            return None
        assert location.startswith(old), location
        return new + location[len(old):]

    for name, db in list(src.databases.items()):
        src.databases[name] = db.model_copy(update={"location": moved(db.location)})
    for db_name, tables in src.tables.items():
        for name, t in list(tables.items()):
            tables[name] = t.model_copy(update={
                "sd": t.sd.model_copy(update={"location": moved(t.sd.location)})})
    for key, parts in src.partitions.items():
        src.partitions[key] = [p.model_copy(update={
            "sd": p.sd.model_copy(update={"location": moved(p.sd.location)})}) for p in parts]
    locations = [t.sd.location for tables in src.tables.values() for t in tables.values()
                 if t.sd.location and not t.partition_keys]
    locations += [p.sd.location for parts in src.partitions.values() for p in parts
                  if p.sd.location]
    for location in locations:
        folder = local_path(location)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "part-0.txt").write_text("1\n")
    return src
