"""Block files on disk: temp blocks (visible only to their writer), commit by rename, copies for
moves between directories, checks at start, removal of crash leftovers.

A directory's layout::

    <dir>/.lock                 held (flock) by the one block store using the directory
    <dir>/.tmp/<block id>.<rnd> temp blocks being written, and copies being moved in
    <dir>/blocks/<id[:2]>/<id>  committed blocks
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from catalog.cache.model import BlockInfo, CacheError, FileIdentity
from catalog.cache.tiers import DirState

if TYPE_CHECKING:
    from catalog.cache.store import BlockStore

COPY_CHUNK = 8 * 1024 * 1024


class CacheWriteError(CacheError):
    """Writing a block into a directory failed (ENOSPC, EIO, a removed directory...)."""

    def __init__(self, message: str, dir: DirState | None = None) -> None:
        super().__init__(message)
        self.dir = dir


class TempBlock:
    """A block being written: a file under ``<dir>/.tmp`` that no reader sees until
    :meth:`commit` (fsync, rename into place, index row) makes it a cached block; :meth:`abort`
    removes it. As a context manager it aborts unless committed."""

    def __init__(self, store: BlockStore, identity: FileIdentity, index: int, block_id: str,
                 length: int, dir: DirState) -> None:
        self.store = store
        self.identity = identity
        self.index = index
        self.block_id = block_id
        self.length = length
        self.dir = dir
        self.path = os.path.join(dir.tmp, f"{block_id}.{uuid.uuid4().hex[:12]}")
        self.written = 0
        self.checksum = 0
        self.state = "open"
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data``; more than the block's length is refused (the temp block aborted)."""
        if self.state != "open":
            raise CacheError(f"temp block {self.block_id} is {self.state}")
        n = len(data)
        if self.written + n > self.length:
            self.abort()
            raise CacheError(f"block {self.block_id} takes {self.length} bytes, "
                             f"{self.written + n} written")
        try:
            self._write_fd(data)
        except OSError as e:
            self.abort()
            raise CacheWriteError(f"cannot write block {self.block_id} in {self.dir.path}: {e}",
                                  self.dir) from e
        self.checksum = zlib.crc32(data, self.checksum)
        self.written += n

    def _write_fd(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            done = os.write(self.fd, view)
            view = view[done:]

    def _close(self) -> None:
        if self.fd >= 0:
            try:
                os.close(self.fd)
            finally:
                self.fd = -1

    def commit(self, *, persisted: bool = True) -> BlockInfo:
        """See :meth:`BlockStore.commit_block`."""
        return self.store.commit_block(self, persisted=persisted)

    def abort(self) -> None:
        """See :meth:`BlockStore.abort_block`."""
        self.store.abort_block(self)

    def __enter__(self) -> TempBlock:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.state == "open":
            self.abort()


def sync_and_close(temp: TempBlock) -> None:
    """fsync and close a temp block's file (the data is durable before the rename)."""
    try:
        os.fsync(temp.fd)
    finally:
        temp._close()


def fsync_dir(path: str) -> None:
    """Make a rename in ``path`` durable (best effort: some file systems refuse)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def ensure_parent(path: str) -> None:
    """Create the ``<id[:2]>`` folder of a block path (never the storage directory itself)."""
    try:
        os.mkdir(os.path.dirname(path))
    except FileExistsError:
        pass


def unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        pass


def read_chunks(fd: int, start: int, end: int, chunk: int) -> Iterator[bytes]:
    """Bytes ``[start, end)`` of an open file in chunks of at most ``chunk``; a short file
    raises ``OSError(EIO)`` (a truncated block is never served short)."""
    pos = start
    while pos < end:
        data = os.pread(fd, min(chunk, end - pos), pos)
        if not data:
            raise OSError(errno.EIO, f"block file ends at {pos}, {end} expected")
        pos += len(data)
        yield data


def read_nowait(fd: int, start: int, end: int, in_memory: bool) -> bytes | None:
    """Bytes ``[start, end)`` of an open file if reading them cannot wait for a disk: the file is
    on a memory file system (``in_memory``), or its pages are all in the page cache
    (``RWF_NOWAIT``); None otherwise. A short file raises ``OSError(EIO)``."""
    n = end - start
    if in_memory:
        data = os.pread(fd, n, start)
        if len(data) != n:
            raise OSError(errno.EIO, f"block file ends at {start + len(data)}, {end} expected")
        return data
    flag = getattr(os, "RWF_NOWAIT", None)
    if flag is None:
        return None
    buf = bytearray(n)
    try:
        got = os.preadv(fd, [buf], start, flag)
    except BlockingIOError:
        return None
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.EINVAL):
            return None
        raise
    # A short count: part of the range is not in the page cache (or the file is short: the
    # blocking read that follows tells which).
    return bytes(buf) if got == n else None


def copy_block(src: str, size: int, checksum: int, dst: DirState, block_id: str) -> str:
    """Copy a committed block file into ``dst``'s temp area, checking its size and checksum on
    the way, fsynced; returns the temp path (the caller renames it into place). Errors of the
    destination raise :class:`CacheWriteError`; a source that cannot be read raises ``OSError``,
    one that fails its check ``CacheError``."""
    src_fd = os.open(src, os.O_RDONLY)
    tmp = os.path.join(dst.tmp, f"{block_id}.{uuid.uuid4().hex[:12]}")
    try:
        try:
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as e:
            raise CacheWriteError(f"cannot create a block in {dst.path}: {e}", dst) from e
        crc = 0
        pos = 0
        try:
            while True:
                data = os.pread(src_fd, COPY_CHUNK, pos)
                if not data:
                    break
                crc = zlib.crc32(data, crc)
                pos += len(data)
                view = memoryview(data)
                try:
                    while view:
                        view = view[os.write(out, view):]
                except OSError as e:
                    raise CacheWriteError(f"cannot write a block in {dst.path}: {e}", dst) from e
            try:
                os.fsync(out)
            except OSError as e:
                raise CacheWriteError(f"cannot sync a block in {dst.path}: {e}", dst) from e
        finally:
            os.close(out)
        if pos != size or crc != checksum:
            raise CacheError(f"block {block_id} at {src} fails its check ({pos} bytes, crc "
                             f"{crc}; {size} bytes, crc {checksum} indexed)")
    except BaseException:
        unlink_quietly(tmp)
        raise
    finally:
        os.close(src_fd)
    return tmp


def check_file(path: str, size: int, checksum: int, full: bool) -> str | None:
    """Why a block file is bad (missing, wrong size, wrong checksum), or ``None`` if good."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return f"cannot stat: {e}"
    if st.st_size != size:
        return f"{st.st_size} bytes, {size} indexed"
    if not full:
        return None
    crc = 0
    try:
        with open(path, "rb", buffering=0) as f:
            while True:
                data = f.read(COPY_CHUNK)
                if not data:
                    break
                crc = zlib.crc32(data, crc)
    except OSError as e:
        return f"cannot read: {e}"
    return None if crc == checksum else f"checksum {crc}, {checksum} indexed"


def clear_tmp(d: DirState) -> int:
    """Remove everything in a directory's temp area (writes a crash interrupted); the count."""
    removed = 0
    try:
        entries = list(os.scandir(d.tmp))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            unlink_quietly(entry.path)
        removed += 1
    return removed


def block_files(d: DirState) -> Iterator[tuple[str, str]]:
    """``(block id, path)`` of every file in a directory's committed-block area."""
    try:
        subdirs = list(os.scandir(d.blocks_root))
    except FileNotFoundError:
        return
    for sub in subdirs:
        if not sub.is_dir(follow_symlinks=False):
            continue
        try:
            for entry in os.scandir(sub.path):
                yield entry.name, entry.path
        except OSError:
            continue
