"""The catalog service: the one API every front end (Thrift, REST, CLI via REST) calls.

It owns the state store, the namespace (:mod:`catalog.fs`, the only door to storage) and an
in-memory snapshot of databases and tables that is replaced, never mutated, after each committed
change, so readers never lock. Partitions stay in the store and are read by name; their name
lists are memoised per table version in a byte-bounded cache.

It also owns the layouts: a partition (or an unpartitioned table) is served from its source or
from its current transformed layout, as :mod:`catalog.serving` decides; :meth:`switch_layouts`
changes layouts in one transaction and bumps the table version, and a sync that sees a
transformed partition's source change serves its source again in the same transaction.
"""

from __future__ import annotations

import gc
import hashlib
import heapq
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from catalog.config import Settings
from catalog.exceptions import (
    AlreadyExistsError,
    CatalogError,
    InUseError,
    InvalidInputError,
    InvalidOptionError,
    NoSuchDatabaseError,
    NoSuchPartitionError,
    NoSuchTableError,
    UdbError,
)
from catalog.fs.cached import open_block_store
from catalog.fs.namespace import Mount, Namespace, redact
from catalog.fs.ufs import fold_scheme, is_within, normalize_uri
from catalog.access import check_attach_allowed
from catalog.options import seconds_option
from catalog.models import (
    Database,
    Layout,
    Partition,
    Table,
    parse_partition_name,
    partition_name,
)
from catalog.partition_filter import compile_filter
from catalog.serving import (
    SERVE_CACHED,
    ClientView,
    ServePolicy,
    served_database,
    served_partition,
    served_table,
)
from catalog.store import DatabaseRecord, PartitionRecord, StateStore, TableRecord
from catalog.transform.policy import TransformPolicy, is_transform_option
from catalog.udb import load_udb
from catalog.udb.base import UnderDatabase
from catalog.views import (
    DatabaseDetail,
    DatabaseSummary,
    LayoutSummary,
    LocationOwner,
    PartitionOut,
    SyncReport,
    TableDetail,
    TableSummary,
)
from catalog.viewsql import rename_database_in_sql

#: Attach options every UDB type understands; the rest go to the connector.
COMMON_OPTIONS = frozenset({"include.tables", "ignore.tables", "bypass.tables", "sync.interval",
                            "serve.mode"})
#: Every HMS has a database "default" (Spark creates it at start-up if it is missing), so one
#: is served, empty, until a database is attached under that name.
DEFAULT_DB = "default"

