"""The embedded state store: one SQLite database (WAL) in the data directory.

Every multi-step change runs in one transaction (:meth:`StateStore.transaction`), so a crash leaves
the old state or the new one. The schema is versioned; :data:`MIGRATIONS` brings any older file up
to date at open. SQL stays portable (no SQLite-only syntax in the data statements) so that a
PostgreSQL store can follow.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catalog.exceptions import StateStoreError
from catalog.models import Database, Layout, Partition, Table

STATE_FILE = "catalog.db"

#: Schema migrations, applied in order; entry i brings the schema from version i to i + 1: SQL
#: statements (``;``-separated) or a function of the connection, inside the migration's transaction.
MIGRATIONS: list[str | Callable[[sqlite3.Connection], None]] = [
    """
    CREATE TABLE databases (
        name TEXT PRIMARY KEY,
        udb_type TEXT NOT NULL,
        udb_uri TEXT NOT NULL,
        source_db TEXT NOT NULL,
        options TEXT NOT NULL,
        info TEXT NOT NULL,
        sync_interval_s REAL,
        attached_at REAL NOT NULL,
        last_sync_at REAL,
        last_sync TEXT
    );
    CREATE TABLE tables (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        db_name TEXT NOT NULL REFERENCES databases(name) ON DELETE CASCADE,
        name TEXT NOT NULL,
        info TEXT NOT NULL,
        fingerprint TEXT,
        bypass INTEGER NOT NULL DEFAULT 0,
        version INTEGER NOT NULL,
        partition_count INTEGER NOT NULL DEFAULT 0,
        updated_at REAL NOT NULL,
        UNIQUE (db_name, name)
    );
    CREATE TABLE partitions (
        table_id INTEGER NOT NULL REFERENCES tables(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        info TEXT NOT NULL,
        fingerprint TEXT,
        PRIMARY KEY (table_id, name)
    );
    """,
    # 2: the namespace's mount table; layouts (immutable, versioned, per partition: '' for an
    # unpartitioned table), kept apart from the source metadata so a switch never looks like a
    # source change; partition locations as a column (the location -> table index).
    """
    CREATE TABLE mounts (
        path TEXT PRIMARY KEY,
        ufs_uri TEXT NOT NULL,
        options TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE layouts (
        table_id INTEGER NOT NULL REFERENCES tables(id) ON DELETE CASCADE,
        partition_name TEXT NOT NULL,
        version INTEGER NOT NULL,
        info TEXT NOT NULL,
        current INTEGER NOT NULL,
        created_at REAL NOT NULL,
        retired_at REAL,
        PRIMARY KEY (table_id, partition_name, version)
    );
    CREATE INDEX layouts_current ON layouts (table_id, current);
    ALTER TABLE partitions ADD COLUMN location TEXT
    """,
    lambda conn: _backfill_partition_locations(conn),
    # 4: transformation jobs and their per-partition tasks (progress, the layout made, errors).
    """
    CREATE TABLE transform_jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        db_name TEXT NOT NULL,
        table_name TEXT NOT NULL,
        table_id INTEGER NOT NULL,
        definition TEXT NOT NULL,
        executor TEXT NOT NULL,
        trigger_kind TEXT NOT NULL,
        state TEXT NOT NULL,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        table_version INTEGER,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL
    );
    CREATE INDEX transform_jobs_state ON transform_jobs (state);
    CREATE INDEX transform_jobs_table ON transform_jobs (db_name, table_name);
    CREATE TABLE transform_tasks (
        job_id INTEGER NOT NULL REFERENCES transform_jobs(id) ON DELETE CASCADE,
        partition_name TEXT NOT NULL,
        state TEXT NOT NULL,
        output_path TEXT NOT NULL,
        source_fingerprint TEXT,
        bytes_total INTEGER NOT NULL DEFAULT 0,
        bytes_read INTEGER NOT NULL DEFAULT 0,
        rows_read INTEGER NOT NULL DEFAULT 0,
        bytes_written INTEGER NOT NULL DEFAULT 0,
        rows_written INTEGER NOT NULL DEFAULT 0,
        files_written INTEGER NOT NULL DEFAULT 0,
        layout TEXT,
        error TEXT,
        started_at REAL,
        finished_at REAL,
        PRIMARY KEY (job_id, partition_name)
    )
    """,
    # 5: the block store's index (catalog/cache): committed blocks keyed by the under-storage
    # file's identity, and the pin / TTL rules by path prefix.
    """
    CREATE TABLE cache_blocks (
        block_id TEXT PRIMARY KEY,
        file_key TEXT NOT NULL,
        uri TEXT NOT NULL,
        file_size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        etag TEXT,
        block_index INTEGER NOT NULL,
        tier TEXT NOT NULL,
        dir TEXT NOT NULL,
        size INTEGER NOT NULL,
        checksum INTEGER NOT NULL,
        created_at REAL NOT NULL,
        last_access INTEGER NOT NULL,
        access_count INTEGER NOT NULL,
        lrfu_score REAL NOT NULL,
        pinned INTEGER NOT NULL DEFAULT 0,
        expire_at REAL,
        ttl_action TEXT,
        persisted INTEGER NOT NULL DEFAULT 1
    );
    CREATE INDEX cache_blocks_file ON cache_blocks (file_key);
    CREATE INDEX cache_blocks_uri ON cache_blocks (uri);
    CREATE TABLE cache_rules (
        prefix TEXT PRIMARY KEY,
        pinned INTEGER NOT NULL DEFAULT 0,
        ttl_s REAL,
        ttl_action TEXT,
        updated_at REAL NOT NULL
    )
    """,
    # 6: the cached file layer (catalog/fs/cached.py): files of the namespace that exist only in
    # the block store (MUST_CACHE) or are not persisted yet (ASYNC_THROUGH), and the durable
    # queue of their persists, run in seq order.
    """
    CREATE TABLE fs_files (
        path TEXT PRIMARY KEY,
        uri TEXT NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        etag TEXT NOT NULL,
        write_type TEXT NOT NULL,
        replicas INTEGER NOT NULL DEFAULT 1,
        created_at REAL NOT NULL
    );
    CREATE TABLE fs_persist_queue (
        seq INTEGER PRIMARY KEY,
        path TEXT NOT NULL,
        etag TEXT NOT NULL,
        enqueued_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_try_at REAL NOT NULL DEFAULT 0,
        last_error TEXT
    );
    CREATE INDEX fs_persist_queue_path ON fs_persist_queue (path)
    """,
    # 7: a transformation task's count of source rows with unparseable values written to its
    # side file (definitions with ``unparseable=side-file``; NULL otherwise).
    "ALTER TABLE transform_tasks ADD COLUMN unparseable_rows INTEGER",
]

SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class DatabaseRecord:
    """An attached database as the store keeps it."""

    name: str
    udb_type: str
    udb_uri: str
    source_db: str
    options: dict[str, str]
    info: Database
    sync_interval_s: float | None
    attached_at: float
    last_sync_at: float | None
    last_sync: dict[str, Any] | None


@dataclass(frozen=True)
class TableRecord:
    """A table as the store keeps it; ``version`` grows on every change of it or its partitions.

    Ids are never reused, so ``(id, version)`` names one state of one table for caches.
    """

    id: int
    db_name: str
    name: str
    table: Table
    fingerprint: str | None
    bypass: bool
    version: int
    partition_count: int
    updated_at: float


@dataclass(frozen=True)
class PartitionRecord:
    name: str
    partition: Partition
    fingerprint: str | None


class StateStore:
    """Catalog state in SQLite. Thread-safe: one connection per thread, one writer at a time."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StateStoreError(f"cannot create data directory '{self.data_dir}': {e}") from e
        self.path = self.data_dir / STATE_FILE
        self._local = threading.local()
        self._write_lock = threading.RLock()
        self._migrate()

    # -- connections -----------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                       timeout=30)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA foreign_keys=ON")
            except sqlite3.Error as e:
                raise StateStoreError(f"cannot open state store '{self.path}': {e}") from e
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write: everything inside commits together or not at all.

        SQLite errors (disk full, locked, corrupt) leave as :class:`StateStoreError`.
        """
        with self._write_lock:
            conn = self._conn()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise StateStoreError(f"cannot start a state store transaction: {e}") from e
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as e:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                if isinstance(e, sqlite3.Error):
                    raise StateStoreError(f"state store write failed: {e}") from e
                raise

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.Error as e:
            raise StateStoreError(f"state store query failed: {e}") from e

    def _migrate(self) -> None:
        with self._write_lock:
            conn = self._conn()
            try:
                conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                row = conn.execute("SELECT version FROM schema_version").fetchone()
                current = row[0] if row else 0
                if current > SCHEMA_VERSION:
                    raise StateStoreError(
                        f"state store '{self.path}' has schema version {current}, newer than this "
                        f"release understands ({SCHEMA_VERSION}); upgrade Strata")
                for version in range(current, SCHEMA_VERSION):
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        step = MIGRATIONS[version]
                        if callable(step):
                            step(conn)
                        else:
                            for statement in step.split(";"):
                                if statement.strip():
                                    conn.execute(statement)
                        conn.execute("DELETE FROM schema_version")
                        conn.execute("INSERT INTO schema_version VALUES (?)", (version + 1,))
                        conn.execute("COMMIT")
                    except BaseException:
                        conn.execute("ROLLBACK")
                        raise
            except sqlite3.Error as e:
                raise StateStoreError(f"cannot migrate state store '{self.path}': {e}") from e

    def schema_version(self) -> int:
        return int(self._query("SELECT version FROM schema_version")[0][0])

    # -- databases -------------------------------------------------------------------------------

    _DB_COLS = ("name, udb_type, udb_uri, source_db, options, info, sync_interval_s, attached_at, "
                "last_sync_at, last_sync")

    def databases(self) -> list[DatabaseRecord]:
        rows = self._query(f"SELECT {self._DB_COLS} FROM databases ORDER BY name")
        return [_db_record(r) for r in rows]

    def database(self, name: str) -> DatabaseRecord | None:
        rows = self._query(f"SELECT {self._DB_COLS} FROM databases WHERE name = ?", (name,))
        return _db_record(rows[0]) if rows else None

    @staticmethod
    def insert_database(conn: sqlite3.Connection, rec: DatabaseRecord) -> None:
        conn.execute(
            "INSERT INTO databases (name, udb_type, udb_uri, source_db, options, info, "
            "sync_interval_s, attached_at, last_sync_at, last_sync) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (rec.name, rec.udb_type, rec.udb_uri, rec.source_db, json.dumps(rec.options),
             rec.info.model_dump_json(), rec.sync_interval_s, rec.attached_at, rec.last_sync_at,
             json.dumps(rec.last_sync) if rec.last_sync is not None else None))

    @staticmethod
    def update_database_info(conn: sqlite3.Connection, name: str, info: Database) -> None:
        conn.execute("UPDATE databases SET info = ? WHERE name = ?",
                     (info.model_dump_json(), name))

    @staticmethod
    def record_sync(conn: sqlite3.Connection, name: str, at: float, report: dict[str, Any]) -> None:
        conn.execute("UPDATE databases SET last_sync_at = ?, last_sync = ? WHERE name = ?",
                     (at, json.dumps(report), name))

    @staticmethod
    def delete_database(conn: sqlite3.Connection, name: str) -> int:
        # Explicit deletes keep this portable to stores without cascading foreign keys.
        conn.execute("DELETE FROM layouts WHERE table_id IN "
                     "(SELECT id FROM tables WHERE db_name = ?)", (name,))
        conn.execute("DELETE FROM partitions WHERE table_id IN "
                     "(SELECT id FROM tables WHERE db_name = ?)", (name,))
        conn.execute("DELETE FROM tables WHERE db_name = ?", (name,))
        return conn.execute("DELETE FROM databases WHERE name = ?", (name,)).rowcount

    # -- tables ----------------------------------------------------------------------------------

    _TABLE_COLS = ("id, db_name, name, info, fingerprint, bypass, version, partition_count, "
                   "updated_at")

    def tables(self, db_name: str | None = None) -> list[TableRecord]:
        if db_name is None:
            rows = self._query(f"SELECT {self._TABLE_COLS} FROM tables ORDER BY db_name, name")
        else:
            rows = self._query(f"SELECT {self._TABLE_COLS} FROM tables WHERE db_name = ? "
                               "ORDER BY name", (db_name,))
        return [_table_record(r) for r in rows]

    @staticmethod
    def insert_table(conn: sqlite3.Connection, db_name: str, table: Table,
                     fingerprint: str | None, bypass: bool, partition_count: int) -> int:
        cur = conn.execute(
            "INSERT INTO tables (db_name, name, info, fingerprint, bypass, version, "
            "partition_count, updated_at) VALUES (?,?,?,?,?,?,?,?)",
            (db_name, table.name, table.model_dump_json(), fingerprint, int(bypass), 1,
             partition_count, time.time()))
        assert cur.lastrowid is not None
        return cur.lastrowid

    @staticmethod
    def update_table(conn: sqlite3.Connection, table_id: int, table: Table,
                     fingerprint: str | None, bypass: bool, partition_count: int) -> None:
        conn.execute(
            "UPDATE tables SET info = ?, fingerprint = ?, bypass = ?, partition_count = ?, "
            "version = version + 1, updated_at = ? WHERE id = ?",
            (table.model_dump_json(), fingerprint, int(bypass), partition_count, time.time(),
             table_id))

    @staticmethod
    def bump_table_version(conn: sqlite3.Connection, table_id: int) -> None:
        conn.execute("UPDATE tables SET version = version + 1, updated_at = ? WHERE id = ?",
                     (time.time(), table_id))

    @staticmethod
    def delete_table(conn: sqlite3.Connection, table_id: int) -> None:
        conn.execute("DELETE FROM layouts WHERE table_id = ?", (table_id,))
        conn.execute("DELETE FROM partitions WHERE table_id = ?", (table_id,))
        conn.execute("DELETE FROM tables WHERE id = ?", (table_id,))

    # -- partitions ------------------------------------------------------------------------------

    def partition_names(self, table_id: int) -> list[str]:
        rows = self._query("SELECT name FROM partitions WHERE table_id = ? ORDER BY name",
                           (table_id,))
        return [r[0] for r in rows]

    def partition_fingerprints(self, table_id: int) -> dict[str, tuple[str, str | None]]:
        """name -> (info JSON, fingerprint), for sync's comparison."""
        rows = self._query("SELECT name, info, fingerprint FROM partitions WHERE table_id = ?",
                           (table_id,))
        return {r[0]: (r[1], r[2]) for r in rows}

    def partitions(self, table_id: int, names: Sequence[str] | None = None
                   ) -> list[PartitionRecord]:
        """Partitions of a table, by name order, or those of ``names`` in the order given."""
        if names is None:
            rows = self._query("SELECT name, info, fingerprint FROM partitions WHERE table_id = ? "
                               "ORDER BY name", (table_id,))
            return [PartitionRecord(r[0], Partition.model_validate_json(r[1]), r[2])
                    for r in rows]
        found: dict[str, PartitionRecord] = {}
        unique = list(dict.fromkeys(names))
        for start in range(0, len(unique), 500):
            chunk = unique[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for r in self._query(f"SELECT name, info, fingerprint FROM partitions WHERE "
                                 f"table_id = ? AND name IN ({marks})", (table_id, *chunk)):
                found[r[0]] = PartitionRecord(r[0], Partition.model_validate_json(r[1]), r[2])
        return [found[n] for n in names if n in found]

    @staticmethod
    def upsert_partitions(conn: sqlite3.Connection, table_id: int,
                          rows: Iterable[tuple[str, str, str | None, str | None]]) -> None:
        """Insert or replace (name, info JSON, fingerprint, location) rows."""
        conn.executemany(
            "INSERT INTO partitions (table_id, name, info, fingerprint, location) "
            "VALUES (?,?,?,?,?) ON CONFLICT (table_id, name) DO UPDATE SET info = excluded.info, "
            "fingerprint = excluded.fingerprint, location = excluded.location",
            ((table_id, n, i, f, loc) for n, i, f, loc in rows))

    def partition_locations(self) -> list[tuple[int, str, str]]:
        """(table id, partition name, location) of every partition with a location."""
        rows = self._query("SELECT table_id, name, location FROM partitions "
                           "WHERE location IS NOT NULL")
        return [(r[0], r[1], r[2]) for r in rows]

    @staticmethod
    def delete_partitions(conn: sqlite3.Connection, table_id: int, names: Iterable[str]) -> None:
        conn.executemany("DELETE FROM partitions WHERE table_id = ? AND name = ?",
                         ((table_id, n) for n in names))


    # -- layouts ---------------------------------------------------------------------------------

    def current_layouts(self, table_id: int, names: Sequence[str] | None = None
                        ) -> dict[str, Layout]:
        """partition name ('' for the table) -> its current transformed layout."""
        sql = "SELECT partition_name, info FROM layouts WHERE table_id = ? AND current = 1"
        if names is None:
            rows = self._query(sql, (table_id,))
        else:
            rows = []
            unique = list(dict.fromkeys(names))
            for start in range(0, len(unique), 500):
                chunk = unique[start:start + 500]
                rows += self._query(f"{sql} AND partition_name IN ({','.join('?' * len(chunk))})",
                                    (table_id, *chunk))
        return {r[0]: Layout.model_validate_json(r[1]) for r in rows}

    def current_layout_counts(self) -> dict[int, int]:
        """table id -> how many of its partitions have a current transformed layout."""
        rows = self._query("SELECT table_id, COUNT(*) FROM layouts WHERE current = 1 "
                           "GROUP BY table_id")
        return {r[0]: r[1] for r in rows}

    def layouts(self, table_id: int) -> list[tuple[Layout, bool, float | None]]:
        """Every layout of a table, current or retired: (layout, current, retired_at)."""
        rows = self._query("SELECT info, current, retired_at FROM layouts WHERE table_id = ? "
                           "ORDER BY partition_name, version", (table_id,))
        return [(Layout.model_validate_json(r[0]), bool(r[1]), r[2]) for r in rows]

    def max_layout_version(self, table_id: int) -> int:
        rows = self._query("SELECT MAX(version) FROM layouts WHERE table_id = ?", (table_id,))
        return int(rows[0][0] or 0)

    @staticmethod
    def insert_layout(conn: sqlite3.Connection, table_id: int, layout: Layout) -> None:
        """Make ``layout`` its partition's current one (the previous one is retired)."""
        now = time.time()
        conn.execute("UPDATE layouts SET current = 0, retired_at = ? WHERE table_id = ? AND "
                     "partition_name = ? AND current = 1", (now, table_id, layout.partition))
        conn.execute("INSERT INTO layouts (table_id, partition_name, version, info, current, "
                     "created_at) VALUES (?,?,?,?,1,?)",
                     (table_id, layout.partition, layout.version, layout.model_dump_json(), now))

    @staticmethod
    def retire_layouts(conn: sqlite3.Connection, table_id: int, names: Iterable[str]) -> int:
        """Serve the source again for these partitions; returns how many were transformed."""
        now = time.time()
        count = 0
        for name in names:
            count += conn.execute(
                "UPDATE layouts SET current = 0, retired_at = ? WHERE table_id = ? AND "
                "partition_name = ? AND current = 1", (now, table_id, name)).rowcount
        return count

    @staticmethod
    def delete_layout(conn: sqlite3.Connection, table_id: int, partition: str,
                      version: int) -> None:
        conn.execute("DELETE FROM layouts WHERE table_id = ? AND partition_name = ? AND "
                     "version = ? AND current = 0", (table_id, partition, version))

    def retired_layouts(self, before: float) -> list[tuple[int, Layout]]:
        """Layouts retired before ``before`` (epoch seconds): (table id, layout)."""
        rows = self._query("SELECT table_id, info FROM layouts WHERE current = 0 AND "
                           "retired_at IS NOT NULL AND retired_at < ?", (before,))
        return [(r[0], Layout.model_validate_json(r[1])) for r in rows]

    def layout_locations(self) -> set[str]:
        """The location of every layout the store knows, current or retired."""
        return {Layout.model_validate_json(r[0]).location
                for r in self._query("SELECT info FROM layouts")}

    def stale_partitions(self, table_id: int) -> dict[str, int]:
        """Partitions served from their source although they were transformed before (a sync
        saw their source change): name -> the newest retired layout version."""
        rows = self._query(
            "SELECT partition_name, MAX(version) FROM layouts l WHERE table_id = ? AND "
            "current = 0 AND NOT EXISTS (SELECT 1 FROM layouts c WHERE c.table_id = "
            "l.table_id AND c.partition_name = l.partition_name AND c.current = 1) "
            "GROUP BY partition_name", (table_id,))
        return {r[0]: int(r[1]) for r in rows}

    # -- transformation jobs ---------------------------------------------------------------------

    _JOB_COLS = ("id, db_name, table_name, table_id, definition, executor, trigger_kind, state, "
                 "cancel_requested, error, table_version, created_at, started_at, finished_at")
    _TASK_COLS = ("job_id, partition_name, state, output_path, source_fingerprint, bytes_total, "
                  "bytes_read, rows_read, bytes_written, rows_written, files_written, layout, "
                  "error, started_at, finished_at, unparseable_rows")

    @staticmethod
    def insert_job(conn: sqlite3.Connection, job: JobRecord) -> int:
        """Insert a job (its ``id`` is ignored); returns the new id."""
        cur = conn.execute(
            "INSERT INTO transform_jobs (db_name, table_name, table_id, definition, executor, "
            "trigger_kind, state, created_at) VALUES (?,?,?,?,?,?,?,?)",
            (job.db_name, job.table_name, job.table_id, job.definition, job.executor,
             job.trigger, job.state, job.created_at))
        return int(cur.lastrowid or 0)

    @staticmethod
    def insert_tasks(conn: sqlite3.Connection, tasks: Iterable[TaskRecord]) -> None:
        conn.executemany(
            "INSERT INTO transform_tasks (job_id, partition_name, state, output_path, "
            "source_fingerprint, bytes_total) VALUES (?,?,?,?,?,?)",
            [(t.job_id, t.partition, t.state, t.output_path, t.source_fingerprint, t.bytes_total)
             for t in tasks])

    @staticmethod
    def update_job(conn: sqlite3.Connection, job_id: int, **fields: Any) -> None:
        """Set columns of a job: state, error, table_version, started_at, finished_at,
        cancel_requested."""
        allowed = {"state", "error", "table_version", "started_at", "finished_at",
                   "cancel_requested"}
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"not job columns: {sorted(bad)}")
        sets = ", ".join(f"{k} = ?" for k in fields)
        conn.execute(f"UPDATE transform_jobs SET {sets} WHERE id = ?", (*fields.values(), job_id))

    @staticmethod
    def update_task(conn: sqlite3.Connection, job_id: int, partition: str, **fields: Any) -> None:
        """Set columns of a task (progress counters, state, layout JSON, error, times)."""
        allowed = {"state", "bytes_total", "bytes_read", "rows_read", "bytes_written",
                   "rows_written", "files_written", "layout", "error", "started_at",
                   "finished_at", "unparseable_rows"}
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"not task columns: {sorted(bad)}")
        sets = ", ".join(f"{k} = ?" for k in fields)
        conn.execute(f"UPDATE transform_tasks SET {sets} WHERE job_id = ? AND partition_name = ?",
                     (*fields.values(), job_id, partition))

    def job(self, job_id: int) -> JobRecord | None:
        rows = self._query(f"SELECT {self._JOB_COLS} FROM transform_jobs WHERE id = ?", (job_id,))
        return _job_record(rows[0]) if rows else None

    def jobs(self, *, db_name: str | None = None, table_name: str | None = None,
             states: Sequence[str] | None = None, limit: int | None = None) -> list[JobRecord]:
        """Jobs, newest first, filtered by database, table (case-insensitive) and state."""
        where, params = [], []  # type: list[str], list[Any]
        if db_name is not None:
            where.append("db_name = ?")
            params.append(db_name)
        if table_name is not None:
            where.append("LOWER(table_name) = LOWER(?)")
            params.append(table_name)
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            params.extend(states)
        sql = f"SELECT {self._JOB_COLS} FROM transform_jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_job_record(r) for r in self._query(sql, params)]

    def tasks(self, job_id: int) -> list[TaskRecord]:
        rows = self._query(f"SELECT {self._TASK_COLS} FROM transform_tasks WHERE job_id = ? "
                           "ORDER BY partition_name", (job_id,))
        return [_task_record(r) for r in rows]

    def active_output_paths(self) -> set[str]:
        """Output paths of the tasks of jobs not yet finished (queued or running)."""
        rows = self._query("SELECT t.output_path FROM transform_tasks t JOIN transform_jobs j "
                           "ON j.id = t.job_id WHERE j.state IN ('queued', 'running')")
        return {r[0] for r in rows}

    @staticmethod
    def prune_jobs(conn: sqlite3.Connection, keep: int) -> int:
        """Delete finished jobs beyond the ``keep`` newest; returns how many went."""
        cur = conn.execute(
            "DELETE FROM transform_jobs WHERE state NOT IN ('queued', 'running') AND id NOT IN "
            "(SELECT id FROM transform_jobs ORDER BY id DESC LIMIT ?)", (keep,))
        return cur.rowcount

    # -- mounts ----------------------------------------------------------------------------------

    def mounts(self) -> list[MountRecord]:
        rows = self._query("SELECT path, ufs_uri, options, created_at FROM mounts ORDER BY path")
        return [MountRecord(r[0], r[1], json.loads(r[2]), r[3]) for r in rows]

    @staticmethod
    def insert_mount(conn: sqlite3.Connection, path: str, ufs_uri: str,
                     options: dict[str, str], created_at: float) -> None:
        conn.execute("INSERT INTO mounts (path, ufs_uri, options, created_at) VALUES (?,?,?,?)",
                     (path, ufs_uri, json.dumps(options), created_at))

    @staticmethod
    def delete_mount(conn: sqlite3.Connection, path: str) -> None:
        conn.execute("DELETE FROM mounts WHERE path = ?", (path,))


