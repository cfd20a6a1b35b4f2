"""The cached file layer's vocabulary: write types, per-mount cache options, the file table.

Per-mount options (``-o KEY=VALUE``, validated at mount, never passed to the under storage):

* ``read.type`` = ``CACHE`` (default) | ``CACHE_PROMOTE`` | ``NO_CACHE``;
* ``write.type`` = ``CACHE_THROUGH`` (default) | ``THROUGH`` | ``MUST_CACHE`` | ``ASYNC_THROUGH``;
* ``metadata.sync.interval`` = seconds a file's identity (size, mtime, ETag) is trusted before
  the under storage is asked again (default 0 for local directories, 60 for remote storages);
* ``replication.durable`` = copies (1-8) an ``ASYNC_THROUGH`` / ``MUST_CACHE`` write commits in
  distinct cache directories before it returns (default 1).

The **file table** (state store table ``fs_files``) holds the files that exist in the block store
only: ``MUST_CACHE`` files and ``ASYNC_THROUGH`` files not persisted yet, each with the identity
its blocks are cached under (its ETag is a ``strata-w-...`` token). The **persist queue**
(``fs_persist_queue``) holds one entry per ``ASYNC_THROUGH`` file to persist, run in ``seq``
order by :class:`catalog.fs.persist.Persister`.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from catalog.cache.model import FileIdentity, ReadType
from catalog.exceptions import InvalidOptionError, StateStoreError

if TYPE_CHECKING:
    import sqlite3

    from catalog.cache.config import CacheConfig
    from catalog.cache.store import BlockStore
    from catalog.store import StateStore

#: Mount options of the cached file layer.
CACHE_OPTIONS = frozenset({"read.type", "write.type", "metadata.sync.interval",
                           "replication.durable"})
#: ETag prefix of file versions written into the cache (not read from an under storage).
TOKEN_PREFIX = "strata-w-"
MAX_REPLICAS = 8

V = TypeVar("V")


class WriteType(str, Enum):
    """Where a write goes.

    * ``THROUGH``: the under storage only.
    * ``CACHE_THROUGH``: the under storage, and the cache once the under-storage write succeeded.
    * ``MUST_CACHE``: the cache only, never persisted (listed and read from the file table).
    * ``ASYNC_THROUGH``: the cache (unpersisted), then the under storage by the persister.
    """

    MUST_CACHE = "MUST_CACHE"
    CACHE_THROUGH = "CACHE_THROUGH"
    THROUGH = "THROUGH"
    ASYNC_THROUGH = "ASYNC_THROUGH"


def read_type_of(value: ReadType | str, what: str = "read.type") -> ReadType:
    try:
        return ReadType(str(value.value if isinstance(value, Enum) else value).strip().upper())
    except ValueError as e:
        raise InvalidOptionError(f"{what} must be one of {', '.join(t.value for t in ReadType)}, "
                                 f"got '{value}'") from e


def write_type_of(value: WriteType | str, what: str = "write.type") -> WriteType:
    try:
        return WriteType(str(value.value if isinstance(value, Enum) else value).strip().upper())
    except ValueError as e:
        raise InvalidOptionError(f"{what} must be one of "
                                 f"{', '.join(t.value for t in WriteType)}, got '{value}'") from e


@dataclass(frozen=True)
class CachePolicy:
    """A mount's cache options, parsed."""

    read_type: ReadType
    write_type: WriteType
    sync_interval_s: float
    replication: int

    @classmethod
    def of(cls, options: Mapping[str, str], remote: bool) -> CachePolicy:
        """Parse (and validate) the cache options of a mount; ``remote`` picks the default
        ``metadata.sync.interval`` (60 s, else 0)."""
        raw = options.get("metadata.sync.interval")
        interval = 60.0 if remote else 0.0
        if raw is not None:
            try:
                interval = float(raw)
            except ValueError as e:
                raise InvalidOptionError(
                    f"metadata.sync.interval must be a number of seconds, got '{raw}'") from e
            if not 0 <= interval <= 86400 * 365:
                raise InvalidOptionError(
                    f"metadata.sync.interval must be between 0 and 31536000 s, got '{raw}'")
        rep_raw = options.get("replication.durable", "1")
        try:
            replication = int(rep_raw)
        except ValueError as e:
            raise InvalidOptionError(
                f"replication.durable must be a whole number, got '{rep_raw}'") from e
        if not 1 <= replication <= MAX_REPLICAS:
            raise InvalidOptionError(
                f"replication.durable must be between 1 and {MAX_REPLICAS}, got '{rep_raw}'")
        return cls(read_type_of(options.get("read.type", ReadType.CACHE.value)),
                   write_type_of(options.get("write.type", WriteType.CACHE_THROUGH.value)),
                   interval, replication)


def new_token() -> str:
    """A fresh ETag for a file version written into the cache."""
    return TOKEN_PREFIX + secrets.token_hex(12)


