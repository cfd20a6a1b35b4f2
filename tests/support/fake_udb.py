"""An in-memory under-database for unit tests (no Hive, no files).

:class:`FakeSource` holds databases, tables, partitions and data fingerprints that tests mutate;
its :meth:`FakeSource.factory` has the signature of :func:`catalog.udb.load_udb` and goes into
``CatalogService(settings, udb_factory=source.factory)``. Set ``source.unreachable = True`` to make
every call raise :class:`UdbUnavailableError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from catalog.exceptions import InvalidInputError, NoSuchDatabaseError, UdbUnavailableError
from catalog.models import (
    EXTERNAL_TABLE,
    VIRTUAL_VIEW,
    Column,
    Database,
    Partition,
    StorageDescriptor,
    Table,
)
from catalog.udb.base import UnderDatabase

#: UDB type names the fake answers to.
FAKE_TYPES = frozenset({"fake", "hive"})


class FakeSource:
    """The mutable state behind every :class:`FakeUdb` opened on it."""

    def __init__(self) -> None:
        self.databases: dict[str, Database] = {}
        self.tables: dict[str, dict[str, Table]] = {}
        self.partitions: dict[tuple[str, str], list[Partition]] = {}
        self.fingerprints: dict[str, str] = {}
        self.unreachable = False
        self.opened: list[tuple[str, str, str, dict[str, str]]] = []

    # -- building / mutating -----------------------------------------------------------------

    def add_database(self, name: str, location: str | None = None) -> None:
        self.databases[name] = Database(name=name, location=location or f"/warehouse/{name}.db")
        self.tables.setdefault(name, {})

    def add_table(self, db: str, name: str, columns: Sequence[tuple[str, str]] = (("id", "int"),),
                  partition_keys: Sequence[tuple[str, str]] = (), view_sql: str | None = None,
                  **params: str) -> Table:
        location = None if view_sql else f"{self.databases[db].location}/{name}"
        table = Table(
            db_name=db, name=name, table_type=VIRTUAL_VIEW if view_sql else EXTERNAL_TABLE,
            sd=StorageDescriptor(columns=[Column(name=c, type=t) for c, t in columns],
                                 location=location),
            partition_keys=[Column(name=c, type=t) for c, t in partition_keys],
            parameters=dict(params), view_original_text=view_sql, view_expanded_text=view_sql)
        self.tables[db][name] = table
        if partition_keys:
            self.partitions.setdefault((db, name), [])
        return table

    def add_partition(self, db: str, table: str, values: Sequence[str]) -> Partition:
        t = self.tables[db][table]
        path = "/".join(f"{k.name}={v}" for k, v in zip(t.partition_keys, values))
        part = Partition(values=list(values), db_name=db, table_name=table,
                         sd=t.sd.model_copy(update={"location": f"{t.sd.location}/{path}"}))
        self.partitions[(db, table)].append(part)
        return part

    def drop_table(self, db: str, table: str) -> None:
        del self.tables[db][table]
        self.partitions.pop((db, table), None)

    def drop_partition(self, db: str, table: str, values: Sequence[str]) -> None:
        self.partitions[(db, table)] = [
            p for p in self.partitions[(db, table)] if p.values != list(values)]

    def touch(self, location: str, fingerprint: str) -> None:
        """Pretend the data under ``location`` changed."""
        self.fingerprints[location] = fingerprint

    # -- the factory -------------------------------------------------------------------------

    def factory(self, udb_type: str, uri: str, source_db: str, options: Mapping[str, str],
                settings: Any, fs: Any = None) -> FakeUdb:
        """Same signature as :func:`catalog.udb.load_udb`."""
        if udb_type not in FAKE_TYPES:
            raise InvalidInputError(f"unknown under-database type '{udb_type}' "
                                    f"(known: {', '.join(sorted(FAKE_TYPES))})")
        self.opened.append((udb_type, uri, source_db, dict(options)))
        return FakeUdb(self, uri, source_db, options)


class FakeUdb(UnderDatabase):
    """One source database of a :class:`FakeSource`."""

    OPTIONS = frozenset({"fake.flag"})

    def __init__(self, source: FakeSource, uri: str, source_db: str,
                 options: Mapping[str, str]) -> None:
        super().__init__(uri, source_db, options)
        self.source = source

    def _check(self) -> None:
        if self.source.unreachable:
            raise UdbUnavailableError(f"cannot reach under-database at {self.uri}")
        if self.source_db not in self.source.databases:
            raise NoSuchDatabaseError(self.source_db)

    def get_database(self) -> Database:
        self._check()
        return self.source.databases[self.source_db]

    def list_tables(self) -> list[str]:
        self._check()
        return sorted(self.source.tables[self.source_db])

    def get_tables(self, names: Sequence[str]) -> list[Table]:
        self._check()
        tables = self.source.tables[self.source_db]
        return [tables[n] for n in names if n in tables]

    def list_partitions(self, table: Table) -> list[Partition]:
        self._check()
        return list(self.source.partitions.get((self.source_db, table.name), []))

    def fingerprints(self, locations: Iterable[str | None]) -> dict[str, str | None]:
        self._check()
        return {loc: self.source.fingerprints.get(loc, "fp0") for loc in locations if loc}


def sample_source() -> FakeSource:
    """Database ``sales``: ``customers`` (plain), ``events`` (6 partitions by dt string, h int)
    and the view ``recent_events``."""
    src = FakeSource()
    src.add_database("sales")
    src.add_table("sales", "customers", [("id", "bigint"), ("name", "string")])
    src.add_table("sales", "events", [("id", "bigint"), ("payload", "string")],
                  partition_keys=[("dt", "string"), ("h", "int")])
    for dt in ("2024-01-01", "2024-01-02", "2024-01-03"):
        for h in ("0", "1"):
            src.add_partition("sales", "events", [dt, h])
    src.add_table("sales", "recent_events", [("id", "bigint")],
                  view_sql="SELECT id FROM sales.events WHERE dt >= '2024-01-02'")
    return src
