"""The catalog service: the one API every front end (Thrift, REST, CLI via REST) calls.

It owns the state store and an in-memory snapshot of databases and tables that is replaced,
never mutated, after each committed change, so readers never lock. Partitions stay in the store
and are read by name; their name lists are memoised per table version.
"""

from __future__ import annotations

import gc
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from catalog.config import Settings
from catalog.exceptions import (
    AlreadyExistsError,
    CatalogError,
    InvalidInputError,
    InvalidOptionError,
    NoSuchDatabaseError,
    NoSuchPartitionError,
    NoSuchTableError,
    UdbError,
)
from catalog.models import Database, Partition, Table, parse_partition_name, partition_name
from catalog.partition_filter import compile_filter
from catalog.store import DatabaseRecord, StateStore, TableRecord
from catalog.udb import load_udb
from catalog.udb.base import UnderDatabase
from catalog.viewsql import rename_database_in_sql

#: Attach options every UDB type understands; the rest go to the connector.
COMMON_OPTIONS = frozenset({"include.tables", "ignore.tables", "bypass.tables", "sync.interval"})

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]*$")


@dataclass
class Counts:
    unchanged: int = 0
    updated: int = 0
    added: int = 0
    removed: int = 0


@dataclass
class SyncReport:
    """What one attach or sync did."""

    db: str
    tables: Counts = field(default_factory=Counts)
    partitions: Counts = field(default_factory=Counts)
    errors: list[str] = field(default_factory=list)
    #: What the under-database skipped (e.g. a folder that is no table); not a failure.
    warnings: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"db": self.db, "tables": vars(self.tables), "partitions": vars(self.partitions),
                "errors": list(self.errors), "warnings": list(self.warnings),
                "duration_s": round(self.duration_s, 3)}


@dataclass(frozen=True)
class TableOptions:
    """The table selection of an attached database (``include/ignore/bypass.tables``)."""

    include: re.Pattern[str] | None
    ignore: frozenset[str]
    bypass: frozenset[str]

    @classmethod
    def parse(cls, options: Mapping[str, str]) -> TableOptions:
        include = None
        if options.get("include.tables"):
            try:
                include = re.compile(options["include.tables"])
            except re.error as e:
                raise InvalidOptionError(f"include.tables is not a valid regex: {e}") from e
        return cls(include=include, ignore=_name_set(options.get("ignore.tables")),
                   bypass=_name_set(options.get("bypass.tables")))

    def selects(self, name: str) -> bool:
        if name.lower() in self.ignore:
            return False
        return self.include is None or self.include.fullmatch(name) is not None


def _name_set(value: str | None) -> frozenset[str]:
    return frozenset(n.strip().lower() for n in (value or "").split(",") if n.strip())


@dataclass(frozen=True)
class _Snapshot:
    databases: dict[str, DatabaseRecord]
    tables: dict[str, dict[str, TableRecord]]  # db -> lower(table name) -> record


@dataclass
class _Fetched:
    """A table as read from the UDB, already renamed for the attached database."""

    table: Table
    fingerprint: str | None
    partitions: list[tuple[str, Partition, str | None]]  # name, partition, fingerprint