#: A database name: letters, digits, '_' and '-', not starting with '-', at most Hive's 128
#: characters (``\Z``: a trailing newline is not let through as ``$`` would).
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]{0,127}\Z")


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
    layout_counts: dict[int, int]  # table id -> partitions with a current transformed layout


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
        self.fs = Namespace(self.store, root_ufs=self.settings.root_ufs,
                            root_options=self.settings.root_ufs_options,
                            list_parallelism=self.settings.fs_list_parallelism,
                            cache=open_block_store(self.settings.cache_tiers, self.store,
                                                   lambda uri: self.fs.delete_uri(uri)))
        self._udb_factory = udb_factory or load_udb
        self._db_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._snapshot = _Snapshot({}, {}, {})
        self._partition_indexes = _PartitionIndexCache(self.settings.partition_index_cache_bytes)
        self._location_index: tuple[int, _LocationIndex] | None = None
        #: Grows on every committed change: a cache key for answers derived from many tables.
        self.generation = 0
        #: Called after a sync committed, with the database and, per table that has or had
        #: transformed layouts, the partitions now served from their source that should be
        #: transformed again (reverted or new); the transformation policy listens here.
        self.sync_listeners: list[Callable[[str, dict[str, list[str]]], None]] = []
        self._reload()
        from catalog.transform.jobs import TransformService

        #: Transformation jobs over this catalog (started by the server process).
        self.transforms = TransformService(self)

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
            self._snapshot = _Snapshot(databases, tables, self.store.current_layout_counts())
            self.generation += 1

    def _partition_index(self, rec: TableRecord) -> _PartitionIndex:
        key = (rec.id, rec.version)
        index = self._partition_indexes.get(key)
        if index is None:
            names = tuple(self.store.partition_names(rec.id))
            index = (names, tuple(tuple(v for _, v in parse_partition_name(n)) for n in names))
            self._partition_indexes.put(key, index)
        return index

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
        return list(self._partition_index(rec)[0])

    def partitions_by_names(self, db: str, table: str, names: Sequence[str]) -> list[Partition]:
        """The partitions of ``names`` that exist, in the order given."""
        rec = self.table_record(db, table)
        return [r.partition for r in self.store.partitions(rec.id, names)]

    def get_partition(self, db: str, table: str, name: str) -> Partition:
        found = self.partitions_by_names(db, table, [name])
        if not found:
            raise NoSuchPartitionError(db, table, name)
        return found[0]

    # -- served metadata (the served-location policy applied) ----------------------------------

    def _policy(self, rec: DatabaseRecord) -> ServePolicy:
        return ServePolicy.parse(rec.options)

    def served_database_names(self) -> list[str]:
        """Attached databases, plus the empty ``default`` every HMS has."""
        names = self.list_databases()
        return names if DEFAULT_DB in names else sorted([*names, DEFAULT_DB])

    def served_database(self, db: str, view: ClientView = ClientView.VERBATIM) -> Database:
        try:
            return served_database(self.get_database(db), view)
        except NoSuchDatabaseError:
            if db.lower() != DEFAULT_DB:
                raise
        location = (self.settings.data_dir / "warehouse").resolve().as_uri()
        return served_database(Database(name=DEFAULT_DB, description="Default Hive database",
                                        location=location, owner_name="public",
                                        owner_type="ROLE"), view)

    def _layouts_of(self, rec: TableRecord, names: Sequence[str]) -> dict[str, Layout]:
        if not self._snapshot.layout_counts.get(rec.id):
            return {}
        db = self.database_record(rec.db_name)
        if not self._policy(db).uses_layouts(rec.name):
            return {}
        return self.store.current_layouts(rec.id, names)

    def served_table(self, db: str, table: str,
                     view: ClientView = ClientView.VERBATIM) -> Table:
        """The table as engines see it (its layout, in the client's spelling)."""
        rec = self.table_record(db, table)
        layout = None if rec.table.partition_keys else self._layouts_of(rec, [""]).get("")
        return served_table(rec.table, layout, view, self._locate(rec.db_name))

    def _locate(self, db: str) -> Callable[[str], str] | None:
        """The location mapping of a database served ``cached`` (None: direct)."""
        if self._policy(self.database_record(db)).mode != SERVE_CACHED:
            return None
        return self.gateway_location

    def gateway_location(self, location: str) -> str:
        """``location`` as the S3 gateway serves it: ``s3://<bucket>/<key>`` for namespace path
        ``/<bucket>/<key>`` of the mount holding it; a location no mount holds (its mount was
        removed) is served as it is, still the right data."""
        found = self.fs.reverse(location)
        if found is None:
            return location
        bucket, _, key = found[1].lstrip("/").partition("/")
        return f"s3://{bucket}/{key}"

    def _mount_for_gateway(self, locations: Iterable[str | None], options: Mapping[str, str]
                           ) -> list[str]:
        """Mount (read-only) the storage of each location no mount holds, so that the gateway
        serves it (``serve.mode=cached``); returns the new mount points. An S3 location gets its
        bucket mounted (``s3.*`` attach options as the mount's), a local one its parent folder."""
        made: list[str] = []
        s3_options = {k: v for k, v in options.items() if k.startswith("s3.")}
        for location in sorted({loc for loc in locations if loc}):
            if self.fs.reverse(location) is not None:
                continue
            uri = normalize_uri(location)
            scheme = uri.split(":", 1)[0]
            if scheme in ("s3", "s3a"):
                root = "s3://" + uri.split("/", 3)[2]
                base, mount_options = uri.split("/", 3)[2], {**s3_options, "readonly": "true"}
            else:
                root = uri.rstrip("/").rsplit("/", 1)[0] or uri
                tail = root.rstrip("/").rsplit("/", 1)[-1] or "root"
                digest = hashlib.sha1(root.encode("utf-8", "surrogateescape")).hexdigest()[:8]
                base, mount_options = f"{tail}-{digest}", {"readonly": "true"}
            name = re.sub(r"[^a-z0-9-]+", "-", base.lower()).strip("-")[:54] or "store"
            for candidate in [name] + [f"{name}-{i}" for i in range(2, 50)]:
                if any(m.path == f"/{candidate}" for m in self.fs.mounts()):
                    continue
                for target in (root, uri):  # the parent, else the location itself
                    try:
                        self.fs.mount(f"/{candidate}", target, mount_options)
                    except CatalogError:
                        continue
                    made.append(f"/{candidate}")
                    break
                break
            if self.fs.reverse(location) is None:
                raise InvalidInputError(
                    f"serve.mode=cached: cannot mount the storage of {location} for the S3 "
                    "gateway; mount it yourself (catalogctl fs mount) and attach again")
        return made

    def served_partitions(self, db: str, table: str, names: Sequence[str],
                          view: ClientView = ClientView.VERBATIM) -> list[tuple[str, Partition]]:
        """(name, partition as served) of the ``names`` that exist, in the order given."""
        return [(r.name, served) for r, _, served in
                self._served(self.table_record(db, table), names, view)]

    def _served(self, rec: TableRecord, names: Sequence[str], view: ClientView
                ) -> list[tuple[PartitionRecord, Layout | None, Partition]]:
        """(stored record, current layout, partition as served) of the ``names`` that exist."""
        found = self.store.partitions(rec.id, names)
        layouts = self._layouts_of(rec, [r.name for r in found])
        locate = self._locate(rec.db_name)
        return [(r, layouts.get(r.name),
                 served_partition(r.partition, layouts.get(r.name), view, locate))
                for r in found]

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
        all_names, all_values = self._partition_index(rec)
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
            shown = repr(db_name[:64])[1:-1] + ("..." if len(db_name) > 64 else "")
            raise InvalidInputError(f"'{shown}' is not a valid database name (letters, digits, "
                                    "'_' and '-', not starting with '-', at most 128 characters)")
        table_opts = TableOptions.parse(options)
        interval = _sync_interval(options)
        ServePolicy.parse(options)
        TransformPolicy.parse(options)
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
            if ServePolicy.parse(options).mode == SERVE_CACHED:
                self._mount_for_gateway(_locations_of(fetched.values()), options)
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
                    self.store.upsert_partitions(conn, table_id, _partition_rows(f.partitions))
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
        # The server's policy first: nothing is read nor connected to before it allows it.
        check_attach_allowed(self.settings, self.fs, udb_type, uri, source_db)
        udb = self._udb_factory(udb_type, uri, source_db,
                                {k: v for k, v in options.items() if not _common_option(k)},
                                self.settings, fs=self.fs)
        unknown = {k for k in options if not _common_option(k)} - udb.OPTIONS
        if unknown:
            udb.close()
            known = ", ".join(sorted(COMMON_OPTIONS | udb.OPTIONS))
            shown = heapq.nsmallest(5, unknown)  # the first five, without sorting them all
            more = f" and {len(unknown) - len(shown)} more" if len(unknown) > len(shown) else ""
            raise InvalidOptionError(
                f"unknown option(s) {', '.join(repr(k)[1:-1][:64] for k in shown)}{more} "
                f"for '{udb_type}' (known: {known})")
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
            read = [(_renamed_table(t, source_db, db_name), parts)
                    for t, parts in udb.fetch_all(selected)]
            # One parallel listing for every location of the batch.
            fps = udb.fingerprints(
                [t.sd.location for t, _ in read if not t.partition_keys and not t.is_view]
                + [p.sd.location for _, parts in read for p in parts])
            for table, parts in read:
                keys = table.partition_keys
                fetched[table.name.lower()] = _Fetched(
                    table=table,
                    fingerprint=None if keys or table.is_view or not table.sd.location
                    else fps.get(table.sd.location),
                    partitions=[(partition_name(keys, p.values),
                                 p.model_copy(update={"db_name": db_name}),
                                 fps.get(p.sd.location) if p.sd.location else None)
                                for p in parts])
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
            if self._policy(rec).mode == SERVE_CACHED:
                try:
                    self._mount_for_gateway(_locations_of(fetched.values()), rec.options)
                except CatalogError as e:
                    report.warnings.append(str(e))
            retransform: dict[str, list[str]] = {}
            with self.store.transaction() as conn:
                if table is None and info != rec.info:
                    self.store.update_database_info(conn, rec.name, info)
                # Tables the UDB could not read now (a file unreadable or vanished while read):
                # not a verdict on the table, so their last synced state stays served.
                unreadable: Mapping[str, str] = udb.unreadable
                for key, old in current.items():
                    if key not in fetched and key in unreadable:
                        report.warnings.append(
                            f"table '{rec.name}.{old.name}' still served as last synced: its "
                            "data could not be read now (see the warning above)")
                        report.tables.unchanged += 1
                        continue
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
                        self.store.upsert_partitions(conn, table_id,
                                                     _partition_rows(f.partitions))
                        report.tables.added += 1
                        report.partitions.added += len(f.partitions)
                        continue
                    changed_parts, again = self._sync_partitions(conn, old_rec, f, report)
                    table_changed = (old_rec.table != f.table
                                     or old_rec.fingerprint != f.fingerprint)
                    transformed = bool(self._snapshot.layout_counts.get(old_rec.id))
                    if table_changed and not f.table.partition_keys:
                        reverted = self.store.retire_layouts(conn, old_rec.id, [""])
                        report.layouts_reverted += reverted
                        again = [""] if reverted else []
                    elif transformed and (
                            old_rec.table.sd.columns != f.table.sd.columns
                            or old_rec.table.partition_keys != f.table.partition_keys):
                        # A new schema: no transformed copy of the old one is served.
                        report.layouts_reverted += self.store.retire_layouts(
                            conn, old_rec.id, list(self.store.current_layouts(old_rec.id)))
                        again = [name for name, _, _ in f.partitions]
                    if transformed and again:
                        retransform[f.table.name] = again
                    if changed_parts or table_changed or old_rec.bypass != bypass:
                        self.store.update_table(conn, old_rec.id, f.table, f.fingerprint, bypass,
                                                len(f.partitions))
                        report.tables.updated += 1
                    else:
                        report.tables.unchanged += 1
                report.duration_s = time.monotonic() - started
                self.store.record_sync(conn, rec.name, time.time(), report.to_dict())
            self._reload(rec.name)
        if retransform:
            for listener in list(self.sync_listeners):
                listener(rec.name, retransform)
        return report

    def _sync_partitions(self, conn: Any, old: TableRecord, f: _Fetched,
                         report: SyncReport) -> tuple[bool, list[str]]:
        """Apply the partition changes of one table; returns whether any changed and, if the
        table is transformed, the partitions to transform again (reverted or added)."""
        stored = self.store.partition_fingerprints(old.id)
        upserts = []
        added: set[str] = set()
        for name, part, fp in f.partitions:
            info = part.model_dump_json()
            prev = stored.pop(name, None)
            if prev is None:
                added.add(name)
                report.partitions.added += 1
            elif prev[0] != info or prev[1] != fp:
                report.partitions.updated += 1
            else:
                report.partitions.unchanged += 1
                continue
            upserts.append((name, info, fp, part.sd.location))
        self.store.upsert_partitions(conn, old.id, upserts)
        self.store.delete_partitions(conn, old.id, stored)
        report.partitions.removed += len(stored)
        again: list[str] = []
        if self._snapshot.layout_counts.get(old.id):
            # A transformed partition whose source changed is served from its source again.
            changed = [u[0] for u in upserts if u[0] not in added]
            had_layout = set(self.store.current_layouts(old.id, changed))
            report.layouts_reverted += self.store.retire_layouts(
                conn, old.id, changed + list(stored))
            again = sorted(had_layout | added)
        return bool(upserts or stored), again

    def _finish_sync(self, db: str, report: SyncReport, started: float) -> SyncReport:
        report.duration_s = time.monotonic() - started
        with self.store.transaction() as conn:
            self.store.record_sync(conn, db, time.time(), report.to_dict())
        self._reload(db)
        return report

    # -- layouts ---------------------------------------------------------------------------------

    def switch_layouts(self, db: str, table: str, layouts: Sequence[Layout], *,
                       on_commit: Callable[[Any, int], None] | None = None) -> int:
        """Serve ``layouts`` (one per partition, ``''`` for an unpartitioned table) from now on,
        all in one transaction; returns the new table version.

        A layout made from a source that has changed since (its ``source_fingerprint`` differs
        from the stored one) is refused: it would serve stale data. ``on_commit(conn,
        new_version)`` runs inside the same transaction (a job records its success there, so a
        crash leaves both or neither).
        """
        if not layouts:
            raise InvalidInputError("no layouts to switch")
        rec = self.table_record(db, table)
        with self._lock_for(rec.db_name):
            rec = self.table_record(db, table)
            parts = {} if not rec.table.partition_keys else {
                r.name: r for r in self.store.partitions(rec.id, [lay.partition for lay in layouts])}
            seen: set[str] = set()
            for lay in layouts:
                if lay.partition in seen:
                    raise InvalidInputError(f"two layouts for partition '{lay.partition}'")
                seen.add(lay.partition)
                if rec.table.partition_keys:
                    part = parts.get(lay.partition)
                    if part is None:
                        raise NoSuchPartitionError(rec.db_name, rec.name, lay.partition)
                    stored_fp = part.fingerprint
                elif lay.partition:
                    raise InvalidInputError(f"table '{rec.db_name}.{rec.name}' is not "
                                            f"partitioned: its layout is partition ''")
                else:
                    stored_fp = rec.fingerprint
                if lay.source_fingerprint is not None and lay.source_fingerprint != stored_fp:
                    raise InUseError(
                        f"the source of '{rec.db_name}.{rec.name}' "
                        f"{lay.partition or '(table)'} changed since its layout was made; "
                        "transform it again")
            base = self.store.max_layout_version(rec.id)
            with self.store.transaction() as conn:
                for i, lay in enumerate(layouts):
                    version = lay.version if lay.version > base else base + 1 + i
                    self.store.insert_layout(conn, rec.id, lay.model_copy(update={
                        "version": version, "created_at": lay.created_at or time.time()}))
                self.store.bump_table_version(conn, rec.id)
                if on_commit is not None:
                    on_commit(conn, rec.version + 1)
            self._reload(rec.db_name)
            return self.table_record(db, table).version

    def revert_layouts(self, db: str, table: str, partitions: Sequence[str] | None = None) -> int:
        """Serve the source again (every partition, or those named); returns how many were
        transformed."""
        rec = self.table_record(db, table)
        with self._lock_for(rec.db_name):
            names = list(partitions) if partitions is not None else list(
                self.store.current_layouts(rec.id))
            with self.store.transaction() as conn:
                count = self.store.retire_layouts(conn, rec.id, names)
                if count:
                    self.store.bump_table_version(conn, rec.id)
            self._reload(rec.db_name)
            return count

    def current_layouts(self, db: str, table: str) -> dict[str, Layout]:
        """partition name -> its current transformed layout (served or bypassed)."""
        rec = self.table_record(db, table)
        return self.store.current_layouts(rec.id) if self._snapshot.layout_counts.get(
            rec.id) else {}

    # -- which table owns a path ----------------------------------------------------------------

    def _locations(self) -> _LocationIndex:
        with self._locks_guard:
            cached = self._location_index
            if cached is not None and cached[0] == self.generation:
                return cached[1]
            generation = self.generation
        snapshot = self._snapshot
        by_id = {t.id: t for tables in snapshot.tables.values() for t in tables.values()}
        index = _LocationIndex()
        for t in by_id.values():
            if t.table.sd.location:
                index.add(t.table.sd.location, LocationOwner(
                    db=t.db_name, table=t.name, location=t.table.sd.location))
        for table_id, name, location in self.store.partition_locations():
            owner = by_id.get(table_id)
            if owner is not None:
                index.add(location, LocationOwner(db=owner.db_name, table=owner.name,
                                                  partition=name, location=location))
        for table_id in snapshot.layout_counts:
            owner = by_id.get(table_id)
            if owner is None:
                continue
            for name, lay in self.store.current_layouts(table_id).items():
                index.add(lay.location, LocationOwner(
                    db=owner.db_name, table=owner.name, partition=name or None,
                    layout_version=lay.version, location=lay.location))
        with self._locks_guard:
            self._location_index = (generation, index)
        return index

    def owner_of(self, location: str) -> LocationOwner | None:
        """The table (partition, layout) whose data lives at or above ``location``."""
        return self._locations().owner_of(location)

    # -- the namespace ---------------------------------------------------------------------------

    def mount(self, path: str, ufs_uri: str, options: Mapping[str, str] | None = None) -> Mount:
        return self.fs.mount(path, ufs_uri, options)

    def unmount(self, path: str) -> None:
        """Unmount; refused while an attached database or a served location lives under it."""
        self.fs.unmount(path, in_use=self._mount_users)

    def _mount_users(self, mount: Mount) -> list[str]:
        users: list[str] = []
        for rec in self._snapshot.databases.values():
            uri = rec.udb_uri
            if uri.startswith("strata:"):
                path = "/" + uri[len("strata:"):].lstrip("/")
                if path == mount.path or path.startswith(mount.path.rstrip("/") + "/"):
                    users.append(f"database '{rec.name}' ({uri})")
        users += sorted({f"table '{o.db}.{o.table}'"
                         for o in self._locations().within(mount.ufs_uri)})
        return users

    # -- answers for the front ends --------------------------------------------------------------

    def database_summary(self, db: str) -> DatabaseSummary:
        rec = self.database_record(db)
        return DatabaseSummary(
            name=rec.name, udb_type=rec.udb_type, uri=rec.udb_uri, source_db=rec.source_db,
            table_count=len(self._snapshot.tables.get(rec.name, {})),
            serve_mode=self._policy(rec).mode, attached_at=_ts(rec.attached_at),
            last_sync_at=_ts(rec.last_sync_at) if rec.last_sync_at else None,
            last_sync=SyncReport.model_validate(rec.last_sync) if rec.last_sync else None)

    def database_summaries(self) -> list[DatabaseSummary]:
        out = []
        for name in self.list_databases():
            try:
                out.append(self.database_summary(name))
            except NoSuchDatabaseError:  # detached meanwhile
                continue
        return out

    def database_detail(self, db: str) -> DatabaseDetail:
        rec = self.database_record(db)
        interval = (rec.sync_interval_s if rec.sync_interval_s is not None
                    else self.settings.sync_interval_s)
        return DatabaseDetail(**dict(self.database_summary(db)), database=rec.info,
                              options=redact(rec.options), sync_interval_s=interval)

    def _layout_summary(self, rec: TableRecord) -> LayoutSummary:
        count = self._snapshot.layout_counts.get(rec.id, 0)
        db = self.database_record(rec.db_name)
        if not count or not self._policy(db).uses_layouts(rec.name):
            return LayoutSummary(kind="source")
        if not rec.table.partition_keys:
            lay = self.store.current_layouts(rec.id, [""]).get("")
            return LayoutSummary(kind="transformed", transformed_partitions=0,
                                 version=lay.version if lay else None)
        kind = "transformed" if count >= rec.partition_count else "mixed"
        return LayoutSummary(kind=kind, transformed_partitions=count)

    def table_summaries(self, db: str, view: ClientView = ClientView.VERBATIM
                        ) -> list[TableSummary]:
        out = []
        for rec in self.table_records(db):
            served = self.served_table(db, rec.name, view)
            out.append(TableSummary(
                name=rec.name, type=rec.table.table_type, location=served.sd.location,
                version=rec.version, partition_count=rec.partition_count, bypass=rec.bypass,
                layout=self._layout_summary(rec).kind))
        return out

    def table_detail(self, db: str, table: str,
                     view: ClientView = ClientView.VERBATIM) -> TableDetail:
        rec = self.table_record(db, table)
        served = self.served_table(db, table, view)
        return TableDetail(**dict(served), id=rec.id, version=rec.version,
                           partition_count=rec.partition_count,
                           layout=self._layout_summary(rec), location=served.sd.location,
                           source_location=rec.table.sd.location, bypass=rec.bypass,
                           fingerprint=rec.fingerprint)

    def partition_outs(self, db: str, table: str, names: Sequence[str],
                       view: ClientView = ClientView.VERBATIM) -> list[PartitionOut]:
        rec = self.table_record(db, table)
        stale = self.store.stale_partitions(rec.id) if names else {}
        return [PartitionOut(**dict(served), name=r.name,
                             source_location=r.partition.sd.location,
                             layout=f"transformed v{layout.version}" if layout else "source",
                             layout_version=layout.version if layout else None,
                             stale=layout is None and r.name in stale)
                for r, layout, served in self._served(rec, names, view)]

    def close(self) -> None:
        self.transforms.stop()
        self.fs.close()
        if self.fs.cache is not None:
            self.fs.cache.close()
        self.store.close()


