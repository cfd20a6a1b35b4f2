"""The background persister of ``ASYNC_THROUGH`` writes, over the durable queue of the state store.

One thread takes the oldest due entry of ``fs_persist_queue`` (an entry waits for the older
entries of its path), claims the path (so a delete or another write of it waits, and the under
storage sees them in order), checks the file table still holds that version (a later write or a
delete cancels it), streams the file from the block store (from any of its copies) into the under
storage (visible only when whole), then in one transaction drops its file table row and its queue
entry: from then on the file is read from the under storage, and its cached blocks are re-keyed to
the identity the under storage reports and marked persisted (the extra copies too: evictable). A
crash anywhere before that transaction persists it again after a restart; a failure is retried
with backoff. The same thread applies the block store's TTLs every ``expire_every_s``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from catalog.cache.model import FileIdentity
from catalog.exceptions import CatalogError, NoSuchPathError, UfsError
from catalog.fs.cached import FileRecord, QueueEntry

if TYPE_CHECKING:
    from catalog.fs.namespace import Namespace

log = logging.getLogger("catalog.fs.persist")


class Persister:
    """Runs the persist queue of one namespace (see the module docstring)."""

    def __init__(self, ns: Namespace, *, poll_s: float = 1.0, retry_s: float = 2.0,
                 max_retry_s: float = 300.0, expire_every_s: float = 60.0) -> None:
        self.ns = ns
        self.poll_s = poll_s
        self.retry_s = retry_s
        self.max_retry_s = max_retry_s
        self.expire_every_s = expire_every_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._run_lock = threading.Lock()
        self._last_expire = time.monotonic()
        #: Set to pause the thread (tests; an admin's maintenance window).
        self.paused = threading.Event()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="fs-persister", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            if not self.paused.is_set():
                try:
                    while not self._stop.is_set() and not self.paused.is_set() and self.run_once():
                        pass
                    self._expire()
                except Exception:  # noqa: BLE001 - the thread must live on
                    log.exception("persister: unexpected error")
            self._wake.wait(self.poll_s)

    def _expire(self) -> None:
        cache = self.ns.cache
        if cache is None or time.monotonic() - self._last_expire < self.expire_every_s:
            return
        self._last_expire = time.monotonic()
        cache.expire()

    def run_once(self) -> bool:
        """Persist the oldest due entry; False when none is due."""
        files = self.ns._files
        if files is None:
            return False
        entry = files.next_entry(time.time())
        if entry is None:
            return False
        self._run(entry)
        return True

    def drain(self, timeout: float = 60.0) -> None:
        """Run every entry due now in this thread (tests, shutdown, ``persist``)."""
        deadline = time.monotonic() + timeout
        while self.run_once():
            if time.monotonic() > deadline:
                raise TimeoutError("the persist queue did not drain in time")

    def persist(self, rec: FileRecord) -> None:
        """Persist ``rec`` now in this thread; raises what the under storage raised."""
        files = self.ns._files
        assert files is not None
        entry = next((e for e in files.entries() if e.path == rec.path), None)
        if entry is None:
            assert self.ns.store is not None
            with self.ns.store.transaction() as conn:
                files.enqueue(conn, rec)
            entry = next(e for e in files.entries() if e.path == rec.path)
        error = self._run(entry)
        if error is not None:
            raise error

    def _run(self, entry: QueueEntry) -> CatalogError | None:
        with self._run_lock:
            try:
                self._persist(entry)
                return None
            except (CatalogError, OSError) as e:
                err = e if isinstance(e, CatalogError) else UfsError(str(e))
                delay = min(self.max_retry_s, self.retry_s * (2 ** min(entry.attempts, 16)))
                log.warning("persister: persisting %s failed (attempt %d), retried in %.0fs: %s",
                            entry.path, entry.attempts + 1, delay, e)
                assert self.ns._files is not None
                self.ns._files.failed(entry.seq, str(e), time.time() + delay)
                return err

    def _persist(self, entry: QueueEntry) -> None:
        ns = self.ns
        files, cache, store = ns._files, ns.cache, ns.store
        assert files is not None and cache is not None and store is not None
        with ns.claims(entry.path):
            rec = files.get(entry.path)
            if rec is None or rec.etag != entry.etag:
                with store.transaction() as conn:  # cancelled by a later write or a delete
                    files.drop_entry(conn, entry.seq)
                return
            mount, uri = ns.resolve(rec.path)
            if uri != rec.uri:
                raise NoSuchPathError(f"{rec.path} is now served by {uri}, not {rec.uri}")
            ufs = ns.ufs(mount)
            out = ufs.open_output(uri)
            try:
                written = 0
                for data in ns._iter_record(rec, 0, rec.size):
                    out.write(data)
                    written += len(data)
                if written != rec.size:
                    raise UfsError(f"{rec.path}: {written} of {rec.size} bytes read from the "
                                   "cache")
            except BaseException:
                if hasattr(out, "abort"):
                    out.abort()
                raise
            out.close()
            st = ufs.stat_file(uri)
            if st is None or st.size != rec.size:
                raise UfsError(f"{uri} has {None if st is None else st.size} bytes after "
                               f"persisting {rec.size}")
            with store.transaction() as conn:
                files.remove(conn, rec.path, rec.etag)
                files.drop_entry(conn, entry.seq)
            ident = FileIdentity(uri, st.size, st.mtime_ns, st.etag)
            try:
                cache.rekey(rec.identity, ident, persisted=True)
                for copy in rec.copies[1:]:
                    cache.mark_persisted(copy)
            except CatalogError as e:
                log.warning("persister: %s is persisted; its cached blocks could not be "
                            "re-keyed (they are read again from under storage): %s", rec.path, e)
                for copy in rec.copies:
                    cache.discard(copy)
            ns.forget(uri)
            ns._identities.put(uri, ident)
            log.info("persister: persisted %s (%d bytes) to %s", rec.path, rec.size, uri)
