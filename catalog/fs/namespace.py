"""The unified namespace: a persisted mount table and the one resolver over it.

A namespace path (``/lake/sales/orders``) lives under exactly one mount, the one with the longest
mount point that is a prefix of it; :meth:`Namespace.resolve` is the only place a namespace path
becomes an under-storage URI, and :meth:`Namespace.reverse` the only place a UFS URI finds the
mount that serves it. Mounts nest (``/lake`` and ``/lake/raw`` may point at different storages),
but their under-storage roots may not overlap, so the reverse answer is unique.

The catalog's own root, :data:`CATALOG_ROOT` (``/catalog``), is always mounted: on the data dir's
``catalog/`` folder by default, or wherever ``CATALOG_ROOT_UFS`` points (an S3 prefix).
Transformations write there.

File-system instances are cached per mount (and per storage endpoint for URIs no mount covers),
never built per call. Secret option values never leave this module unredacted except to the UFS
that needs them.

**The block store under the namespace** (:attr:`Namespace.cache`, optional). Reads
(:meth:`Namespace.iter_range`, :meth:`Namespace.read`, :meth:`Namespace.open_input`) take a read
type (``CACHE`` default, ``CACHE_PROMOTE``, ``NO_CACHE``; per mount ``-o read.type=``) and go
through the block store keyed by the file's identity from the under storage (size, mtime, ETag
where S3 gives one), trusted for the mount's ``metadata.sync.interval`` (default 0 s local, 60 s
S3): a file rewritten under cached blocks is served with its new bytes once its identity is asked
again. Writes (:meth:`Namespace.open_output`, :meth:`Namespace.write_bytes`) take a write type
(``CACHE_THROUGH`` default, ``THROUGH``, ``MUST_CACHE``, ``ASYNC_THROUGH``; per mount ``-o
write.type=``, per call ``write_type=``), see :mod:`catalog.fs.writer`. Files held by the cache
only (``MUST_CACHE``, not yet persisted ``ASYNC_THROUGH``) are rows of the file table
(:mod:`catalog.fs.cached`) and are listed, stat'ed and read like the others; the persister
(:mod:`catalog.fs.persist`) runs the durable queue. Writes' commits, persists and deletes of one
path claim it (:class:`~catalog.fs.cached.PathClaims`), so they reach the under storage in order.
:meth:`Namespace.persist`, :meth:`~Namespace.free`, :meth:`~Namespace.pin`,
:meth:`~Namespace.unpin`, :meth:`~Namespace.set_ttl` and :meth:`~Namespace.load` map namespace
paths to the block store's URIs. The transformation source reader opens UFS files directly: it
never touches the cache (``NO_CACHE``).
"""

from __future__ import annotations

import posixpath
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from catalog.cache.model import (
    BlockNotPersistedError,
    BlockSegment,
    FileIdentity,
    ReadType,
    TtlAction,
)
from catalog.exceptions import (
    AlreadyExistsError,
    CatalogError,
    InUseError,
    InvalidInputError,
    InvalidOptionError,
    NoSuchPathError,
    ReadOnlyError,
    UfsError,
    UfsUnavailableError,
)
from catalog.filesystems import stat_is_local
from catalog.fs.cached import (
    CACHE_OPTIONS,
    TOKEN_PREFIX,
    CachePolicy,
    FileRecord,
    FileTable,
    TrustCache,
    PathClaims,
    WriteType,
    read_type_of,
    write_type_of,
)
from catalog.fs.local import local_path
from catalog.fs.fingerprint import ABSENT, digest_statuses
from catalog.fs.ufs import (
    UFS_SCHEMES,
    FileStatus,
    UnderFileSystem,
    is_within,
    load_ufs,
    fold_scheme,
    normalize_uri,
    uri_scheme,
)

if TYPE_CHECKING:
    from catalog.cache.store import BlockStore
    from catalog.fs.persist import Persister
    from catalog.fs.writer import FileWriter
    from catalog.store import StateStore

CATALOG_ROOT = "/catalog"
#: Options every mount understands; the rest go to its under file system.
MOUNT_OPTIONS = frozenset({"readonly"}) | CACHE_OPTIONS
#: Chunk of reads that bypass the block store (no cache configured).
READ_CHUNK = 4 * 1024 * 1024
_MAX_PATH = 4096
_SECRET_WORDS = ("secret", "password", "token")
REDACTED = "****"
_Chunk = TypeVar("_Chunk", bytes, "bytes | BlockSegment")


def is_secret_option(key: str) -> bool:
    return any(w in key.lower() for w in _SECRET_WORDS)


def redact(options: Mapping[str, str]) -> dict[str, str]:
    """``options`` with secret values replaced by :data:`REDACTED`."""
    return {k: (REDACTED if is_secret_option(k) else v) for k, v in options.items()}


_CONTROL = re.compile("[\x00-\x1f\x7f]")


