"""The object layer of the S3 gateway: buckets, keys and objects over the namespace.

A bucket is a top-level namespace entry (``/lake``), a key a path below it (``lake`` +
``sales/x.csv`` is ``/lake/sales/x.csv``). Every storage access goes through
:class:`catalog.fs.namespace.Namespace` except the final rename of a write on a local mount
(``os.replace`` / ``os.link`` on the resolved file path: the under-storage contract has no rename).
Every read goes through :meth:`ObjectStore.open_range`, which streams through the namespace's
block store; writes take a write type (:meth:`ObjectStore.writer`: ``MUST_CACHE`` /
``ASYNC_THROUGH`` go into the block store through :meth:`Namespace.open_output`, the multipart
staging area is always ``THROUGH`` and read ``NO_CACHE``). Methods are blocking: the app calls
them in its thread pool.

Semantics chosen:

* Objects are files. A folder with nothing visible in it is listed as the marker key
  ``folder/`` (size 0); ``PutObject`` of ``folder/`` with an empty body makes the folder. Deleting
  the last file of a folder on a local mount removes the folders it leaves empty (up to the bucket
  or mount root), as object stores forget implied prefixes (on S3 mounts pyarrow keeps an emptied
  folder as a ``folder/`` marker object, which is then listed); an object and a folder cannot
  share a name (``a`` and ``a/b``): that write is refused with ``InvalidArgument``.
* ETag: the true MD5 (``md5-N`` for multipart uploads) of objects written through the gateway,
  kept as the extended attribute ``user.strata.etag`` (with the size and mtime it belongs to) on
  local files, else in memory; every other file's ETag is the MD5 of its URI, size and mtime_ns:
  stable while the file is unchanged. Nothing else is stored.
* Writes on a local mount go to a hidden sibling (``.<name>.strata-tmp-<id>``) that is renamed over
  the key when the body is complete and verified (``os.link`` for ``If-None-Match: *``, which is
  then atomic); a crash leaves at most the hidden file, never a partial object. On other mounts
  (S3) the verified body is spooled to a local file first, then written with one output stream:
  S3 makes an object visible only when its upload completes; ``If-None-Match: *`` is a check
  before that write there, not atomic.
* Multipart parts are staged under ``/catalog/.s3-uploads/<upload id>/`` (``NNNNN-<id>.data``,
  then ``NNNNN-<id>.json`` with its MD5 and size once the data is complete and verified), hidden
  from listings and refused as keys. Completing writes the object from the parts in one stream
  (as above) and deletes the upload's folder.
* Listing walks folders in key order (UTF-8 code-point order); names that are not UTF-8, hold
  control characters or are hidden temporary files are left out.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import posixpath
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from api.s3.errors import S3Error
from catalog.cache.model import BlockSegment, FileIdentity, ReadType
from catalog.exceptions import InvalidInputError, NoSuchPathError
from catalog.fs.cached import WriteType
from catalog.fs.local import local_path
from catalog.fs.namespace import CATALOG_ROOT, Mount, Namespace, NsEntry

#: Bucket and folder of the multipart staging area.
STAGING_BUCKET = CATALOG_ROOT.strip("/")
STAGING_DIR = ".s3-uploads"
STAGING_ROOT = f"{CATALOG_ROOT}/{STAGING_DIR}"
#: Part of every temporary file name (hidden from listings, refused in keys).
TMP_MARK = ".strata-tmp-"
EMPTY_MD5 = hashlib.md5(b"").hexdigest()
MAX_KEY_BYTES = 1024
MIN_PART_BYTES = 5 * 1024 * 1024
MAX_PARTS = 10_000
READ_CHUNK = 1024 * 1024
COPY_CHUNK = 8 * 1024 * 1024
_XATTR = "user.strata.etag"
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
_PART_META = re.compile(r"^(\d{5})-([0-9a-f]{16})\.json$")


@dataclass(frozen=True)
class ObjectInfo:
    """An object's listing/stat answer; ``etag`` is quoted."""

    key: str
    size: int
    mtime_ns: int
    etag: str


@dataclass(frozen=True)
class Part:
    number: int
    etag: str  # quoted
    size: int
    mtime_ns: int
    data_path: str


@dataclass(frozen=True)
class Upload:
    upload_id: str
    bucket: str
    key: str
    initiated_ns: int

    @property
    def position(self) -> tuple[str, int, str]:
        """Where the upload sorts in ListMultipartUploads: key, then initiation time."""
        return self.key, self.initiated_ns, self.upload_id


@dataclass
class UploadListing:
    """One page of ListMultipartUploads: uploads and common prefixes in listing order."""

    uploads: list[Upload]
    prefixes: list[str]
    truncated: bool
    #: The key (or common prefix) and the upload ID of the last entry, when truncated.
    next_key_marker: str | None
    next_upload_id_marker: str | None


@dataclass(frozen=True)
class CompletePlan:
    parts: tuple[Part, ...]
    etag: str


