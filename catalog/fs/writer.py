"""The namespace's file writer: one class for the four write types (see :class:`WriteType`).

Bytes go to the under storage's output stream (``THROUGH``, ``CACHE_THROUGH``) and/or into temp
blocks of the block store, cut at ``block_size`` (``CACHE_THROUGH``, ``MUST_CACHE``,
``ASYNC_THROUGH``; one temp block per copy with ``replication.durable=N``, each copy of a block
in another directory). Nothing is visible before :meth:`FileWriter.close`:

* ``THROUGH`` / ``CACHE_THROUGH``: the under-storage stream is closed (the file appears there
  whole: local writes are renamed into place, S3 uploads complete), then its identity is read
  and the temp blocks are committed under it (a cache that fails only logs: the file is written).
* ``MUST_CACHE`` / ``ASYNC_THROUGH``: the temp blocks are committed unpersisted under a fresh
  identity, then one transaction writes the file table row (and the persist queue entry).

An error, :meth:`FileWriter.abort` or a ``with`` block left by an exception removes everything.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from catalog.cache.lifecycle import TempBlock
from catalog.cache.model import CacheError, FileIdentity
from catalog.exceptions import CatalogError, InvalidInputError
from catalog.fs.cached import FileRecord, WriteType, new_token
from catalog.fs.ufs import WriteOnlyStream

if TYPE_CHECKING:
    from catalog.fs.namespace import Mount, Namespace
    from catalog.fs.ufs import UnderFileSystem

log = logging.getLogger("catalog.fs")


class FileWriter(WriteOnlyStream):
    """A binary writer of one namespace file with a write type."""

    def __init__(self, ns: Namespace, path: str, mount: Mount, uri: str, ufs: UnderFileSystem,
                 write_type: WriteType, replicas: int) -> None:
        self.ns = ns
        self.path = path
        self.mount = mount
        self.uri = uri
        self.ufs = ufs
        self.write_type = write_type
        self.size = 0
        self._closed = False
        self._token = new_token()
        self._placeholder = FileIdentity(uri, 0, 0, self._token)
        cache = ns.cache
        to_cache = write_type is not WriteType.THROUGH
        if to_cache and cache is None:
            if write_type in (WriteType.MUST_CACHE, WriteType.ASYNC_THROUGH):
                raise InvalidInputError(f"write type {write_type.value} needs the block store, "
                                        "which is not configured")
            to_cache = False
        self._cache = cache if to_cache else None
        self._copies = replicas if write_type in (WriteType.MUST_CACHE,
                                                  WriteType.ASYNC_THROUGH) else 1
        self._temps: list[list[TempBlock]] = []  # per block: one temp per copy
        self._fill = 0  # bytes in the current (last) block
        self._out: Any = None
        if write_type in (WriteType.THROUGH, WriteType.CACHE_THROUGH):
            self._out = ufs.open_output(uri)

    # -- file-like ---------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        if self._out is not None and hasattr(self._out, "flush"):
            self._out.flush()

    def write(self, data: Any) -> int:
        if self._closed:
            raise ValueError("write to a closed file")
        view = memoryview(data).cast("B")
        n = len(view)
        try:
            if self._out is not None:
                self._out.write(view)
            if self._cache is not None:
                self._to_blocks(view)
        except BaseException:
            self.abort()
            raise
        self.size += n
        return n

    def _to_blocks(self, view: memoryview) -> None:
        assert self._cache is not None
        bs = self._cache.block_size
        pos = 0
        while pos < len(view):
            if not self._temps or self._fill == bs:
                if not self._new_block():
                    return
            take = min(bs - self._fill, len(view) - pos)
            for t in self._temps[-1]:
                t.write(view[pos:pos + take])
            self._fill += take
            pos += take

    def _new_block(self) -> bool:
        """Open the temp blocks of the next block (one per copy, in distinct directories);
        False when a CACHE_THROUGH write gives up caching (the cache is full)."""
        assert self._cache is not None
        index = len(self._temps)
        temps: list[TempBlock] = []
        try:
            for _ in range(self._copies):
                temps.append(self._cache.create_block(
                    self._placeholder, index, length=self._cache.block_size,
                    avoid_dirs=[t.dir.path for t in temps]))
        except CacheError as e:
            for t in temps:
                t.abort()
            if self.write_type is WriteType.CACHE_THROUGH:
                log.warning("cache: %s is written through without caching: %s", self.path, e)
                self._drop_temps()
                self._cache = None
                return False
            raise CacheError(f"cannot write {self.path} ({self.write_type.value}, "
                             f"{self._copies} cop{'y' if self._copies == 1 else 'ies'}): "
                             f"{e}") from e
        self._temps.append(temps)
        self._fill = 0
        return True

    def _drop_temps(self) -> None:
        for temps in self._temps:
            for t in temps:
                t.abort()
        self._temps.clear()

    # -- the end -------------------------------------------------------------------------------

    def close(self) -> None:
        """Make the file visible, whole (see the module docstring)."""
        if self._closed:
            return
        try:
            if self.write_type in (WriteType.THROUGH, WriteType.CACHE_THROUGH):
                self._close_through()
            else:
                self._close_cached()
        except BaseException:
            self.abort()
            raise
        self._closed = True

    def _close_through(self) -> None:
        ns = self.ns
        with ns.claims(self.path):
            ns._supersede(self.path)
            self._out.close()
            ns.forget(self.uri)
            if self._cache is None:
                return
            try:
                st = self.ufs.stat_file(self.uri)
                if st is None or st.size != self.size:
                    raise CacheError(f"{self.uri} has {None if st is None else st.size} bytes "
                                     f"after writing {self.size}")
                ident = FileIdentity(self.uri, st.size, st.mtime_ns, st.etag)
                for temps in self._temps:
                    for t in temps:
                        self._cache.commit_block(t, identity=ident)
                ns._identities.put(self.uri, ident)
            except (CatalogError, OSError) as e:
                log.warning("cache: %s is written, caching it failed: %s", self.path, e)
                self._drop_temps()

    def _close_cached(self) -> None:
        ns = self.ns
        assert self._cache is not None and ns._files is not None and ns.store is not None
        rec = FileRecord(self.path, self.uri, self.size, time.time_ns(), self._token,
                         self.write_type, self._copies, time.time())
        try:
            for temps in self._temps:
                for r, t in enumerate(temps):
                    self._cache.commit_block(t, identity=rec.replica(r), persisted=False)
        except BaseException:
            for ident in rec.copies:  # blocks committed before the failure: never visible
                self._cache.discard(ident)
            raise
        with ns.claims(self.path):
            old = ns._files.get(self.path)
            try:
                with ns.store.transaction() as conn:
                    ns._files.put(conn, rec, enqueue=self.write_type is WriteType.ASYNC_THROUGH)
            except BaseException:
                for ident in rec.copies:
                    self._cache.discard(ident)
                raise
            if old is not None:
                ns._discard(old)
            ns.forget(self.uri)
        if self.write_type is WriteType.ASYNC_THROUGH and ns.persister is not None:
            ns.persister.wake()

    def abort(self) -> None:
        """Drop everything written (nothing becomes visible)."""
        if self._closed:
            return
        self._closed = True
        self._drop_temps()
        out, self._out = self._out, None
        if out is not None:
            try:
                if hasattr(out, "abort"):
                    out.abort()
                elif not getattr(out, "closed", False):
                    out.close()  # an S3 stream: uploads what it has; a THROUGH error follows
            except Exception:  # noqa: BLE001 - cleaning up after a failure already raised
                pass