# -- helpers -------------------------------------------------------------------------------------


#: A table's partition names (sorted) and their values, for one version of it.
_PartitionIndex = tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]


class _PartitionIndexCache:
    """A byte-bounded LRU of partition indexes keyed by (table id, version); holds no store."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._data: OrderedDict[tuple[int, int], tuple[_PartitionIndex, int]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def cost(index: _PartitionIndex) -> int:
        """Approximate bytes: the strings and the tuples holding them."""
        names, values = index
        return sum(len(n) * 2 + 120 + len(v) * 60 for n, v in zip(names, values)) + 200

    def get(self, key: tuple[int, int]) -> _PartitionIndex | None:
        with self._lock:
            hit = self._data.get(key)
            if hit is None:
                return None
            self._data.move_to_end(key)
            return hit[0]

    def put(self, key: tuple[int, int], index: _PartitionIndex) -> None:
        cost = self.cost(index)
        if cost > self.max_bytes:
            return
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self.size -= old[1]
            self._data[key] = (index, cost)
            self.size += cost
            while self.size > self.max_bytes:
                _, (_, evicted) = self._data.popitem(last=False)
                self.size -= evicted

    def __len__(self) -> int:
        return len(self._data)


class _LocationIndex:
    """Storage location -> owner, answered by walking up the asked path's parents."""

    def __init__(self) -> None:
        self._owners: dict[str, LocationOwner] = {}

    @staticmethod
    def _key(location: str) -> str | None:
        try:
            return fold_scheme(normalize_uri(location))
        except CatalogError:
            return None

    def add(self, location: str, owner: LocationOwner) -> None:
        key = self._key(location)
        if key is not None:
            # A partition or layout beats the table whose folder holds it.
            prev = self._owners.get(key)
            if prev is None or owner.partition is not None or owner.layout_version is not None:
                self._owners[key] = owner

    def owner_of(self, location: str) -> LocationOwner | None:
        key = self._key(location)
        while key:
            found = self._owners.get(key)
            if found is not None:
                return found
            if key.endswith("://") or "/" not in key.split("://", 1)[1]:
                return None
            key = key.rsplit("/", 1)[0]
            if key.endswith(":/"):
                key += "/"
        return None

    def within(self, root: str) -> list[LocationOwner]:
        """Every owner whose location is ``root`` or below it."""
        key = self._key(root)
        if key is None:
            return []
        return [o for k, o in self._owners.items() if is_within(k, key)]


def _partition_rows(partitions: Sequence[tuple[str, Partition, str | None]]
                    ) -> list[tuple[str, str, str | None, str | None]]:
    return [(n, p.model_dump_json(), fp, p.sd.location) for n, p, fp in partitions]


def _ts(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


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


def _locations_of(fetched: Iterable[_Fetched]) -> list[str | None]:
    """Every table and partition location of freshly fetched tables."""
    return [loc for f in fetched
            for loc in [f.table.sd.location, *(p.sd.location for _, p, _ in f.partitions)]]


def _common_option(key: str) -> bool:
    """An attach option the core reads (not the connector's): ``s3.*`` are the options of the
    mounts ``serve.mode=cached`` makes for S3 locations."""
    return key in COMMON_OPTIONS or is_transform_option(key) or key.startswith("s3.")


def _sync_interval(options: Mapping[str, str]) -> float | None:
    return seconds_option(options, "sync.interval", None, minimum=0.1, maximum=366 * 86400,
                          zero_ok=True)


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