def normalize_path(path: str) -> str:
    """The canonical namespace path: absolute, no ``.``/``..``/empty segments, no trailing ``/``."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise InvalidInputError(f"namespace path '{path}' must be absolute (start with '/')")
    if len(path) > _MAX_PATH:
        raise InvalidInputError(f"namespace path is longer than {_MAX_PATH} characters")
    if _CONTROL.search(path):
        raise InvalidInputError(f"namespace path {path!r} contains control characters")
    if "//" not in path and "/." not in path and (path == "/" or not path.endswith("/")):
        return path  # canonical already (the common case)
    segments = [s for s in path.split("/") if s]
    if any(s in (".", "..") for s in segments):
        raise InvalidInputError(f"namespace path '{path}' may not contain '.' or '..'")
    return "/" + "/".join(segments)


def _under(path: str, root: str) -> bool:
    return root == "/" or path == root or path.startswith(root + "/")


@dataclass(frozen=True)
class Mount:
    """A mount point: namespace ``path`` served by the storage at ``ufs_uri``."""

    path: str
    ufs_uri: str
    options: Mapping[str, str] = field(default_factory=dict)
    readonly: bool = False
    builtin: bool = False
    created_at: float = 0.0

    @property
    def ufs_options(self) -> dict[str, str]:
        return {k: v for k, v in self.options.items() if k not in MOUNT_OPTIONS}

    def public(self) -> dict[str, Any]:
        """What a user may see of this mount (secrets redacted)."""
        return {"path": self.path, "ufs_uri": self.ufs_uri, "options": redact(self.options),
                "readonly": self.readonly, "builtin": self.builtin,
                "created_at": self.created_at}

    def to_ufs(self, path: str) -> str:
        rest = path[len(self.path):].lstrip("/")
        return self.ufs_uri.rstrip("/") + "/" + rest if rest else self.ufs_uri

    def to_path(self, uri: str) -> str:
        rest = fold_scheme(uri)[len(fold_scheme(self.ufs_uri)):].lstrip("/")
        return (self.path.rstrip("/") + "/" + rest) if rest else self.path


@dataclass(frozen=True)
class NsEntry:
    """One entry of a namespace listing or stat."""

    path: str
    is_dir: bool
    size: int
    mtime_ns: int
    ufs_uri: str | None  # None for a directory that only holds mount points
    mount_point: bool = False

    @property
    def name(self) -> str:
        return posixpath.basename(self.path) or "/"

    def to_dict(self) -> dict[str, Any]:
        """For display: names that are not UTF-8 shown ``\\x``-escaped."""
        return {"path": _shown(self.path), "name": _shown(self.name), "is_dir": self.is_dir,
                "size": self.size, "mtime_ns": self.mtime_ns,
                "ufs_uri": None if self.ufs_uri is None else _shown(self.ufs_uri),
                "mount_point": self.mount_point}


def _shown(text: str) -> str:
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class Namespace:
    """Mount table + resolver + cached under file systems; the only door to storage."""

    def __init__(self, store: StateStore | None = None, *, root_ufs: str | None = None,
                 root_options: Mapping[str, str] | None = None,
                 list_parallelism: int = 16, group_listing: int = 8,
                 cache: BlockStore | None = None, persister: bool = True) -> None:
        self.store = store
        #: The block store under the namespace (None: reads and writes go to the UFS only).
        self.cache = cache
        self._files = FileTable(store) if store is not None and cache is not None else None
        self._identities: TrustCache[FileIdentity] = TrustCache()
        #: Directory listings and stats of remote storages, trusted as the identities are.
        self._listings: TrustCache[list[FileStatus]] = TrustCache(limit=10_000)
        self._infos: TrustCache[FileStatus] = TrustCache()
        #: The last fingerprint of each location (:meth:`fingerprints`).
        self._fingerprinted: dict[str, str | None] = {}
        self._policies: dict[tuple[str, tuple[tuple[str, str], ...]], CachePolicy] = {}
        #: Per mount root: whether its stats never wait on a network (quick_identity).
        self._local_stats: dict[str, bool] = {}
        #: Claims serializing the under-storage changes of one path.
        self.claims = PathClaims()
        #: The background persister of ASYNC_THROUGH writes (None without a cache).
        self.persister: Persister | None = None
        self.list_parallelism = max(1, list_parallelism)
        #: Siblings that share one recursive listing of their parent (remote storages).
        self.group_listing = max(2, group_listing)
        self._lock = threading.RLock()
        self._mounts: dict[str, Mount] = {}
        self._ufs: dict[str, UnderFileSystem] = {}
        self._adhoc: dict[str, UnderFileSystem] = {}
        if root_ufs is None and store is not None:
            # Raw, not Path.as_uri(): storage URIs are not percent-decoded anywhere.
            root_ufs = "file://" + str((store.data_dir / "catalog").resolve())
        if root_ufs is not None:
            root = self._validated(CATALOG_ROOT, root_ufs, root_options or {}, builtin=True)
            self._mounts[root.path] = root
            if root.ufs_uri.startswith("file:"):
                self.ufs(root).mkdirs(root.ufs_uri)
        if store is not None:
            for rec in store.mounts():
                self._mounts[rec.path] = Mount(rec.path, rec.ufs_uri, rec.options,
                                               rec.options.get("readonly") == "true",
                                               created_at=rec.created_at)
        if self._files is not None:
            from catalog.fs.persist import Persister

            self._reconcile()
            self.persister = Persister(self)
            if persister:
                self.persister.start()

    # -- the mount table -------------------------------------------------------------------------

    def mounts(self) -> list[Mount]:
        with self._lock:
            return sorted(self._mounts.values(), key=lambda m: m.path)

    def mount(self, path: str, ufs_uri: str, options: Mapping[str, str] | None = None) -> Mount:
        """Mount ``ufs_uri`` at ``path`` after checking it can be reached; persisted."""
        with self._lock:
            m = self._validated(path, ufs_uri, dict(options or {}), builtin=False)
            if m.path in self._mounts:
                raise AlreadyExistsError(f"'{m.path}' is a mount point already "
                                         f"({self._mounts[m.path].ufs_uri})")
            for other in self._mounts.values():
                a, b = fold_scheme(m.ufs_uri), fold_scheme(other.ufs_uri)
                if is_within(a, b) or is_within(b, a):
                    raise InvalidInputError(
                        f"{m.ufs_uri} overlaps {other.ufs_uri}, mounted at {other.path}: "
                        "under-storage roots of mounts may not nest")
            parent = self._mount_of(m.path)
            if parent is not None and parent.path != m.path:
                if self.ufs(parent).info(parent.to_ufs(m.path)) is not None:
                    raise AlreadyExistsError(
                        f"'{m.path}' exists in the mount {parent.path} ({parent.to_ufs(m.path)}); "
                        "mount elsewhere")
            ufs = self.ufs(m)
            status = ufs.info(_bucket_root(m.ufs_uri))
            if status is None or not status.is_dir:
                raise NoSuchPathError(f"cannot mount {m.ufs_uri}: no such directory or bucket")
            if self.store is not None:
                with self.store.transaction() as conn:
                    self.store.insert_mount(conn, m.path, m.ufs_uri, dict(m.options),
                                            m.created_at)
            self._mounts[m.path] = m
            return m

    def unmount(self, path: str, in_use: Callable[[Mount], Sequence[str]] | None = None) -> None:
        """Remove a mount; refused for the catalog root and while ``in_use`` names users."""
        with self._lock:
            p = normalize_path(path)
            m = self._mounts.get(p)
            if m is None:
                raise NoSuchPathError(f"'{p}' is not a mount point")
            if m.builtin:
                raise InUseError(f"'{p}' is the catalog's own root and cannot be unmounted")
            users = list(in_use(m)) if in_use is not None else []
            if users:
                more = f" and {len(users) - 3} more" if len(users) > 3 else ""
                raise InUseError(f"cannot unmount '{p}': it serves {', '.join(users[:3])}{more}")
            if self.store is not None:
                with self.store.transaction() as conn:
                    self.store.delete_mount(conn, p)
            del self._mounts[p]
            ufs = self._ufs.pop(p, None)
            if ufs is not None:
                ufs.close()

    def _validated(self, path: str, ufs_uri: str, options: Mapping[str, str],
                   builtin: bool) -> Mount:
        p = normalize_path(path)
        if p == "/":
            raise InvalidInputError("cannot mount at '/'")
        if not builtin and _under(p, CATALOG_ROOT):
            raise InvalidInputError(f"'{CATALOG_ROOT}' is the catalog's own root; mount elsewhere")
        uri = normalize_uri(ufs_uri)
        scheme = uri_scheme(uri)
        if scheme not in UFS_SCHEMES:
            raise InvalidInputError(f"unsupported storage scheme '{scheme}' (supported: "
                                    f"{', '.join(sorted(UFS_SCHEMES))})")
        readonly = str(options.get("readonly", "false")).strip().lower()
        if readonly not in ("true", "false"):
            raise InvalidOptionError(f"readonly must be true or false, got '{readonly}'")
        opts = {k: str(v) for k, v in options.items()}
        if "readonly" in opts:
            opts["readonly"] = readonly
        m = Mount(p, uri, opts, readonly == "true", builtin, time.time())
        probe = load_ufs(uri, m.ufs_options)  # validates the options, names unknown ones
        try:
            CachePolicy.of(opts, probe.remote)  # validates the cache options
        finally:
            probe.close()
        return m

    def policy(self, mount: Mount) -> CachePolicy:
        """The cache options of ``mount``, parsed."""
        key = (mount.path, tuple(sorted(mount.options.items())))
        pol = self._policies.get(key)
        if pol is None:
            pol = self._policies[key] = CachePolicy.of(mount.options, self.ufs(mount).remote)
        return pol

    # -- resolution ------------------------------------------------------------------------------

    def _mount_of(self, path: str) -> Mount | None:
        best: Mount | None = None
        for m in self._mounts.values():
            if _under(path, m.path) and (best is None or len(m.path) > len(best.path)):
                best = m
        return best

    def resolve(self, path: str) -> tuple[Mount, str]:
        """The mount serving namespace ``path`` and the UFS URI it stands for."""
        p = normalize_path(path)
        with self._lock:
            m = self._mount_of(p)
        if m is None:
            raise NoSuchPathError(f"no mount serves '{p}'")
        return m, m.to_ufs(p)

    def reverse(self, uri: str) -> tuple[Mount, str] | None:
        """The mount whose storage holds ``uri`` and its namespace path; None if none does."""
        folded = fold_scheme(normalize_uri(uri))
        best: Mount | None = None
        with self._lock:
            for m in self._mounts.values():
                if is_within(folded, fold_scheme(m.ufs_uri)) and (
                        best is None or len(m.ufs_uri) > len(best.ufs_uri)):
                    best = m
        return (best, best.to_path(folded)) if best is not None else None

    def ufs(self, mount: Mount) -> UnderFileSystem:
        """The (cached) under file system of ``mount``."""
        with self._lock:
            ufs = self._ufs.get(mount.path)
            if ufs is None or ufs.options != mount.ufs_options:
                ufs = load_ufs(mount.ufs_uri, mount.ufs_options)
                self._ufs[mount.path] = ufs
            return ufs

    def ufs_for(self, uri: str) -> UnderFileSystem:
        """The under file system to reach UFS URI ``uri``: its mount's, else one per endpoint
        with default credentials."""
        found = self.reverse(uri)
        if found is not None:
            return self.ufs(found[0])
        scheme = uri_scheme(uri)
        key = "file" if scheme == "file" else normalize_uri(uri).split("/", 3)[2]
        key = f"{scheme}:{key}"
        with self._lock:
            ufs = self._adhoc.get(key)
            if ufs is None:
                ufs = self._adhoc[key] = load_ufs(uri, {})
            return ufs

    def location_of(self, target: str) -> tuple[UnderFileSystem, str]:
        """(under file system, UFS URI) of a namespace path or a UFS URI (``file://``,
        ``s3://``, a plain absolute local path, or ``strata:///ns/path``)."""
        if target.startswith("strata:"):
            path = "/" + target[len("strata:"):].lstrip("/")
            m, uri = self.resolve(path)
            return self.ufs(m), uri
        uri = normalize_uri(target)
        return self.ufs_for(uri), uri

    # -- browsing --------------------------------------------------------------------------------

    def _mount_children(self, path: str) -> dict[str, Mount | None]:
        """Names of the mount points (or of folders leading to them) right below ``path``."""
        out: dict[str, Mount | None] = {}
        for m in self._mounts.values():
            if m.path != path and _under(m.path, path):
                rest = m.path[len(path):].lstrip("/")
                name = rest.split("/", 1)[0]
                if "/" not in rest:
                    out[name] = m
                else:
                    out.setdefault(name, None)
        return out

    def ls(self, path: str) -> list[NsEntry]:
        """Entries right below ``path``: its storage's files and folders, files held by the
        cache only, and mount points."""
        p = normalize_path(path)
        with self._lock:
            m = self._mount_of(p)
            children = self._mount_children(p)
        entries: dict[str, NsEntry] = {}
        listed: list[FileStatus] | None = None
        if m is not None:
            listed = self._list_ufs(m, m.to_ufs(p))
            for st in listed or []:
                child = (p.rstrip("/") + "/" + st.rel) if st.rel else p
                entries[child] = NsEntry(child, st.is_dir, st.size, st.mtime_ns, st.uri)
        cached = self._files.under(p) if self._files is not None else []
        if cached and any(r.path == p for r in cached):
            raise InvalidInputError(f"'{p}' is a file, not a directory")
        for rec in cached:
            rest = rec.path[len(p):].lstrip("/")
            name, sep, _ = rest.partition("/")
            child = p.rstrip("/") + "/" + name
            if sep:
                if child not in entries:
                    entries[child] = NsEntry(child, True, 0, rec.mtime_ns,
                                             m.to_ufs(child) if m is not None else None)
            else:
                entries[child] = NsEntry(child, False, rec.size, rec.mtime_ns, rec.uri)
        if listed is None and not children and not cached:
            raise NoSuchPathError(f"no such directory '{p}'" + (
                "" if m is None else f" ({m.to_ufs(p)})"))
        for name, child_mount in children.items():
            child = p.rstrip("/") + "/" + name
            entries[child] = NsEntry(child, True, 0, 0,
                                     child_mount.ufs_uri if child_mount else None,
                                     mount_point=child_mount is not None)
        return sorted(entries.values(), key=lambda e: e.path)

    def _list_ufs(self, m: Mount, uri: str) -> list[FileStatus] | None:
        """``uri``'s listing (None: no such directory), trusted for the mount's
        ``metadata.sync.interval``."""
        ufs = self.ufs(m)
        return self._listings.get(uri, self.policy(m).sync_interval_s, lambda: ufs.list(uri))

    def _info_ufs(self, m: Mount, uri: str) -> FileStatus | None:
        """``uri``'s status (None: absent), trusted as :meth:`_list_ufs`'s listings."""
        ufs = self.ufs(m)
        return self._infos.get(uri, self.policy(m).sync_interval_s, lambda: ufs.info(uri))

    def forget(self, uri: str, *, recursive: bool = False) -> None:
        """Drop what is trusted about UFS ``uri`` (its identity, status, listing, the tree
        below it with ``recursive``) and the listings and statuses of its parents: called by
        every change made through the namespace, so its own changes are seen at once (others
        within the mount's ``metadata.sync.interval``)."""
        self._identities.invalidate(uri, recursive=recursive)
        self._listings.invalidate(uri, recursive=recursive)
        self._infos.invalidate(uri, recursive=recursive)
        parent = uri.rstrip("/")
        while "/" in parent.split("://", 1)[-1]:
            parent = parent.rsplit("/", 1)[0]
            self._listings.invalidate(parent)
            self._listings.invalidate(parent + "/")
            self._infos.invalidate(parent)
            self._infos.invalidate(parent + "/")

    def stat(self, path: str) -> NsEntry:
        p = normalize_path(path)
        with self._lock:
            mount_here = self._mounts.get(p)
            m = self._mount_of(p)
            children = self._mount_children(p)
        if mount_here is not None:
            st = self._info_ufs(mount_here, _bucket_root(mount_here.ufs_uri))
            return NsEntry(p, True, 0, st.mtime_ns if st else 0, mount_here.ufs_uri, True)
        rec = self._record(p)
        if rec is not None:
            return NsEntry(p, False, rec.size, rec.mtime_ns, rec.uri)
        st = self._info_ufs(m, m.to_ufs(p)) if m is not None else None
        if st is not None:
            return NsEntry(p, st.is_dir, st.size, st.mtime_ns, st.uri)
        if children or p == "/":
            return NsEntry(p, True, 0, 0, None)
        if self._files is not None:
            below = self._files.under(p)
            if below:
                return NsEntry(p, True, 0, below[0].mtime_ns,
                               m.to_ufs(p) if m is not None else None)
        raise NoSuchPathError(f"no such file or directory '{p}'" + (
            "" if m is None else f" ({m.to_ufs(p)})"))

    # -- reading ---------------------------------------------------------------------------------

    def _record(self, path: str) -> FileRecord | None:
        return self._files.get(path) if self._files is not None else None

    def identity(self, path: str) -> FileIdentity:
        """The identity the block store keys ``path``'s blocks by: from the file table for a
        file held by the cache only, else from the under storage (trusted for the mount's
        ``metadata.sync.interval``). NoSuchPathError when absent or a directory."""
        p = normalize_path(path)
        rec = self._record(p)
        if rec is not None:
            return rec.identity
        m, uri = self.resolve(p)
        return self._ufs_identity(m, uri, self.ufs(m))

    def _ufs_identity(self, m: Mount, uri: str, ufs: UnderFileSystem) -> FileIdentity:
        def load() -> FileIdentity | None:
            st = ufs.stat_file(uri)
            if st is None or st.is_dir:
                return None
            return FileIdentity(uri, st.size, st.mtime_ns, st.etag)

        ident = self._identities.get(uri, self.policy(m).sync_interval_s, load)
        if ident is None:
            st = ufs.info(uri)
            if st is not None and st.is_dir:
                raise InvalidInputError(f"{uri} is a directory")
            raise NoSuchPathError(f"no file {uri}")
        return ident

    def quick_identity(self, path: str) -> FileIdentity | None:
        """:meth:`identity` when no network has to be waited for: a file held by the cache only,
        an identity read less than the mount's ``metadata.sync.interval`` ago, or a stat of a
        mount on a local, non-network file system (:func:`catalog.filesystems.stat_is_local`);
        else None. NoSuchPathError / InvalidInputError as :meth:`identity` for such a stat."""
        p = normalize_path(path)
        rec = self._record(p)
        if rec is not None:
            return rec.identity
        m, uri = self.resolve(p)
        ident = self._identities.peek(uri, self.policy(m).sync_interval_s)
        if ident is None and self._stat_is_local(m):
            return self._ufs_identity(m, uri, self.ufs(m))
        return ident

    def _stat_is_local(self, m: Mount) -> bool:
        local = self._local_stats.get(m.ufs_uri)
        if local is None:
            root = local_path(m.ufs_uri)
            local = self._local_stats[m.ufs_uri] = root is not None and stat_is_local(root)
        return local

    def read_cached(self, path: str, identity: FileIdentity, start: int, end: int
                    ) -> bytes | None:
        """Bytes ``[start, end)`` of the file ``identity`` names (from
        :meth:`quick_identity`; ``end`` clamped to its size) if the block store holds them
        where it reads without waiting for a disk (:meth:`BlockStore.read_cached`, with the
        mount's read type); else None: read with :meth:`iter_range` then."""
        if self.cache is None:
            return None
        p = normalize_path(path)
        if self._record(p) is not None:  # read as iter_range reads a cache-only file
            return self.cache.read_cached(identity, start, end, ReadType.NO_CACHE)
        m, _ = self.resolve(p)
        return self.cache.read_cached(identity, start, end, self.policy(m).read_type)

    @overload
    def iter_range(self, path: str, start: int = ..., end: int | None = ...,
                   read_type: ReadType | str | None = ..., *,
                   segments: Literal[False] = ...) -> Iterator[bytes]: ...

    @overload
    def iter_range(self, path: str, start: int = ..., end: int | None = ...,
                   read_type: ReadType | str | None = ..., *,
                   segments: bool) -> Iterator[bytes | BlockSegment]: ...

    def iter_range(self, path: str, start: int = 0, end: int | None = None,
                   read_type: ReadType | str | None = None, *, segments: bool = False
                   ) -> Iterator[bytes | BlockSegment]:
        """Bytes ``[start, end)`` of a file (to its end when ``end`` is None) as chunks, through
        the block store with ``read_type`` (default: the mount's ``read.type``). The file is
        looked up now (NoSuchPathError before any byte); the chunks come as they are read. With
        ``segments``, cached blocks come as :class:`BlockSegment` (see
        :meth:`BlockStore.iter_read`)."""
        p = normalize_path(path)
        if start < 0 or (end is not None and end < start):
            raise InvalidInputError(f"bad byte range [{start}, {end})")
        rec = self._record(p)
        if rec is not None:
            return self._iter_record(rec, start, rec.size if end is None else end, segments)
        m, uri = self.resolve(p)
        ufs = self.ufs(m)
        if self.cache is None:
            return _ufs_chunks(ufs, uri, start, end)
        rt = read_type_of(read_type, "read type") if read_type is not None else \
            self.policy(m).read_type
        ident = self._ufs_identity(m, uri, ufs)
        stop = ident.size if end is None else end
        return self._guarded(self.cache.iter_read(
            ident, start, stop, lambda s, e: ufs.read_range(uri, s, e), rt,
            segments=segments), uri)

    def _guarded(self, chunks: Iterator[_Chunk], uri: str) -> Iterator[_Chunk]:
        """``chunks``, forgetting the file's identity when the read fails (changed file)."""
        try:
            yield from chunks
        except CatalogError:
            self.forget(uri)
            raise

    @overload
    def _iter_record(self, rec: FileRecord, start: int, end: int,
                     segments: Literal[False] = ...) -> Iterator[bytes]: ...

    @overload
    def _iter_record(self, rec: FileRecord, start: int, end: int,
                     segments: bool) -> Iterator[bytes | BlockSegment]: ...

    def _iter_record(self, rec: FileRecord, start: int, end: int, segments: bool = False
                     ) -> Iterator[bytes | BlockSegment]:
        """Bytes of a file held by the cache only, from its first copy, a missing block from the
        next copy (never cached again: reads of unpersisted data change nothing)."""
        cache = self.cache
        assert cache is not None

        def lost(s: int, e: int) -> bytes:
            raise UfsError(f"{rec.path}: cached bytes [{s}, {e}) are lost from every copy "
                           f"({rec.replicas}) and the file is not persisted")

        fetch: Callable[[int, int], bytes] = lost
        for ident in reversed(rec.copies[1:]):
            fetch = _copy_fetch(cache, ident, fetch)
        return cache.iter_read(rec.identity, start, end, fetch, ReadType.NO_CACHE,
                               segments=segments)

    def open_input(self, path: str, read_type: ReadType | str | None = None) -> CachedInput:
        """A seekable binary reader of a file through the block store (see
        :meth:`iter_range`)."""
        p = normalize_path(path)
        size = self.identity(p).size if (self.cache is not None or self._record(p)) else None
        if size is None:
            m, uri = self.resolve(p)
            st = self.ufs(m).info(uri)
            if st is None:
                raise NoSuchPathError(f"no file {uri}")
            if st.is_dir:
                raise InvalidInputError(f"{uri} is a directory")
            size = st.size
        return CachedInput(self, p, size, read_type)

    def read(self, path: str, offset: int = 0, length: int | None = None,
             read_type: ReadType | str | None = None) -> bytes:
        """Bytes of a file (``length`` from ``offset``; all the rest when None)."""
        end = None if length is None else offset + length
        return b"".join(self.iter_range(path, offset, end, read_type))

    # -- writing ---------------------------------------------------------------------------------

    def _writable(self, path: str) -> tuple[UnderFileSystem, str]:
        m, uri = self.resolve(path)
        if m.readonly:
            raise ReadOnlyError(f"mount {m.path} ({m.ufs_uri}) is read-only")
        return self.ufs(m), uri

    def write_type(self, path: str, write_type: WriteType | str | None = None) -> WriteType:
        """The write type a write of ``path`` gets: ``write_type``, else its mount's."""
        if write_type is not None:
            return write_type_of(write_type, "write type")
        m, _ = self.resolve(path)
        return self.policy(m).write_type

    def write_bytes(self, path: str, data: bytes,
                    write_type: WriteType | str | None = None) -> None:
        with self.open_output(path, write_type) as f:
            f.write(data)

    def open_output(self, path: str, write_type: WriteType | str | None = None) -> FileWriter:
        """A writer of ``path`` with ``write_type`` (default: the mount's ``write.type``); the
        file becomes visible, whole, when it is closed."""
        from catalog.fs.writer import FileWriter

        p = normalize_path(path)
        ufs, uri = self._writable(p)
        m, _ = self.resolve(p)
        wt = self.write_type(p, write_type)
        if self.cache is None and wt in (WriteType.CACHE_THROUGH,):
            wt = WriteType.THROUGH
        return FileWriter(self, p, m, uri, ufs, wt, self.policy(m).replication)

    def mkdirs(self, path: str) -> None:
        ufs, uri = self._writable(path)
        ufs.mkdirs(uri)
        self.forget(uri)

    def delete(self, path: str, recursive: bool = False) -> None:
        """Remove a file (or a tree with ``recursive``) from the cache's file table and the
        under storage, after any persist of it in progress (the path is claimed)."""
        p = normalize_path(path)
        if p in self._mounts:
            raise InUseError(f"'{p}' is a mount point: unmount it instead")
        ufs, uri = self._writable(p)
        with self.claims(p):
            recs = [] if self._files is None else (
                self._files.under(p) if recursive else
                [r for r in [self._files.get(p)] if r is not None])
            if recs:
                assert self.store is not None
                with self.store.transaction() as conn:
                    for r in recs:
                        self._files.remove(conn, r.path)  # type: ignore[union-attr]
                for r in recs:
                    self._discard(r)
            only_cached = bool(recs) and not recursive
            try:
                ufs.delete(uri, recursive)
            except InvalidInputError:
                if not only_cached:
                    raise
            self.forget(uri, recursive=True)
            if self.cache is not None:
                try:
                    self.cache.free(uri)
                except (BlockNotPersistedError, InvalidInputError):
                    pass

    def delete_uri(self, uri: str) -> None:
        """Delete the file at UFS URI ``uri`` through its mount (the block store's TTL action
        ``delete``)."""
        found = self.reverse(uri)
        if found is None:
            raise NoSuchPathError(f"no mount serves {uri}")
        self.delete(found[1])

    def _supersede(self, path: str) -> None:
        """Drop the cache-only version of ``path`` (a write through the UFS replaces it)."""
        if self._files is None:
            return
        rec = self._files.get(path)
        if rec is not None:
            assert self.store is not None
            with self.store.transaction() as conn:
                self._files.remove(conn, path)
            self._discard(rec)

    def _discard(self, rec: FileRecord) -> None:
        if self.cache is not None:
            for ident in rec.copies:
                self.cache.discard(ident)

    def _reconcile(self) -> None:
        """At open: drop unpersisted blocks of cache-written versions no file table row names
        (a crash after their commit and before the row, or after a persist's row delete)."""
        assert self.cache is not None and self._files is not None
        live = {r.etag for r in self._files.all()}
        orphans: dict[str, FileIdentity] = {}
        for b in self.cache.unpersisted():
            etag = b.identity.etag or ""
            if etag.startswith(TOKEN_PREFIX) and etag.split("#", 1)[0] not in live:
                orphans[b.identity.key] = b.identity
        for ident in orphans.values():
            self.cache.discard(ident)

    # -- cache operations (the CLI's and REST's fs pin|unpin|free|set-ttl|load|persist) ---------

    def _need_cache(self, what: str) -> BlockStore:
        if self.cache is None:
            raise InvalidInputError(f"cannot {what}: no block store is configured")
        return self.cache

    def _cache_uri(self, path: str) -> tuple[str, str]:
        p = normalize_path(path)
        self.stat(p)  # NoSuchPathError when absent
        _, uri = self.resolve(p)
        return p, uri

    def persist(self, path: str) -> int:
        """Persist now the files at or under ``path`` that are in the cache only (MUST_CACHE,
        pending ASYNC_THROUGH); the number persisted (0: all are in the under storage)."""
        self._need_cache("persist")
        p = normalize_path(path)
        self.stat(p)
        assert self._files is not None and self.persister is not None
        recs = self._files.under(p)
        for rec in recs:
            self._writable(rec.path)
            self.persister.persist(rec)
        return len(recs)

    def free(self, path: str) -> int:
        """Drop the cached blocks of a file or tree; the bytes freed. Refused
        (BlockNotPersistedError) when any of them is not persisted."""
        cache = self._need_cache("free")
        p, uri = self._cache_uri(path)
        if self._files is not None:
            pending = self._files.under(p)
            if pending:
                raise BlockNotPersistedError(
                    f"cannot free {p}: {len(pending)} file(s) ({pending[0].path}...) are in the "
                    "cache only (not persisted yet): persist them first")
        return cache.free(uri)

    def pin(self, path: str) -> int:
        """Pin a file or tree in the cache (never evicted); the blocks pinned now."""
        cache = self._need_cache("pin")
        return cache.pin(self._cache_uri(path)[1])

    def unpin(self, path: str) -> int:
        """Remove the pin of a file or tree; the blocks it covered."""
        cache = self._need_cache("unpin")
        return cache.unpin(self._cache_uri(path)[1])

    def set_ttl(self, path: str, seconds: float | None,
                action: TtlAction | str = TtlAction.FREE) -> int:
        """Cached blocks of a file or tree expire ``seconds`` after they were cached, then are
        freed or (``delete``) the file is deleted; ``None`` removes the TTL."""
        cache = self._need_cache("set a TTL")
        uri = self._cache_uri(path)[1]
        if seconds is None:
            return cache.clear_ttl(uri)
        try:
            act = TtlAction(str(getattr(action, "value", action)).lower())
        except ValueError as e:
            raise InvalidInputError(f"a TTL action is free or delete, got '{action}'") from e
        return cache.set_ttl(uri, float(seconds), act)

    def load(self, path: str) -> int:
        """Read a file (every file of a tree) into the cache; the bytes read."""
        cache = self._need_cache("load")
        p = normalize_path(path)
        entry = self.stat(p)
        if entry.is_dir:
            total = 0
            for child in self.ls(p):
                if not child.mount_point:
                    total += self.load(child.path)
            return total
        if self._record(p) is not None:
            return 0  # held by the cache already
        m, uri = self.resolve(p)
        ufs = self.ufs(m)
        ident = self._ufs_identity(m, uri, ufs)
        return cache.load(ident, lambda s, e: ufs.read_range(uri, s, e))

    # -- fingerprints ----------------------------------------------------------------------------

    def fingerprint(self, location: str | None) -> str | None:
        """Digest of the visible files under a UFS location (see :func:`fingerprints`)."""
        if not location:
            return None
        return self.fingerprints([location]).get(location)

    def fingerprints(self, locations: Iterable[str | None]) -> dict[str, str | None]:
        """Digests of the visible files under each location, listed in parallel.

        :data:`ABSENT` for a location that does not exist; None where the storage is one Strata
        does not read (``hdfs://``: no data fingerprint). Raises ``UfsUnavailableError`` when any
        location cannot be listed: a storage outage is never taken for deleted data.
        """
        wanted = list(dict.fromkeys(loc for loc in locations if loc))
        if not wanted:
            return {}
        resolved: dict[str, tuple[UnderFileSystem, str] | None] = {}
        for loc in wanted:
            try:
                resolved[loc] = self.location_of(loc)
            except InvalidInputError:
                resolved[loc] = None
        out = self._fingerprints(wanted, resolved)
        # A location whose files changed since it was last fingerprinted: what is trusted
        # about it (listings, stats, identities) is dropped now, not when its
        # metadata.sync.interval ends, so a sync that sees a change serves it at once.
        with self._lock:
            for loc, digest in out.items():
                found = resolved.get(loc)
                if found is not None and self._fingerprinted.get(loc, "") != digest:
                    self.forget(found[1], recursive=True)
                    if len(self._fingerprinted) >= 1_000_000:
                        self._fingerprinted.clear()
                    self._fingerprinted[loc] = digest
        return out

    def _fingerprints(self, wanted: list[str],
                      resolved: dict[str, tuple[UnderFileSystem, str] | None]
                      ) -> dict[str, str | None]:
        def one(location: str) -> str | None:
            found = resolved[location]
            if found is None:
                return None  # a scheme we do not read: no fingerprint
            ufs, uri = found
            try:
                listed = ufs.list(uri, recursive=True)
            except UfsUnavailableError as e:
                if uri.startswith("file:") or self.reverse(uri) is not None:
                    raise
                raise UfsUnavailableError(
                    f"{e} (no mount serves it: mount its bucket with credentials, "
                    "catalogctl fs mount)") from e
            return ABSENT if listed is None else digest_statuses(listed)

        # Local listings are cheaper than a thread hand-off: only remote ones go to the pool.
        remote = [loc for loc in wanted if (r := resolved[loc]) is not None and r[0].remote]
        parallel = set(remote)
        out: dict[str, str | None] = {loc: one(loc) for loc in wanted if loc not in parallel}
        units = self._listing_units(remote, resolved, one)
        if len(units) <= 1 or self.list_parallelism == 1:
            for unit in units:
                out.update(unit())
            return out
        with ThreadPoolExecutor(max_workers=min(self.list_parallelism, len(units)),
                                thread_name_prefix="fs-list") as pool:
            futures = [pool.submit(unit) for unit in units]
            try:
                for fut in futures:
                    out.update(fut.result())
            except CatalogError:
                for f in futures:
                    f.cancel()
                raise
            except OSError as e:  # a storage error no UFS translated
                for f in futures:
                    f.cancel()
                raise UfsUnavailableError(f"cannot list: {e}") from e
        return out

    def _listing_units(self, remote: Sequence[str],
                       resolved: Mapping[str, tuple[UnderFileSystem, str] | None],
                       one: Callable[[str], str | None]
                       ) -> list[Callable[[], dict[str, str | None]]]:
        """The listings to make: one per location, except that :attr:`group_listing` or more
        siblings (partition folders of one table) are served by one recursive listing of their
        parent, split per child: on S3 a flat listing returns 1,000 keys per request, where one
        request per partition would return one or two."""
        by_parent: dict[tuple[int, str], list[tuple[str, str]]] = {}
        for loc in remote:
            found = resolved[loc]
            assert found is not None
            ufs, uri = found
            parent, _, name = uri.rpartition("/")
            if name and "://" in parent and not parent.endswith(":/"):
                by_parent.setdefault((id(ufs), parent), []).append((loc, uri))
        units: list[Callable[[], dict[str, str | None]]] = []
        grouped: set[str] = set()
        for (_, parent), members in by_parent.items():
            if len(members) >= self.group_listing:
                ufs = resolved[members[0][0]][0]  # type: ignore[index]
                units.append(_grouped_listing(ufs, parent, members))
                grouped.update(loc for loc, _ in members)
        units += [_single_listing(one, loc) for loc in remote if loc not in grouped]
        return units

    def close(self) -> None:
        """Stop the persister (the queue stays in the state store) and release the under file
        systems; the block store is its owner's to close."""
        if self.persister is not None:
            self.persister.stop()
        with self._lock:
            for ufs in [*self._ufs.values(), *self._adhoc.values()]:
                ufs.close()
            self._ufs.clear()
            self._adhoc.clear()


def _single_listing(one: Callable[[str], str | None], loc: str
                    ) -> Callable[[], dict[str, str | None]]:
    return lambda: {loc: one(loc)}


def _grouped_listing(ufs: UnderFileSystem, parent: str, members: Sequence[tuple[str, str]]
                     ) -> Callable[[], dict[str, str | None]]:
    def run() -> dict[str, str | None]:
        listed = ufs.list(parent, recursive=True)
        children: dict[str, list[FileStatus]] = {}
        exists: set[str] = set()
        for st in listed or []:
            name, sep, rest = st.rel.partition("/")
            if sep:
                exists.add(name)
                children.setdefault(name, []).append(FileStatus(
                    uri=st.uri, rel=rest, is_dir=st.is_dir, size=st.size, mtime_ns=st.mtime_ns))
            elif st.is_dir:
                exists.add(name)
        out: dict[str, str | None] = {}
        for loc, uri in members:
            name = uri.rpartition("/")[2]
            out[loc] = digest_statuses(children.get(name, [])) if name in exists else ABSENT
        return out

    return run


def _ufs_chunks(ufs: UnderFileSystem, uri: str, start: int, end: int | None
                ) -> Iterator[bytes]:
    """Bytes ``[start, end)`` of a UFS file in chunks (no block store); opened now."""
    f = ufs.open_input(uri)

    def chunks() -> Iterator[bytes]:
        try:
            f.seek(start)
            pos = start
            while end is None or pos < end:
                data = f.read(READ_CHUNK if end is None else min(READ_CHUNK, end - pos))
                if not data:
                    break
                pos += len(data)
                yield bytes(data)
        finally:
            f.close()

    return chunks()


def _copy_fetch(cache: BlockStore, ident: FileIdentity,
                fallback: Callable[[int, int], bytes]) -> Callable[[int, int], bytes]:
    """A fetch reading the cached copy ``ident`` (its missing blocks from ``fallback``)."""
    return lambda s, e: cache.read(ident, s, e, fallback, ReadType.NO_CACHE)


class CachedInput:
    """A seekable binary reader of a namespace file over :meth:`Namespace.iter_range` (one
    range read per ``read`` call)."""

    def __init__(self, ns: Namespace, path: str, size: int,
                 read_type: ReadType | str | None) -> None:
        self.ns = ns
        self.path = path
        self._size = size
        self._read_type = read_type
        self._pos = 0
        self.closed = False

    def size(self) -> int:
        return self._size

    def tell(self) -> int:
        return self._pos

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def read(self, n: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("read of a closed file")
        end = self._size if n is None or n < 0 else min(self._size, self._pos + n)
        if end <= self._pos:
            return b""
        data = b"".join(self.ns.iter_range(self.path, self._pos, end, self._read_type))
        self._pos += len(data)
        return data

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> CachedInput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _bucket_root(uri: str) -> str:
    """What must exist to mount ``uri``: the folder itself, or an S3 prefix's bucket."""
    if uri.startswith(("s3://", "s3a://")):
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://{rest.split('/', 1)[0]}"
    return uri