class CatalogService:
    """Attach / detach / sync databases and read their metadata."""

    def __init__(self, settings: Settings | None = None,
                 udb_factory: Callable[..., UnderDatabase] | None = None) -> None:
        self.settings = settings or Settings()
        self.store = StateStore(self.settings.data_dir)
        self._udb_factory = udb_factory or load_udb
        self._db_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._snapshot = _Snapshot({}, {})
        #: Grows on every committed change: a cache key for answers derived from many tables.
        self.generation = 0
        self._reload()

    # -- snapshot --------------------------------------------------------------------------------

    def _reload(self, db: str | None = None) -> None:
        """Re-read the snapshot (all of it, or one database) after a commit."""
        with self._locks_guard:
            old = self._snapshot
            databases = dict(old.databases)
            tables = dict(old.tables)
            names = [db] if db is not None else [r.name for r in self.store.databases()]
            if db is None:
                databases, tables = {}, {}
            for name in names:
                rec = self.store.database(name)
                if rec is None:
                    databases.pop(name, None)
                    tables.pop(name, None)
                    continue
                databases[name] = rec
                tables[name] = {t.name.lower(): t for t in self.store.tables(name)}
            self._snapshot = _Snapshot(databases, tables)
            self.generation += 1

    def _lock_for(self, db: str) -> threading.Lock:
        with self._locks_guard:
            return self._db_locks.setdefault(db.lower(), threading.Lock())

    # -- reads -----------------------------------------------------------------------------------

    def list_databases(self) -> list[str]:
        return sorted(self._snapshot.databases)

    def database_record(self, db: str) -> DatabaseRecord:
        rec = self._snapshot.databases.get(db.lower())
        if rec is None:
            raise NoSuchDatabaseError(db)
        return rec

    def get_database(self, db: str) -> Database:
        return self.database_record(db).info

    def list_tables(self, db: str) -> list[str]:
        rec = self.database_record(db)
        return sorted(t.name for t in self._snapshot.tables.get(rec.name, {}).values())

    def table_records(self, db: str) -> list[TableRecord]:
        rec = self.database_record(db)
        return sorted(self._snapshot.tables.get(rec.name, {}).values(), key=lambda t: t.name)

    def table_record(self, db: str, table: str) -> TableRecord:
        rec = self.database_record(db)
        found = self._snapshot.tables.get(rec.name, {}).get(table.lower())
        if found is None:
            raise NoSuchTableError(db, table)
        return found

    def get_table(self, db: str, table: str) -> Table:
        return self.table_record(db, table).table

    def partition_names(self, db: str, table: str) -> list[str]:
        """All partition names of a table, in name order (memoised per table version)."""
        rec = self.table_record(db, table)
        return list(_partition_index(self.store, rec.id, rec.version)[0])

    def partitions_by_names(self, db: str, table: str, names: Sequence[str]) -> list[Partition]:
        """The partitions of ``names`` that exist, in the order given."""
        rec = self.table_record(db, table)
        return [r.partition for r in self.store.partitions(rec.id, names)]

    def get_partition(self, db: str, table: str, name: str) -> Partition:
        found = self.partitions_by_names(db, table, [name])
        if not found:
            raise NoSuchPartitionError(db, table, name)
        return found[0]

    def partition_name_of(self, db: str, table: str, values: Sequence[str]) -> str:
        rec = self.table_record(db, table)
        try:
            return partition_name(rec.table.partition_keys, list(values))
        except ValueError as e:
            raise InvalidInputError(f"table '{db}.{table}': {e}") from e

    def select_partition_names(self, db: str, table: str, *, values: Sequence[str] | None = None,
                               filter_text: str | None = None, max_parts: int = -1) -> list[str]:
        """Partition names matching a partial value spec (``''`` = any) and/or a Hive filter."""
        rec = self.table_record(db, table)
        keys = rec.table.partition_keys
        all_names, all_values = _partition_index(self.store, rec.id, rec.version)
        names: Sequence[str] = all_names
        if values:
            if len(values) > len(keys):
                raise InvalidInputError(
                    f"{len(values)} partition values given for table '{db}.{table}' with "
                    f"{len(keys)} partition keys")
            wanted = [(i, v) for i, v in enumerate(values) if v]
            if wanted:
                names = [n for n, pv in zip(all_names, all_values)
                         if all(pv[i] == v for i, v in wanted)]
        if filter_text is not None and filter_text.strip():
            predicate = compile_filter(filter_text, [(k.name, k.type) for k in keys])
            selected = set(names)
            names = [n for n, pv in zip(all_names, all_values) if n in selected and predicate(pv)]
        out = list(names)
        return out if max_parts is None or max_parts < 0 else out[:max_parts]

    # -- attach / detach -------------------------------------------------------------------------

    def attach_database(self, udb_type: str, uri: str, source_db: str, *, name: str | None = None,
                        options: Mapping[str, str] | None = None) -> SyncReport:
        """Adopt ``source_db`` of an under-database as ``name`` (default: the same name).

        Nothing is stored unless everything was read: a failure leaves the catalog unchanged.
        """
        options = dict(options or {})
        db_name = (name or source_db).lower()
        if not _NAME.match(db_name):
            raise InvalidInputError(f"'{db_name}' is not a valid database name "
                                    "(letters, digits, '_' and '-')")
        table_opts = TableOptions.parse(options)
        interval = _sync_interval(options)
        with self._lock_for(db_name):
            if db_name in self._snapshot.databases:
                raise AlreadyExistsError(f"database '{db_name}' is already attached")
            udb = self._open_udb(udb_type, uri, source_db, options)
            started = time.monotonic()
            try:
                info = udb.get_database().model_copy(update={"name": db_name})
                fetched, errors = self._fetch(udb, db_name, table_opts, udb.list_tables())
            finally:
                udb.close()
            if errors:
                raise UdbError(f"attach of '{source_db}' failed, nothing attached: "
                               + "; ".join(errors[:5]))
            report = SyncReport(db=db_name, warnings=list(udb.problems))
            now = time.time()
            with self.store.transaction() as conn:
                self.store.insert_database(conn, DatabaseRecord(
                    name=db_name, udb_type=udb_type, udb_uri=uri, source_db=source_db,
                    options=options, info=info, sync_interval_s=interval, attached_at=now,
                    last_sync_at=None, last_sync=None))
                for f in fetched.values():
                    table_id = self.store.insert_table(
                        conn, db_name, f.table, f.fingerprint,
                        f.table.name.lower() in table_opts.bypass, len(f.partitions))
                    self.store.upsert_partitions(
                        conn, table_id, ((n, p.model_dump_json(), fp) for n, p, fp in f.partitions))
                    report.tables.added += 1
                    report.partitions.added += len(f.partitions)
                report.duration_s = time.monotonic() - started
                self.store.record_sync(conn, db_name, now, report.to_dict())
            self._reload(db_name)
            return report

    def detach_database(self, db: str) -> None:
        rec = self.database_record(db)
        with self._lock_for(rec.name):
            with self.store.transaction() as conn:
                if not self.store.delete_database(conn, rec.name):
                    raise NoSuchDatabaseError(db)
            self._reload(rec.name)

    def _open_udb(self, udb_type: str, uri: str, source_db: str,
                  options: Mapping[str, str]) -> UnderDatabase:
        udb = self._udb_factory(udb_type, uri, source_db,
                                {k: v for k, v in options.items() if k not in COMMON_OPTIONS},
                                self.settings)
        unknown = set(options) - COMMON_OPTIONS - udb.OPTIONS
        if unknown:
            udb.close()
            known = ", ".join(sorted(COMMON_OPTIONS | udb.OPTIONS))
            raise InvalidOptionError(
                f"unknown option(s) {', '.join(sorted(unknown))} for '{udb_type}' (known: {known})")
        return udb

    def _fetch(self, udb: UnderDatabase, db_name: str, table_opts: TableOptions,
               names: Sequence[str]) -> tuple[dict[str, _Fetched], list[str]]:
        """Read ``names`` (those the options select) from the UDB, renamed for ``db_name``."""
        # Hundreds of thousands of new acyclic models: the cyclic GC would rescan the growing
        # heap again and again (half the CPU of a large attach); reference counting frees them.
        with _gc_paused():
            return self._fetch_tables(udb, db_name, table_opts, names)

    def _fetch_tables(self, udb: UnderDatabase, db_name: str, table_opts: TableOptions,
                      names: Sequence[str]) -> tuple[dict[str, _Fetched], list[str]]:
        selected = [n for n in names if table_opts.selects(n)]
        fetched: dict[str, _Fetched] = {}
        errors: list[str] = []
        source_db = udb.source_db
        try:
            for table, parts in udb.fetch_all(selected):
                table = _renamed_table(table, source_db, db_name)
                keys = table.partition_keys
                fetched[table.name.lower()] = _Fetched(
                    table=table,
                    fingerprint=None if keys or table.is_view else udb.fingerprint(
                        table.sd.location),
                    partitions=[(partition_name(keys, p.values),
                                 p.model_copy(update={"db_name": db_name}),
                                 udb.fingerprint(p.sd.location)) for p in parts])
        except CatalogError as e:
            errors.append(str(e))
        return fetched, errors

    # -- sync ------------------------------------------------------------------------------------

    def sync(self, db: str, table: str | None = None) -> SyncReport:
        """Bring an attached database (or one table) up to date with its under-database.

        Compares metadata and data fingerprints; applies every change in one transaction. If the
        UDB cannot be read the last good state stays served and the report carries the error.
        """
        rec = self.database_record(db)
        table_opts = TableOptions.parse(rec.options)
        report = SyncReport(db=rec.name)
        started = time.monotonic()
        with self._lock_for(rec.name):
            current = dict(self._snapshot.tables.get(rec.name, {}))
            try:
                udb = self._open_udb(rec.udb_type, rec.udb_uri, rec.source_db, rec.options)
            except CatalogError as e:
                report.errors.append(str(e))
                return self._finish_sync(rec.name, report, started)
            try:
                if table is not None:
                    source_names = [n for n in udb.list_tables() if n.lower() == table.lower()
                                    and table_opts.selects(n)]
                    if table.lower() not in current and not source_names:
                        raise NoSuchTableError(rec.name, table)
                    current = {k: v for k, v in current.items() if k == table.lower()}
                else:
                    source_names = udb.list_tables()
                    info = udb.get_database().model_copy(update={"name": rec.name})
                fetched, errors = self._fetch(udb, rec.name, table_opts, source_names)
            except NoSuchTableError:
                raise
            except CatalogError as e:
                report.errors.append(str(e))
                return self._finish_sync(rec.name, report, started)
            finally:
                udb.close()
            report.warnings.extend(udb.problems)
            if errors:
                report.errors.extend(errors)
                return self._finish_sync(rec.name, report, started)
            with self.store.transaction() as conn:
                if table is None and info != rec.info:
                    self.store.update_database_info(conn, rec.name, info)
                for key, old in current.items():
                    if key not in fetched:
                        self.store.delete_table(conn, old.id)
                        report.tables.removed += 1
                        report.partitions.removed += old.partition_count
                for key, f in fetched.items():
                    bypass = key in table_opts.bypass
                    old_rec = current.get(key)
                    if old_rec is None:
                        table_id = self.store.insert_table(conn, rec.name, f.table, f.fingerprint,
                                                           bypass, len(f.partitions))
                        self.store.upsert_partitions(conn, table_id, (
                            (n, p.model_dump_json(), fp) for n, p, fp in f.partitions))
                        report.tables.added += 1
                        report.partitions.added += len(f.partitions)
                        continue
                    changed_parts = self._sync_partitions(conn, old_rec, f, report)
                    if (changed_parts or old_rec.table != f.table
                            or old_rec.fingerprint != f.fingerprint or old_rec.bypass != bypass):
                        self.store.update_table(conn, old_rec.id, f.table, f.fingerprint, bypass,
                                                len(f.partitions))
                        report.tables.updated += 1
                    else:
                        report.tables.unchanged += 1
                report.duration_s = time.monotonic() - started
                self.store.record_sync(conn, rec.name, time.time(), report.to_dict())
            self._reload(rec.name)
        return report

    def _sync_partitions(self, conn: Any, old: TableRecord, f: _Fetched,
                         report: SyncReport) -> bool:
        stored = self.store.partition_fingerprints(old.id)
        upserts = []
        for name, part, fp in f.partitions:
            info = part.model_dump_json()
            prev = stored.pop(name, None)
            if prev is None:
                report.partitions.added += 1
            elif prev[0] != info or prev[1] != fp:
                report.partitions.updated += 1
            else:
                report.partitions.unchanged += 1
                continue
            upserts.append((name, info, fp))
        self.store.upsert_partitions(conn, old.id, upserts)
        self.store.delete_partitions(conn, old.id, stored)
        report.partitions.removed += len(stored)
        return bool(upserts or stored)

    def _finish_sync(self, db: str, report: SyncReport, started: float) -> SyncReport:
        report.duration_s = time.monotonic() - started
        with self.store.transaction() as conn:
            self.store.record_sync(conn, db, time.time(), report.to_dict())
        self._reload(db)
        return report

    def close(self) -> None:
        self.store.close()