@dataclass
class Listing:
    objects: list[ObjectInfo]
    prefixes: list[str]
    truncated: bool
    next_marker: str | None


def identity_etag(uri: str, size: int, mtime_ns: int) -> str:
    """The ETag of a file not written through the gateway: MD5 of its identity, quoted."""
    return '"' + hashlib.md5(f"{uri}\0{size}\0{mtime_ns}".encode("utf-8", "surrogateescape")
                             ).hexdigest() + '"'


def multipart_etag(md5s: Sequence[bytes]) -> str:
    """S3's ETag of a multipart object: MD5 of the parts' binary MD5s, ``-N``, quoted."""
    return f'"{hashlib.md5(b"".join(md5s)).hexdigest()}-{len(md5s)}"'


def check_key(bucket: str, key: str) -> None:
    """Refuse keys the namespace cannot hold safely (InvalidArgument / KeyTooLongError /
    AccessDenied for the staging area)."""
    if len(key.encode("utf-8", "surrogateescape")) > MAX_KEY_BYTES:
        raise S3Error("KeyTooLongError", f"the key is longer than {MAX_KEY_BYTES} bytes")
    if any(ord(c) < 0x20 or c == "\x7f" for c in key):
        raise S3Error("InvalidArgument", "the key contains control characters")
    if any(0xDC80 <= ord(c) <= 0xDCFF for c in key):
        raise S3Error("InvalidArgument", "the key is not valid UTF-8")
    if key.startswith("/") or "//" in key:
        raise S3Error("InvalidArgument", "the key contains an empty segment ('//')")
    segments = (key[:-1] if key.endswith("/") else key).split("/")
    if any(s in (".", "..") for s in segments):
        raise S3Error("InvalidArgument", "the key contains a '.' or '..' segment")
    if TMP_MARK in segments[-1]:
        raise S3Error("InvalidArgument", f"keys containing '{TMP_MARK}' are reserved")
    if bucket == STAGING_BUCKET and segments[0] == STAGING_DIR:
        raise S3Error("AccessDenied", "the multipart staging area is not accessible")


def check_bucket(bucket: str) -> None:
    if (not bucket or bucket in (".", "..") or "/" in bucket or len(bucket) > 255
            or any(ord(c) < 0x20 or c == "\x7f" or 0xDC80 <= ord(c) <= 0xDCFF for c in bucket)):
        raise S3Error("InvalidBucketName", "the specified bucket is not valid")


def _visible_name(name: str) -> bool:
    return bool(name) and TMP_MARK not in name and not any(
        ord(c) < 0x20 or c == "\x7f" or 0xDC80 <= ord(c) <= 0xDCFF for c in name)


def _local_file(mount: Mount, uri: str) -> str | None:
    """The local path of a ``file:`` URI (None for other storages)."""
    return local_path(uri)