@dataclass(frozen=True)
class FileRecord:
    """A file of the namespace that lives in the block store only (a row of ``fs_files``)."""

    path: str
    uri: str
    size: int
    mtime_ns: int
    etag: str
    write_type: WriteType
    replicas: int
    created_at: float

    @property
    def identity(self) -> FileIdentity:
        """The identity its (first) copy is cached under."""
        return FileIdentity(self.uri, self.size, self.mtime_ns, self.etag)

    def replica(self, r: int) -> FileIdentity:
        """The identity of copy ``r`` (0 is :attr:`identity`)."""
        return self.identity if r == 0 else FileIdentity(self.uri, self.size, self.mtime_ns,
                                                         f"{self.etag}#r{r}")

    @property
    def copies(self) -> list[FileIdentity]:
        return [self.replica(r) for r in range(self.replicas)]


_FCOLS = "path, uri, size, mtime_ns, etag, write_type, replicas, created_at"


def _record(r: tuple[Any, ...]) -> FileRecord:
    return FileRecord(str(r[0]), str(r[1]), int(r[2]), int(r[3]), str(r[4]), WriteType(r[5]),
                      int(r[6]), float(r[7]))


def _escape_like(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True)
class QueueEntry:
    """One pending persist."""

    seq: int
    path: str
    etag: str
    enqueued_at: float
    attempts: int
    last_error: str | None


class FileTable:
    """SQL over ``fs_files`` and ``fs_persist_queue`` (writes take a transaction's connection).

    An in-memory count of rows lets reads skip the table while it is empty (the usual case).
    """

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._count = int(self.store._query("SELECT COUNT(*) FROM fs_files")[0][0])

    @property
    def empty(self) -> bool:
        return self._count == 0

    def get(self, path: str) -> FileRecord | None:
        if self._count == 0:
            return None
        rows = self.store._query(f"SELECT {_FCOLS} FROM fs_files WHERE path = ?", (path,))
        return _record(rows[0]) if rows else None

    def under(self, prefix: str) -> list[FileRecord]:
        """Records at ``prefix`` or below it, by path."""
        if self._count == 0:
            return []
        if prefix == "/":
            rows = self.store._query(f"SELECT {_FCOLS} FROM fs_files ORDER BY path")
        else:
            rows = self.store._query(
                f"SELECT {_FCOLS} FROM fs_files WHERE path = ? OR path LIKE ? ESCAPE '\\' "
                "ORDER BY path", (prefix, _escape_like(prefix) + "/%"))
        return [_record(r) for r in rows]

    def all(self) -> list[FileRecord]:
        return self.under("/")

    def put(self, conn: sqlite3.Connection, rec: FileRecord, *, enqueue: bool) -> None:
        """Insert ``rec`` replacing any record of its path (and that one's queue entry)."""
        self.remove(conn, rec.path)
        conn.execute(f"INSERT INTO fs_files ({_FCOLS}) VALUES (?,?,?,?,?,?,?,?)",
                     (rec.path, rec.uri, rec.size, rec.mtime_ns, rec.etag, rec.write_type.value,
                      rec.replicas, rec.created_at))
        if enqueue:
            conn.execute("INSERT INTO fs_persist_queue (path, etag, enqueued_at) VALUES (?,?,?)",
                         (rec.path, rec.etag, time.time()))
        self._count += 1

    def remove(self, conn: sqlite3.Connection, path: str, etag: str | None = None) -> int:
        """Delete the record of ``path`` (only that version when ``etag``) and its queue
        entries; the rows deleted."""
        if etag is None:
            n = conn.execute("DELETE FROM fs_files WHERE path = ?", (path,)).rowcount
            conn.execute("DELETE FROM fs_persist_queue WHERE path = ?", (path,))
        else:
            n = conn.execute("DELETE FROM fs_files WHERE path = ? AND etag = ?",
                             (path, etag)).rowcount
            conn.execute("DELETE FROM fs_persist_queue WHERE path = ? AND etag = ?",
                         (path, etag))
        self._count = max(0, self._count - max(0, n))
        return max(0, n)

    def enqueue(self, conn: sqlite3.Connection, rec: FileRecord) -> None:
        """Queue a persist of ``rec`` (a MUST_CACHE file persisted on request)."""
        conn.execute("DELETE FROM fs_persist_queue WHERE path = ?", (rec.path,))
        conn.execute("INSERT INTO fs_persist_queue (path, etag, enqueued_at) VALUES (?,?,?)",
                     (rec.path, rec.etag, time.time()))

    # -- the queue -------------------------------------------------------------------------------

    def next_entry(self, now: float) -> QueueEntry | None:
        """The oldest entry due (an entry waits for every older entry of its path)."""
        rows = self.store._query(
            "SELECT seq, path, etag, enqueued_at, attempts, last_error FROM fs_persist_queue q "
            "WHERE next_try_at <= ? AND NOT EXISTS (SELECT 1 FROM fs_persist_queue o "
            "WHERE o.path = q.path AND o.seq < q.seq) ORDER BY seq LIMIT 1", (now,))
        return QueueEntry(*rows[0]) if rows else None

    def entries(self) -> list[QueueEntry]:
        rows = self.store._query("SELECT seq, path, etag, enqueued_at, attempts, last_error "
                                 "FROM fs_persist_queue ORDER BY seq")
        return [QueueEntry(*r) for r in rows]

    def failed(self, seq: int, error: str, retry_at: float) -> None:
        try:
            with self.store.transaction() as conn:
                conn.execute("UPDATE fs_persist_queue SET attempts = attempts + 1, "
                             "last_error = ?, next_try_at = ? WHERE seq = ?",
                             (error[:2000], retry_at, seq))
        except StateStoreError:
            pass

    def drop_entry(self, conn: sqlite3.Connection, seq: int) -> None:
        conn.execute("DELETE FROM fs_persist_queue WHERE seq = ?", (seq,))