# -- helpers -------------------------------------------------------------------------------------


@lru_cache(maxsize=256)
def _partition_index(store: StateStore, table_id: int, version: int
                     ) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    """A table's partition names (sorted) and their values, for one version of it."""
    names = tuple(store.partition_names(table_id))
    return names, tuple(tuple(v for _, v in parse_partition_name(n)) for n in names)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Suspend the cyclic garbage collector (process-wide) for a bulk load."""
    with _GC_LOCK:
        global _GC_PAUSES
        if _GC_PAUSES == 0 and gc.isenabled():
            gc.disable()
            _GC_PAUSES = 1
        elif _GC_PAUSES:
            _GC_PAUSES += 1
    try:
        yield
    finally:
        with _GC_LOCK:
            if _GC_PAUSES:
                _GC_PAUSES -= 1
                if _GC_PAUSES == 0:
                    gc.enable()


_GC_LOCK = threading.Lock()
_GC_PAUSES = 0


def _sync_interval(options: Mapping[str, str]) -> float | None:
    raw = options.get("sync.interval")
    if raw is None:
        return None
    try:
        value = float(raw.rstrip("s"))
    except ValueError as e:
        raise InvalidOptionError(f"sync.interval must be seconds, got '{raw}'") from e
    if value < 0:
        raise InvalidOptionError(f"sync.interval must be >= 0, got '{raw}'")
    return value


def _renamed_table(table: Table, source_db: str, db_name: str) -> Table:
    if source_db == db_name:
        return table
    update: dict[str, Any] = {"db_name": db_name}
    if table.is_view:
        update["view_original_text"] = rename_database_in_sql(
            table.view_original_text or "", source_db, db_name) or table.view_original_text
        update["view_expanded_text"] = rename_database_in_sql(
            table.view_expanded_text or "", source_db, db_name) or table.view_expanded_text
        # Spark resolves a view's unqualified names in the database recorded here.
        update["parameters"] = {
            k: (db_name if k.startswith("view.catalogAndNamespace.part.") and v == source_db
                else v) for k, v in table.parameters.items()}
    return table.model_copy(update=update)