class _EtagMemo:
    """ETags of objects written through the gateway where no xattr can hold them (bounded)."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._d: OrderedDict[str, tuple[int, int, str]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str, size: int, mtime_ns: int) -> str | None:
        with self._lock:
            hit = self._d.get(path)
            if hit is not None and hit[:2] == (size, mtime_ns):
                self._d.move_to_end(path)
                return hit[2]
            return None

    def put(self, path: str, size: int, mtime_ns: int, etag: str) -> None:
        with self._lock:
            self._d[path] = (size, mtime_ns, etag)
            self._d.move_to_end(path)
            while len(self._d) > self.limit:
                self._d.popitem(last=False)


class RangeReader:
    """Bytes ``[start, end)`` of an opened file, in chunks of at most :data:`READ_CHUNK`; closes
    the file when exhausted, on :meth:`close`, or when garbage-collected."""

    def __init__(self, handle: Any, start: int, end: int) -> None:
        self._f = handle
        self._pos = start
        self._end = end
        handle.seek(start)

    def __iter__(self) -> Iterator[bytes]:
        try:
            while self._pos < self._end:
                data = self._f.read(min(READ_CHUNK, self._end - self._pos))
                if not data:
                    break
                self._pos += len(data)
                yield bytes(data)
        finally:
            self.close()

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


class ChunkReader:
    """The chunks of a namespace read (:meth:`Namespace.iter_range`, cached blocks as
    :class:`BlockSegment` when opened with ``segments``); :meth:`close` stops it."""

    def __init__(self, chunks: Iterator[bytes] | Iterator[bytes | BlockSegment]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        for item in self._chunks:
            yield item.read() if isinstance(item, BlockSegment) else item

    def items(self) -> Iterator[bytes | BlockSegment]:
        """The chunks, cached blocks as :class:`BlockSegment` if opened with ``segments``."""
        return self._chunks

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


class ObjectWriter:
    """Receives an object's bytes and makes it visible at :meth:`commit` only (see the module
    docstring); :meth:`abort` leaves nothing behind. Used from one thread at a time."""

    def __init__(self, store: ObjectStore, path: str, *, direct: bool = False,
                 write_type: WriteType | str | None = None) -> None:
        self.store = store
        self.path = path
        self.size = 0
        mount, uri = store.ns.resolve(path)
        if mount.readonly:
            raise S3Error("AccessDenied", f"mount {mount.path} is read-only")
        try:
            self.write_type = store.ns.write_type(path, write_type)
        except InvalidInputError as e:
            raise S3Error("InvalidArgument", str(e)) from e
        self.mount = mount
        self.uri = uri
        self.local = _local_file(mount, uri)
        self._spool: Any = None
        self._out: Any = None
        self._tmp_path: str | None = None
        self._direct = direct
        #: MUST_CACHE / ASYNC_THROUGH: the namespace's writer into the block store.
        self._cached = self.write_type in (WriteType.MUST_CACHE, WriteType.ASYNC_THROUGH)
        if self._cached:
            if self.local is not None:
                store.check_no_file_parent(mount, self.local)
                if os.path.isdir(self.local):
                    raise S3Error("InvalidArgument", "a folder exists at this key")
            self._out = store.ns.open_output(path, self.write_type)
        elif self.local is not None:
            store.check_no_file_parent(mount, self.local)
            if os.path.isdir(self.local):
                raise S3Error("InvalidArgument", "a folder exists at this key")
            name = posixpath.basename(path)
            tmp = f".{name}{TMP_MARK}{secrets.token_hex(8)}"
            if len(tmp.encode("utf-8", "surrogateescape")) > 200:
                tmp = f"{TMP_MARK}{secrets.token_hex(8)}"
            self._tmp_path = posixpath.join(posixpath.dirname(path), tmp)
            self._out = store.ns.open_output(self._tmp_path, WriteType.THROUGH)
        elif direct:
            self._out = store.ns.open_output(path, self.write_type)
        else:
            self._spool = tempfile.TemporaryFile(dir=store.spool_dir, prefix="s3-spool-")

    def write(self, data: bytes) -> None:
        self.size += len(data)
        (self._out if self._out is not None else self._spool).write(data)

    def commit(self, etag: str, *, exclusive: bool = False, if_match: str | None = None
               ) -> ObjectInfo:
        """Make the object visible with ``etag`` (quoted). ``exclusive``: 412 if the key exists;
        ``if_match``: 412 unless the current object has that ETag."""
        store = self.store
        key = self.path.split("/", 2)[2]
        bucket = self.path.split("/", 2)[1]
        if if_match is not None:
            current = store.head_or_none(bucket, key)
            if current is None:
                raise S3Error("NoSuchKey", "the specified key does not exist")
            if not etag_matches(if_match, current.etag):
                raise S3Error("PreconditionFailed", "At least one of the pre-conditions you "
                              "specified did not hold")
        try:
            if self._cached:
                if exclusive and store.head_or_none(bucket, key) is not None:
                    raise S3Error("PreconditionFailed", "At least one of the pre-conditions you "
                                  "specified did not hold (the key exists)")
                self._out.close()
                self._out = None
                entry = store.ns.stat(self.path)
                store.memo.put(self.path, entry.size, entry.mtime_ns, etag)
                return ObjectInfo(key, entry.size, entry.mtime_ns, etag)
            if self.local is not None:
                assert self._tmp_path is not None
                self._out.close()
                tmp_local = posixpath.join(posixpath.dirname(self.local),
                                           posixpath.basename(self._tmp_path))
                st = os.stat(tmp_local)
                store.remember_etag(self.path, tmp_local, st.st_size, st.st_mtime_ns, etag)
                if exclusive:
                    try:
                        os.link(tmp_local, self.local)
                    except FileExistsError as e:
                        raise S3Error("PreconditionFailed", "At least one of the pre-conditions "
                                      "you specified did not hold (the key exists)") from e
                    os.unlink(tmp_local)
                else:
                    try:
                        os.replace(tmp_local, self.local)
                    except IsADirectoryError as e:
                        raise S3Error("InvalidArgument", "a folder exists at this key") from e
                self._tmp_path = None
                store.ns.forget(self.uri)
                return ObjectInfo(key, st.st_size, st.st_mtime_ns, etag)
            if exclusive and store.head_or_none(bucket, key) is not None:
                raise S3Error("PreconditionFailed", "At least one of the pre-conditions you "
                              "specified did not hold (the key exists)")
            if self._direct:
                self._out.close()
                self._out = None
            else:
                self._spool.seek(0)
                try:
                    with store.ns.open_output(self.path, self.write_type) as out:
                        shutil.copyfileobj(self._spool, out, COPY_CHUNK)
                finally:
                    self._spool.close()
                    self._spool = None
            st_entry = store.ns.stat(self.path)
            store.memo.put(self.path, st_entry.size, st_entry.mtime_ns, etag)
            return ObjectInfo(key, st_entry.size, st_entry.mtime_ns, etag)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Drop what was received (best effort: a direct remote stream is closed and its object
        deleted)."""
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        if self._out is not None and not getattr(self._out, "closed", False):
            try:
                if hasattr(self._out, "abort"):
                    self._out.abort()
                else:
                    self._out.close()
            except Exception:  # noqa: BLE001 - cleaning up after a failure already raised
                pass
            if self._direct and self.local is None and not self._cached:
                try:
                    self.store.ns.delete(self.path)
                except Exception:  # noqa: BLE001
                    pass
        if self._tmp_path is not None:
            try:
                self.store.ns.delete(self._tmp_path)
            except Exception:  # noqa: BLE001
                pass
            self._tmp_path = None