class TrustCache(Generic[V]):
    """Answers of an under storage (file identities, listings, stats) and when they were read,
    trusted per mount for its ``metadata.sync.interval``; a change made through the namespace
    drops the answers it makes stale (:meth:`invalidate`)."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._d: dict[str, tuple[V, float]] = {}
        self._lock = threading.Lock()
        #: Bumped by every :meth:`invalidate`: an answer loaded across one is not kept (it may
        #: predate the change that invalidated).
        self._generation = 0

    def get(self, uri: str, ttl_s: float, load: Callable[[], V | None]) -> V | None:
        """The answer for ``uri`` read less than ``ttl_s`` ago, else ``load()`` (kept unless
        None, a miss is asked again, or an invalidation happened while it loaded)."""
        if ttl_s <= 0:
            return load()
        with self._lock:
            hit = self._d.get(uri)
            generation = self._generation
        if hit is not None and time.monotonic() - hit[1] < ttl_s:
            return hit[0]
        value = load()
        if value is not None:
            with self._lock:
                if self._generation == generation:
                    self._put(uri, value)
        return value

    def peek(self, uri: str, ttl_s: float) -> V | None:
        """The answer for ``uri`` if read less than ``ttl_s`` ago, else None (nothing loaded)."""
        if ttl_s <= 0:
            return None
        with self._lock:
            hit = self._d.get(uri)
        return hit[0] if hit is not None and time.monotonic() - hit[1] < ttl_s else None

    def put(self, uri: str, value: V) -> None:
        with self._lock:
            self._put(uri, value)

    def _put(self, uri: str, value: V) -> None:
        if len(self._d) >= self.limit:
            self._d.clear()
        self._d[uri] = (value, time.monotonic())

    def invalidate(self, uri: str, recursive: bool = False) -> None:
        with self._lock:
            self._generation += 1
            self._d.pop(uri, None)
            if recursive:
                base = uri.rstrip("/") + "/"
                for k in [k for k in self._d if k.startswith(base)]:
                    del self._d[k]


def _overlap(a: str, b: str) -> bool:
    return a == b or a == "/" or b == "/" or a.startswith(b + "/") or b.startswith(a + "/")


class PathClaims:
    """Exclusive claims on namespace paths (a claim covers the subtree): every change of a path's
    under-storage file (a write's commit, a persist, a delete) holds one, so those of one path
    reach the under storage one after the other, in the order they claimed. Reentrant per
    thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._held: list[tuple[str, int]] = []  # (path, thread id)

    def acquire(self, path: str) -> None:
        me = threading.get_ident()
        with self._cond:
            while any(_overlap(p, path) and t != me for p, t in self._held):
                self._cond.wait()
            self._held.append((path, me))

    def release(self, path: str) -> None:
        me = threading.get_ident()
        with self._cond:
            self._held.remove((path, me))
            self._cond.notify_all()

    def __call__(self, path: str) -> _Claim:
        return _Claim(self, path)


class _Claim:
    def __init__(self, claims: PathClaims, path: str) -> None:
        self.claims = claims
        self.path = path

    def __enter__(self) -> None:
        self.claims.acquire(self.path)

    def __exit__(self, *exc: object) -> None:
        self.claims.release(self.path)


#: Quota of the default cache tier (``<data_dir>/cache``) when ``cache_tiers`` is unset.
DEFAULT_CACHE_QUOTA = 4 * 1024**3


def open_block_store(config: CacheConfig | None, store: StateStore,
                     on_delete: Callable[[str], None] | None = None) -> BlockStore | None:
    """The namespace's block store: ``config``, or one 4 GiB tier at ``<data_dir>/cache``. A
    cache directory held by another process (a second server on the same data dir) leaves this
    one without a cache, with a warning."""
    from catalog.cache.config import CacheConfig as _Config
    from catalog.cache.model import CacheDirInUseError
    from catalog.cache.store import BlockStore as _Store

    cfg = config or _Config.single_tier(store.data_dir / "cache", DEFAULT_CACHE_QUOTA)
    try:
        return _Store(cfg, store, on_delete=on_delete)
    except CacheDirInUseError as e:
        logging.getLogger("catalog.fs").warning("no block store in this process: %s", e)
        return None