@dataclass(frozen=True)
class MountRecord:
    """A namespace mount as the store keeps it (options include secrets: never show them)."""

    path: str
    ufs_uri: str
    options: dict[str, str]
    created_at: float


@dataclass(frozen=True)
class JobRecord:
    """A transformation job as the store keeps it (``trigger``: manual, on-change, cron)."""

    id: int
    db_name: str
    table_name: str
    table_id: int
    definition: str
    executor: str
    trigger: str
    state: str
    cancel_requested: bool = False
    error: str | None = None
    table_version: int | None = None
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None


@dataclass(frozen=True)
class TaskRecord:
    """One partition of a job (``''`` for an unpartitioned table); ``layout`` is the JSON of the
    layout it made once it succeeded."""

    job_id: int
    partition: str
    state: str
    output_path: str
    source_fingerprint: str | None
    bytes_total: int = 0
    bytes_read: int = 0
    rows_read: int = 0
    bytes_written: int = 0
    rows_written: int = 0
    files_written: int = 0
    layout: str | None = None
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    #: Source rows written to the side file (``unparseable=side-file``), None otherwise.
    unparseable_rows: int | None = None


def _job_record(r: tuple[Any, ...]) -> JobRecord:
    return JobRecord(id=r[0], db_name=r[1], table_name=r[2], table_id=r[3], definition=r[4],
                     executor=r[5], trigger=r[6], state=r[7], cancel_requested=bool(r[8]),
                     error=r[9], table_version=r[10], created_at=r[11], started_at=r[12],
                     finished_at=r[13])


def _task_record(r: tuple[Any, ...]) -> TaskRecord:
    return TaskRecord(*r)


def _backfill_partition_locations(conn: sqlite3.Connection) -> None:
    rows = conn.execute("SELECT table_id, name, info FROM partitions").fetchall()
    conn.executemany(
        "UPDATE partitions SET location = ? WHERE table_id = ? AND name = ?",
        ((json.loads(info).get("sd", {}).get("location"), tid, name) for tid, name, info in rows))


def _db_record(r: tuple[Any, ...]) -> DatabaseRecord:
    return DatabaseRecord(
        name=r[0], udb_type=r[1], udb_uri=r[2], source_db=r[3], options=json.loads(r[4]),
        info=Database.model_validate_json(r[5]), sync_interval_s=r[6], attached_at=r[7],
        last_sync_at=r[8], last_sync=json.loads(r[9]) if r[9] else None)


def _table_record(r: tuple[Any, ...]) -> TableRecord:
    return TableRecord(
        id=r[0], db_name=r[1], name=r[2], table=Table.model_validate_json(r[3]),
        fingerprint=r[4], bypass=bool(r[5]), version=r[6], partition_count=r[7],
        updated_at=r[8])