class PartWriter:
    """Receives one part of a multipart upload into the staging area."""

    def __init__(self, store: ObjectStore, upload: Upload, number: int) -> None:
        self.store = store
        self.upload = upload
        self.number = number
        self.size = 0
        self.token = secrets.token_hex(8)
        base = f"{STAGING_ROOT}/{upload.upload_id}/{number:05d}-{self.token}"
        self.data_path = base + ".data"
        self.meta_path = base + ".json"
        self._out = store.ns.open_output(self.data_path, WriteType.THROUGH)

    def write(self, data: bytes) -> None:
        self.size += len(data)
        self._out.write(data)

    def commit(self, md5_hex: str) -> str:
        """Record the part (its metadata is written after its data): its quoted ETag."""
        try:
            self._out.close()
            meta = {"number": self.number, "md5": md5_hex, "size": self.size,
                    "time_ns": time.time_ns(), "data": posixpath.basename(self.data_path)}
            self.store.ns.write_bytes(self.meta_path, json.dumps(meta).encode(),
                                      WriteType.THROUGH)
        except BaseException:
            self.abort()
            raise
        return f'"{md5_hex}"'

    def abort(self) -> None:
        try:
            if not self._out.closed:
                self._out.close()
            self.store.ns.delete(self.data_path)
        except Exception:  # noqa: BLE001 - best effort after a failure already raised
            pass


def etag_matches(header: str, etag: str) -> bool:
    """Whether an ``If-Match`` / ``If-None-Match`` value names ``etag`` (``*`` names any)."""
    bare = etag.strip('"')
    for candidate in header.split(","):
        c = candidate.strip()
        if c.startswith("W/"):
            c = c[2:]
        if c == "*" or c.strip('"') == bare:
            return True
    return False


class ObjectStore:
    """Buckets and objects over a :class:`Namespace` (see the module docstring)."""

    def __init__(self, ns: Namespace, *, spool_dir: str | Path | None = None) -> None:
        self.ns = ns
        self.spool_dir = str(spool_dir) if spool_dir is not None else tempfile.gettempdir()
        os.makedirs(self.spool_dir, exist_ok=True)
        self.memo = _EtagMemo()

    # -- paths -----------------------------------------------------------------------------------

    @staticmethod
    def path(bucket: str, key: str = "") -> str:
        key = key[:-1] if key.endswith("/") else key
        return f"/{bucket}/{key}" if key else f"/{bucket}"

    def check_no_file_parent(self, mount: Mount, local: str) -> None:
        """Refuse a local write whose parent chain holds a file (``a`` when writing ``a/b``)."""
        root = _local_file(mount, mount.ufs_uri) or "/"
        parent = os.path.dirname(local)
        while len(parent) > len(root):
            if os.path.isdir(parent):
                return
            if os.path.lexists(parent):
                raise S3Error("InvalidArgument", "an object exists at a parent of this key")
            parent = os.path.dirname(parent)

    # -- buckets ---------------------------------------------------------------------------------

    def buckets(self) -> list[tuple[str, int]]:
        """(name, mtime_ns) of every top-level namespace folder."""
        try:
            entries = self.ns.ls("/")
        except NoSuchPathError:
            return []
        created = {m.path: int(m.created_at * 1e9) for m in self.ns.mounts()}
        now = time.time_ns()
        return [(e.name, e.mtime_ns or created.get(e.path) or now) for e in entries
                if e.is_dir and _visible_name(e.name)]

    def bucket_exists(self, bucket: str) -> bool:
        try:
            return self.ns.stat(self.path(bucket)).is_dir
        except NoSuchPathError:
            return False

    def require_bucket(self, bucket: str) -> None:
        if not self.bucket_exists(bucket):
            raise S3Error("NoSuchBucket", "the specified bucket does not exist")

    # -- objects ---------------------------------------------------------------------------------

    def _etag(self, path: str, entry: NsEntry) -> str:
        if entry.is_dir:
            return f'"{EMPTY_MD5}"'
        found = self.memo.get(path, entry.size, entry.mtime_ns)
        if found is not None:
            return found
        local = local_path(entry.ufs_uri) if entry.ufs_uri is not None else None
        if local is not None:
            try:
                raw = os.getxattr(local, _XATTR).decode("ascii")
                etag, size, mtime = raw.rsplit("|", 2)
                if int(size) == entry.size and int(mtime) == entry.mtime_ns:
                    return etag
            except (OSError, ValueError, UnicodeDecodeError):
                pass
        return identity_etag(entry.ufs_uri or path, entry.size, entry.mtime_ns)

    def remember_etag(self, path: str, local: str | None, size: int, mtime_ns: int,
                      etag: str) -> None:
        """Keep the true ETag of an object written here (xattr on ``local``, else memory)."""
        if local is not None:
            try:
                os.setxattr(local, _XATTR, f"{etag}|{size}|{mtime_ns}".encode("ascii"))
                return
            except OSError:
                pass
        self.memo.put(path, size, mtime_ns, etag)

    def head(self, bucket: str, key: str) -> ObjectInfo:
        """The object at ``key`` (a folder for ``key/``); NoSuchKey / NoSuchBucket."""
        info = self.head_or_none(bucket, key)
        if info is None:
            self.require_bucket(bucket)
            raise S3Error("NoSuchKey", "the specified key does not exist")
        return info

    def head_or_none(self, bucket: str, key: str) -> ObjectInfo | None:
        """The object at ``key`` or None. A file is answered from the namespace's file identity
        (trusted for the mount's ``metadata.sync.interval``, so a warm GET of a remote object
        asks the remote store nothing); folders and misses from a stat."""
        path = self.path(bucket, key)
        if not key.endswith("/"):
            try:
                ident = self.ns.identity(path)
            except (NoSuchPathError, InvalidInputError):
                ident = None
            if ident is not None:
                return self._file_info(path, key, ident)
        try:
            entry = self.ns.stat(path)
        except NoSuchPathError:
            return None
        if entry.is_dir != key.endswith("/"):
            return None  # 'a' names no object when a is a folder; 'a/' none when a is a file
        return ObjectInfo(key, 0 if entry.is_dir else entry.size, entry.mtime_ns,
                          self._etag(path, entry))

    def _file_info(self, path: str, key: str, ident: FileIdentity) -> ObjectInfo:
        entry = NsEntry(path, False, ident.size, ident.mtime_ns, ident.uri)
        return ObjectInfo(key, ident.size, ident.mtime_ns, self._etag(path, entry))

    def head_quick(self, bucket: str, key: str) -> tuple[ObjectInfo, FileIdentity] | None:
        """The file object at ``key`` and its identity if no network has to be waited for
        (:meth:`Namespace.quick_identity`); None otherwise (a folder key, a miss, an identity to
        ask a remote store for): :meth:`head` answers then."""
        if key.endswith("/"):
            return None
        path = self.path(bucket, key)
        try:
            ident = self.ns.quick_identity(path)
        except (NoSuchPathError, InvalidInputError):
            return None
        return None if ident is None else (self._file_info(path, key, ident), ident)

    def read_cached(self, bucket: str, key: str, ident: FileIdentity, start: int, end: int
                    ) -> bytes | None:
        """Bytes ``[start, end)`` of the object whose identity :meth:`head_quick` gave, if the
        block store reads them without waiting (:meth:`Namespace.read_cached`); else None:
        :meth:`open_range` reads them then."""
        return self.ns.read_cached(self.path(bucket, key), ident, start, end)

    def open_range(self, bucket: str, info: ObjectInfo, start: int, end: int, *,
                   segments: bool = False) -> ChunkReader | RangeReader:
        """The one read door of the gateway: bytes ``[start, end)`` of the object ``info``
        describes, through the namespace's block store (:meth:`Namespace.iter_range`, the
        mount's read type), looked up now (so a vanished file is a NoSuchKey before any byte is
        sent) and streamed block by block, chunk by chunk: never a whole object in memory."""
        path = self.path(bucket, info.key)
        if info.key.endswith("/") or end <= start:
            return RangeReader(_Empty(), 0, 0)
        if self.ns.identity(path).size != info.size:
            raise S3Error("PreconditionFailed", "the object changed while it was read; retry")
        return ChunkReader(self.ns.iter_range(path, start, end, segments=segments))

    def writer(self, bucket: str, key: str, *, direct: bool = False,
               write_type: WriteType | str | None = None) -> ObjectWriter:
        """A writer of ``key`` with ``write_type`` (an ``x-strata-write-type`` header; default
        the mount's ``write.type``)."""
        return ObjectWriter(self, self.path(bucket, key), direct=direct, write_type=write_type)

    def make_folder(self, bucket: str, key: str) -> ObjectInfo:
        path = self.path(bucket, key)
        self.ns.mkdirs(path)
        entry = self.ns.stat(path)
        return ObjectInfo(key, 0, entry.mtime_ns, f'"{EMPTY_MD5}"')

    def delete(self, bucket: str, key: str) -> None:
        """Remove an object; absent is no error. ``key/`` removes the folder if it is empty."""
        path = self.path(bucket, key)
        try:
            entry = self.ns.stat(path)
        except NoSuchPathError:
            self.require_bucket(bucket)
            return
        mount, uri = self.ns.resolve(path)
        if mount.readonly:
            raise S3Error("AccessDenied", f"mount {mount.path} is read-only")
        local = _local_file(mount, uri)
        if entry.is_dir:
            if not key.endswith("/") or entry.mount_point or path == mount.path:
                return  # 'a' names no object when a is a folder
            if local is not None:
                try:
                    os.rmdir(local)
                except OSError:
                    return  # not empty: its objects remain
                self.ns.forget(uri)
            elif not self.ns.ls(path):
                self.ns.delete(path, recursive=True)
        else:
            if key.endswith("/"):
                return
            self.ns.delete(path)
        if local is not None:
            self._prune(mount, os.path.dirname(local))

    def _prune(self, mount: Mount, folder: str) -> None:
        """Remove the empty folders from ``folder`` up to (not including) the mount root."""
        root = (_local_file(mount, mount.ufs_uri) or "/").rstrip("/")
        if not root:
            return
        while folder.startswith(root + "/") and folder != root:
            try:
                os.rmdir(folder)
            except OSError:
                return
            self.ns.forget(mount.ufs_uri.rstrip("/") + folder[len(root):])
            folder = os.path.dirname(folder)

    # -- listing ---------------------------------------------------------------------------------

    def list_objects(self, bucket: str, prefix: str, delimiter: str, after: str,
             max_keys: int) -> Listing:
        """Up to ``max_keys`` objects and common prefixes in key order, after ``after``."""
        self.require_bucket(bucket)
        objects: list[ObjectInfo] = []
        prefixes: list[str] = []
        last: str | None = None
        count = 0
        truncated = False
        for item in self._items(bucket, prefix, delimiter, after):
            if count >= max_keys:
                truncated = max_keys > 0
                break
            if isinstance(item, str):
                prefixes.append(item)
                last = item
            else:
                objects.append(item)
                last = item.key
            count += 1
        return Listing(objects, prefixes, truncated, last if truncated else None)

    def _items(self, bucket: str, prefix: str, delimiter: str, after: str
               ) -> Iterator[ObjectInfo | str]:
        """Objects and common prefixes (``str``) in key order, deduplicated."""
        last_prefix: str | None = None
        for item in self._walk(bucket, "", prefix, delimiter, after):
            if isinstance(item, str):
                if item == last_prefix or item == after:
                    continue
                last_prefix = item
                yield item
                continue
            if delimiter:
                i = item.key.find(delimiter, len(prefix))
                if i >= 0:
                    cp = item.key[:i + len(delimiter)]
                    if cp != last_prefix and cp != after:
                        last_prefix = cp
                        yield cp
                    continue
            yield item

    def _walk(self, bucket: str, dir_key: str, prefix: str, delimiter: str, after: str
              ) -> Iterator[ObjectInfo | str]:
        """Keys below folder ``dir_key`` (``""`` or ``a/b/``) in order, pruned by ``prefix`` and
        ``after``; a folder whose keys all roll into one ``/`` common prefix yields that prefix."""
        dir_path = self.path(bucket, dir_key)
        try:
            entries = self.ns.ls(dir_path)
        except NoSuchPathError:
            return
        items: list[tuple[str, NsEntry]] = []
        for e in entries:
            name = e.name
            if not _visible_name(name):
                continue
            if bucket == STAGING_BUCKET and not dir_key and name == STAGING_DIR:
                continue
            items.append((name + "/" if e.is_dir else name, e))
        items.sort(key=lambda t: t[0])
        for rel, e in items:
            key = dir_key + rel
            if not e.is_dir:
                if key.startswith(prefix) and key > after:
                    yield ObjectInfo(key, e.size, e.mtime_ns, self._etag(self.path(bucket, key), e))
                continue
            if not (key.startswith(prefix) or prefix.startswith(key)):
                continue
            if after and key < after and not after.startswith(key):
                continue  # every key below sorts before ``after``
            if delimiter == "/" and key.startswith(prefix) and len(key) > len(prefix):
                cp = key[:key.index("/", len(prefix)) + 1]
                if cp > after:
                    yield cp
                    continue
                if cp == after or not after.startswith(cp):
                    continue
            any_below = False
            for sub in self._walk(bucket, key, prefix, delimiter, after):
                any_below = True
                yield sub
            if not any_below and key.startswith(prefix) and key > after and not self._has_entries(
                    bucket, key):
                yield ObjectInfo(key, 0, e.mtime_ns, f'"{EMPTY_MD5}"')

    def _has_entries(self, bucket: str, dir_key: str) -> bool:
        try:
            return any(_visible_name(e.name) for e in self.ns.ls(self.path(bucket, dir_key)))
        except NoSuchPathError:
            return False

    # -- multipart uploads -----------------------------------------------------------------------

    def create_upload(self, bucket: str, key: str) -> str:
        self.require_bucket(bucket)
        mount, _ = self.ns.resolve(self.path(bucket, key))
        if mount.readonly:
            raise S3Error("AccessDenied", f"mount {mount.path} is read-only")
        initiated_ns = time.time_ns()
        # The ID starts with the initiation time (16 hex digits, until 2554): IDs sort in the
        # order ListMultipartUploads lists one key's uploads, and a marker naming an upload
        # that is gone still has a place in that order (:meth:`list_uploads`).
        upload_id = f"{initiated_ns:016x}{secrets.token_hex(8)}"
        meta = {"bucket": bucket, "key": key, "initiated_ns": initiated_ns}
        self.ns.write_bytes(f"{STAGING_ROOT}/{upload_id}/upload.json", json.dumps(meta).encode(),
                            WriteType.THROUGH)
        return upload_id

    def upload(self, upload_id: str, bucket: str | None = None, key: str | None = None
               ) -> Upload:
        """The upload ``upload_id`` (of ``bucket``/``key`` when given); NoSuchUpload."""
        missing = S3Error("NoSuchUpload", "the specified multipart upload does not exist; the "
                          "upload ID may be invalid, or the upload may have been aborted or "
                          "completed")
        if not _UPLOAD_ID.match(upload_id):
            raise missing
        try:
            meta = json.loads(self.ns.read(f"{STAGING_ROOT}/{upload_id}/upload.json",
                                           read_type=ReadType.NO_CACHE))
        except (NoSuchPathError, ValueError) as e:
            raise missing from e
        up = Upload(upload_id, meta["bucket"], meta["key"], int(meta["initiated_ns"]))
        if (bucket is not None and up.bucket != bucket) or (key is not None and up.key != key):
            raise missing
        return up

    def part_writer(self, upload: Upload, number: int) -> PartWriter:
        return PartWriter(self, upload, number)

    def copy_part(self, upload: Upload, number: int, src_bucket: str, src: ObjectInfo,
                  start: int, end: int) -> Part:
        """Part ``number`` of ``upload`` from bytes ``[start, end)`` of the object ``src``
        (UploadPartCopy): streamed chunk by chunk from :meth:`open_range` into a
        :class:`PartWriter`, its ETag the MD5 of the bytes copied. PreconditionFailed when the
        source changes while it is read (nothing is staged then)."""
        reader = self.open_range(src_bucket, src, start, end)
        try:
            writer = self.part_writer(upload, number)
        except BaseException:
            reader.close()
            raise
        md5 = hashlib.md5()
        try:
            for data in reader:
                md5.update(data)
                writer.write(data)
            if writer.size != end - start:
                raise S3Error("PreconditionFailed", "the source object changed while it was "
                                                    "read; retry")
        except BaseException:
            reader.close()
            writer.abort()
            raise
        etag = writer.commit(md5.hexdigest())
        try:
            mtime_ns = int(json.loads(self.ns.read(writer.meta_path,
                                                   read_type=ReadType.NO_CACHE))["time_ns"])
        except (NoSuchPathError, ValueError, KeyError):
            mtime_ns = time.time_ns()  # the part is staged; only its exact time is unknown
        return Part(number, etag, writer.size, mtime_ns, writer.data_path)

    def parts(self, upload: Upload) -> dict[int, Part]:
        """The upload's complete parts, the latest upload of each number."""
        folder = f"{STAGING_ROOT}/{upload.upload_id}"
        try:
            entries = self.ns.ls(folder)
        except NoSuchPathError:
            return {}
        found: dict[int, tuple[int, Part]] = {}
        for e in entries:
            m = _PART_META.match(e.name)
            if m is None:
                continue
            try:
                meta = json.loads(self.ns.read(e.path, read_type=ReadType.NO_CACHE))
            except (NoSuchPathError, ValueError):
                continue
            n = int(m.group(1))
            part = Part(n, f'"{meta["md5"]}"', int(meta["size"]), int(meta["time_ns"]),
                        f"{folder}/{meta['data']}")
            prev = found.get(n)
            if prev is None or (part.mtime_ns, e.name) > (prev[0], prev[1].data_path):
                found[n] = (part.mtime_ns, part)
        return {n: p for n, (_, p) in sorted(found.items())}

    def plan_complete(self, upload: Upload, wanted: Sequence[tuple[int, str]], max_bytes: int
                      ) -> CompletePlan:
        """Check the parts ``wanted`` ((number, ETag) in ascending order) against the staged
        ones: InvalidPartOrder, InvalidPart, EntityTooSmall, EntityTooLarge."""
        if not wanted:
            raise S3Error("MalformedXML", "the XML you provided did not validate: it names no "
                                          "part")
        numbers = [n for n, _ in wanted]
        if any(b <= a for a, b in zip(numbers, numbers[1:])):
            raise S3Error("InvalidPartOrder", "the list of parts was not in ascending order")
        staged = self.parts(upload)
        chosen: list[Part] = []
        for i, (n, etag) in enumerate(wanted):
            part = staged.get(n)
            if part is None or part.etag.strip('"') != etag.strip().strip('"'):
                raise S3Error("InvalidPart", f"part {n} could not be found, or its ETag does not "
                              "match")
            if i < len(wanted) - 1 and part.size < MIN_PART_BYTES:
                raise S3Error("EntityTooSmall", f"part {n} is smaller than the minimum allowed "
                              "size (5 MiB)")
            chosen.append(part)
        if sum(p.size for p in chosen) > max_bytes:
            raise S3Error("EntityTooLarge", "your proposed upload exceeds the maximum allowed "
                          "object size")
        etag = multipart_etag([bytes.fromhex(p.etag.strip('"')) for p in chosen])
        return CompletePlan(tuple(chosen), etag)

    def finish_complete(self, upload: Upload, plan: CompletePlan) -> ObjectInfo:
        """Write the object from the planned parts in one stream, then drop the upload."""
        writer = self.writer(upload.bucket, upload.key, direct=True)
        try:
            for part in plan.parts:
                with self.ns.open_input(part.data_path, ReadType.NO_CACHE) as f:
                    while True:
                        data = f.read(COPY_CHUNK)
                        if not data:
                            break
                        writer.write(data)
            if writer.size != sum(p.size for p in plan.parts):
                raise S3Error("InternalError", "a staged part changed size")
        except BaseException:
            writer.abort()
            raise
        info = writer.commit(plan.etag)
        self.abort_upload(upload)
        return info

    def abort_upload(self, upload: Upload) -> None:
        self.ns.delete(f"{STAGING_ROOT}/{upload.upload_id}", recursive=True)

    def uploads(self, bucket: str, prefix: str = "") -> list[Upload]:
        """The bucket's uploads in progress under ``prefix``, by key then initiation time
        (:attr:`Upload.position`)."""
        self.require_bucket(bucket)
        try:
            entries = self.ns.ls(STAGING_ROOT)
        except NoSuchPathError:
            return []
        out = []
        for e in entries:
            if e.is_dir and _UPLOAD_ID.match(e.name):
                try:
                    up = self.upload(e.name, bucket)
                except S3Error:
                    continue
                if up.key.startswith(prefix):
                    out.append(up)
        return sorted(out, key=lambda u: u.position)

    def list_uploads(self, bucket: str, prefix: str = "", delimiter: str = "",
                     key_marker: str = "", upload_id_marker: str = "",
                     max_uploads: int = 1000) -> UploadListing:
        """A page of ListMultipartUploads (S3's semantics): up to ``max_uploads`` uploads and
        common prefixes (keys holding ``delimiter`` after ``prefix``, each counted once) in
        :attr:`Upload.position` order. ``key_marker`` alone: only keys after it; with
        ``upload_id_marker`` too, also the uploads of ``key_marker`` listed after that upload
        (placed by its initiation time, read from the ID when the upload is gone). A common
        prefix equal to ``key_marker`` (the end of the previous page) is not repeated."""
        every = self.uploads(bucket, prefix)
        after: tuple[str, int, str] | None = None
        if key_marker and upload_id_marker:
            after = next((u.position for u in every
                          if u.key == key_marker and u.upload_id == upload_id_marker), None)
            if after is None:
                if not _UPLOAD_ID.match(upload_id_marker):
                    raise S3Error("InvalidArgument", "the upload-id-marker is not a valid "
                                                     "upload ID")
                after = (key_marker, int(upload_id_marker[:16], 16), upload_id_marker)
        uploads: list[Upload] = []
        prefixes: list[str] = []
        last: Upload | str | None = None
        count = 0
        truncated = False
        for u in every:
            if key_marker and (u.key < key_marker or (
                    u.key == key_marker and (after is None or u.position <= after))):
                continue
            item: Upload | str = u
            if delimiter:
                i = u.key.find(delimiter, len(prefix))
                if i >= 0:
                    item = u.key[:i + len(delimiter)]
                    if item == last or item == key_marker:
                        continue
            if count >= max_uploads:
                truncated = max_uploads > 0
                break
            if isinstance(item, str):
                prefixes.append(item)
            else:
                uploads.append(item)
            last = item
            count += 1
        if not truncated or last is None:
            return UploadListing(uploads, prefixes, truncated, None, None)
        if isinstance(last, str):
            return UploadListing(uploads, prefixes, True, last, None)
        return UploadListing(uploads, prefixes, True, last.key, last.upload_id)


class _Empty:
    closed = False

    def seek(self, pos: int) -> None:
        pass

    def read(self, n: int) -> bytes:
        return b""

    def close(self) -> None:
        self.closed = True


def encode_token(marker: str) -> str:
    return base64.urlsafe_b64encode(marker.encode("utf-8", "surrogateescape")).decode("ascii")


def decode_token(token: str) -> str:
    try:
        marker = base64.b64decode(token.encode("ascii"), altchars=b"-_", validate=True
                                  ).decode("utf-8")
    except (ValueError, UnicodeError) as e:
        raise S3Error("InvalidArgument", "the continuation token provided is incorrect") from e
    if not marker:
        raise S3Error("InvalidArgument", "the continuation token provided is incorrect")
    return marker


