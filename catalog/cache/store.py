"""The tiered block store: see the package docstring (:mod:`catalog.cache`) for its guarantees."""

from __future__ import annotations

import errno
import fcntl
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Literal, overload

from catalog.cache import index
from catalog.cache.allocator import make_allocator
from catalog.cache.config import CacheConfig
from catalog.cache.evictor import make_evictor
from catalog.cache.index import BlockRow, Rule
from catalog.cache.lifecycle import (
    CacheWriteError,
    TempBlock,
    block_files,
    check_file,
    clear_tmp,
    copy_block,
    ensure_parent,
    fsync_dir,
    read_chunks,
    read_nowait,
    sync_and_close,
    unlink_quietly,
)
from catalog.cache.model import (
    BlockInfo,
    BlockNotPersistedError,
    BlockSegment,
    CacheDirInUseError,
    CacheError,
    CacheStats,
    DirStats,
    ExpireReport,
    Fetch,
    FileIdentity,
    ReadType,
    TierStats,
    TtlAction,
    block_count,
    block_id,
    block_length,
)
from catalog.cache.tiers import LOCK_FILE, Block, DirState, TierState
from catalog.exceptions import InvalidInputError, StateStoreError, UfsError
from catalog.filesystems import MEMORY_FILE_SYSTEMS, file_system_type
from catalog.store import StateStore

log = logging.getLogger("catalog.cache")

#: Seconds between two "serving without caching" warnings of one store.
WARN_EVERY_S = 60.0


class _Flight:
    """One fetch of a cold block from under storage that concurrent readers wait for."""

    __slots__ = ("event", "data", "error")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.data: bytes | None = None
        self.error: BaseException | None = None


def _norm_prefix(prefix: str) -> str:
    p = prefix.rstrip("/") or prefix
    if not p:
        raise InvalidInputError("a cache path prefix must not be empty")
    return p


def _ancestors(uri: str) -> list[str]:
    """``uri`` and each of its parent prefixes, longest first (the keys rules are stored by)."""
    u = uri.rstrip("/") or uri
    out = [u]
    i = u.rfind("/")
    while i > 0:
        cand = u[:i].rstrip("/")
        if cand and cand != out[-1]:
            out.append(cand)
        i = u.rfind("/", 0, len(cand)) if cand else -1
    return out


def _under(uri: str, prefix: str) -> bool:
    return uri == prefix or uri.startswith(prefix + "/") or (
        uri.rstrip("/") == prefix)


class BlockStore:
    """Files cached as fixed-size blocks over ordered tiers of directories.

    Thread-safe. One store per set of directories (each directory is locked with ``flock``; a
    second store, in this process or another, is refused). Open verifies the index against the
    disk; :meth:`close` writes the access statistics and releases the directories.
    """

    def __init__(self, config: CacheConfig, state: StateStore, *,
                 on_delete: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.state = state
        self.block_size = config.block_size
        self._on_delete = on_delete
        self._clock = clock
        self._allocator = make_allocator(config.allocator)
        self._evictor = make_evictor(config)
        self._lock = threading.RLock()
        self._move_lock = threading.RLock()
        self._blocks: dict[str, Block] = {}
        self._by_file: dict[str, dict[int, Block]] = {}
        self._by_uri: dict[str, set[str]] = {}
        self._inflight: dict[str, _Flight] = {}
        #: Background fills of blocks read in part (``async_fill_below``): started lazily.
        self._filler: ThreadPoolExecutor | None = None
        #: Background fills waiting or running.
        self._fills = 0
        self._fills_stopped = False
        self._rules: dict[str, Rule] = {}
        self._dirty: dict[str, Block] = {}
        self._tick = 0
        self._hits = 0
        self._misses = 0
        self._pass_through = 0
        self._bytes_from_ufs = 0
        self._last_warning = -math.inf
        self._closed = False
        self.tiers: list[TierState] = []
        self._dirs: dict[str, DirState] = {}
        for i, tc in enumerate(config.tiers):
            tier = TierState(i, tc.alias)
            for dc in tc.dirs:
                d = DirState(tier, dc.path.expanduser().absolute(), dc.quota, dc.device)
                tier.dirs.append(d)
                self._dirs[d.path] = d
            self.tiers.append(tier)
        try:
            self._open_dirs()
            self._load()
            self._enforce_quotas()
        except BaseException:
            self._release_dirs()
            raise

    # -- opening ---------------------------------------------------------------------------------

    def _open_dirs(self) -> None:
        """Create and lock each directory and empty its temp area; a directory that cannot be
        used is marked failing (its tier spills), one held by another store is an error."""
        for d in self._dirs.values():
            try:
                os.makedirs(d.tmp, exist_ok=True)
                os.makedirs(d.blocks_root, exist_ok=True)
                fd = os.open(os.path.join(d.path, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                log.error("block store: cache directory %s is unusable, its tier %s spills: %s",
                          d.path, d.tier.alias, e)
                d.failed_until = math.inf
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                raise CacheDirInUseError(
                    f"cache directory {d.path} is in use by another block store") from e
            d.lock_fd = fd
            if d.device is None:
                d.device = f"dev:{os.fstat(fd).st_dev}"
            d.in_memory = file_system_type(d.path) in MEMORY_FILE_SYSTEMS
            removed = clear_tmp(d)
            if removed:
                log.info("block store: removed %d unfinished temp block(s) in %s", removed, d.path)

    def _release_dirs(self) -> None:
        for d in self._dirs.values():
            if d.lock_fd is not None:
                try:
                    os.close(d.lock_fd)
                finally:
                    d.lock_fd = None

    def _load(self) -> None:
        """Rebuild the in-memory state from the index, keeping only the blocks whose file is
        there with the indexed size (and checksum, by default); drop the others (row and file)
        and remove block files no row names (a crash between rename and index write)."""
        self._rules = {r.prefix: r for r in index.load_rules(self.state)}
        rows = index.load_blocks(self.state)
        checkable: list[tuple[BlockRow, DirState]] = []
        unknown: list[BlockRow] = []
        for row in rows:
            d = self._dirs.get(row.dir)
            if d is None or d.lock_fd is None:
                unknown.append(row)
            else:
                checkable.append((row, d))
        full = self.config.verify_checksums

        def check(item: tuple[BlockRow, DirState]) -> str | None:
            row, d = item
            return check_file(d.block_path(row.block_id), row.size, row.checksum, full)

        with ThreadPoolExecutor(max_workers=self.config.verify_parallelism) as pool:
            verdicts = list(pool.map(check, checkable))
        bad: list[tuple[BlockRow, DirState, str]] = []
        retier: list[Block] = []
        for (row, d), why in zip(checkable, verdicts):
            if why is not None:
                bad.append((row, d, why))
                continue
            b = Block(row.block_id, row.identity, row.index, d, row.size, row.checksum,
                      row.created_at, last_access=row.last_access,
                      access_count=row.access_count, crf=row.lrfu_score, pinned=row.pinned,
                      expire_at=row.expire_at, ttl_action=row.ttl_action,
                      persisted=row.persisted)
            self._attach(b)
            d.used += b.size
            self._tick = max(self._tick, row.last_access)
            if row.tier != d.tier.alias:
                retier.append(b)
        for row in unknown:
            level = logging.ERROR if not row.persisted else logging.WARNING
            log.log(level, "block store: dropped block %s of %s: its directory %s is not "
                    "configured or unusable%s", row.block_id, row.identity.uri, row.dir,
                    " (it was NOT persisted)" if not row.persisted else "")
        for row, d, why in bad:
            level = logging.ERROR if not row.persisted else logging.WARNING
            log.log(level, "block store: dropped bad block %s of %s in %s: %s%s", row.block_id,
                    row.identity.uri, d.path, why,
                    " (it was NOT persisted)" if not row.persisted else "")
        if bad or unknown or retier:
            with self.state.transaction() as conn:
                index.delete_blocks(conn, [r.block_id for r in unknown]
                                    + [r.block_id for r, _, _ in bad])
                for b in retier:
                    index.move_block(conn, b, b.dir.tier.alias, b.dir.path)
        for row, d, _ in bad:
            unlink_quietly(d.block_path(row.block_id))
        orphans = 0
        for d in self._dirs.values():
            if d.lock_fd is None:
                continue
            for name, path in block_files(d):
                if name not in d.blocks:
                    unlink_quietly(path)
                    orphans += 1
        if orphans:
            log.info("block store: removed %d block file(s) missing from the index", orphans)
        log.info("block store: %d block(s) verified, %d dropped", len(self._blocks),
                 len(bad) + len(unknown))

    def _enforce_quotas(self) -> None:
        """Evict every directory down to its quota (a quota shrunk since the last run)."""
        with self._move_lock:
            for tier in self.tiers:
                for d in tier.dirs:
                    if d.free < 0:
                        self._evict_from(d, -d.free)
                    if d.free < 0:
                        log.warning("block store: %s holds %d bytes over its quota of %d: the "
                                    "rest is pinned or not persisted", d.path, -d.free, d.quota)

    # -- bookkeeping (under self._lock) ------------------------------------------------------------

    def _attach(self, b: Block) -> None:
        self._blocks[b.block_id] = b
        b.dir.blocks[b.block_id] = b
        self._by_file.setdefault(b.file_key, {})[b.index] = b
        self._by_uri.setdefault(b.identity.uri, set()).add(b.file_key)

    def _detach(self, b: Block) -> None:
        del self._blocks[b.block_id]
        del b.dir.blocks[b.block_id]
        b.dir.used -= b.size
        b.removed = True
        self._dirty.pop(b.block_id, None)
        blocks = self._by_file.get(b.file_key)
        if blocks is not None:
            blocks.pop(b.index, None)
            if not blocks:
                del self._by_file[b.file_key]
                keys = self._by_uri.get(b.identity.uri)
                if keys is not None:
                    keys.discard(b.file_key)
                    if not keys:
                        del self._by_uri[b.identity.uri]

    def _drop(self, blocks: Iterable[Block], why: str) -> int:
        """Remove blocks (index rows, then files); the bytes freed. Blocks already gone are
        skipped; a block being moved is dropped and its mover discards the copy."""
        with self._lock:
            live = [b for b in blocks if self._blocks.get(b.block_id) is b]
            if not live:
                return 0
            with self.state.transaction() as conn:
                index.delete_blocks(conn, [b.block_id for b in live])
            freed = 0
            for b in live:
                path = b.path
                self._detach(b)
                unlink_quietly(path)
                freed += b.size
            log.debug("block store: dropped %d block(s) (%s)", len(live), why)
            return freed

    def _touch(self, b: Block) -> None:
        self._tick += 1
        self._evictor.on_access(b, self._tick)
        b.access_count += 1
        b.tier_hits += 1
        self._dirty[b.block_id] = b

    def _apply_rules(self, b: Block) -> None:
        """Set a block's pinned flag and expiry from the rules of its URI and its parents."""
        matching = [self._rules[p] for p in _ancestors(b.identity.uri) if p in self._rules]
        b.pinned = any(r.pinned for r in matching)
        ttl = next((r for r in matching if r.ttl_s is not None), None)
        if ttl is None or ttl.ttl_s is None:
            b.expire_at, b.ttl_action = None, None
        else:
            b.expire_at = max(b.created_at, ttl.updated_at) + ttl.ttl_s
            b.ttl_action = ttl.ttl_action or TtlAction.FREE

    def _blocks_under(self, prefix: str) -> list[Block]:
        out: list[Block] = []
        for uri, keys in self._by_uri.items():
            if _under(uri, prefix):
                for key in keys:
                    out.extend(self._by_file.get(key, {}).values())
        return out

    def _dir_failed(self, d: DirState, error: BaseException) -> None:
        with self._lock:
            d.failed_until = time.monotonic() + self.config.dir_failure_backoff_s
        log.warning("block store: writing into %s (tier %s) failed, it takes no new block for "
                    "%.0fs: %s", d.path, d.tier.alias, self.config.dir_failure_backoff_s, error)

    def _check_open(self) -> None:
        if self._closed:
            raise CacheError("the block store is closed")

    # -- space: allocation, eviction, moves ------------------------------------------------------

    def _reserve(self, size: int, *, start_tier: int = 0, end_tier: int | None = None,
                 exclude: Collection[DirState] = ()) -> DirState | None:
        """A directory with ``size`` bytes reserved: the first tier in ``[start_tier,
        end_tier)`` with room; when none has, room made by eviction, top tier first. ``None``
        when no tier can take the bytes (full of pinned or unpersisted data, failing, or too
        small)."""
        tiers = self.tiers[:end_tier] if end_tier is not None else self.tiers
        with self._lock:
            d = self._allocator.allocate(tiers, size, start_tier=start_tier, exclude=exclude,
                                         now=time.monotonic())
            if d is not None:
                d.reserved += size
                return d
        with self._move_lock:
            for tier in tiers[start_tier:]:
                for _ in range(3):
                    with self._lock:
                        now = time.monotonic()
                        d = self._allocator.allocate(tiers, size, start_tier=start_tier,
                                                     exclude=exclude, now=now)
                        if d is not None:
                            d.reserved += size
                            return d
                        candidates = self._allocator.eviction_candidates(tier, size, exclude, now)
                        if not candidates:
                            break
                        target = candidates[0]
                        need = size - target.free
                    if self._evict_from(target, need) == 0:
                        break
        return None

    def _release(self, d: DirState, size: int) -> None:
        with self._lock:
            d.reserved -= size

    def _evict_from(self, d: DirState, need: int) -> int:
        """Make ``need`` bytes free in ``d``: its evictable blocks in the evictor's order move to
        the next tier with room (or are dropped from the last tier); the bytes freed."""
        with self._move_lock:
            with self._lock:
                victims = self._evictor.victims(list(d.blocks.values()), need)
                for v in victims:
                    v.moving = True
            freed = 0
            for v in victims:
                freed += self._demote(v)
            return freed

    def _demote(self, b: Block) -> int:
        """Move an evicted block one tier down (further if that one is full), or drop it; the
        bytes it frees in its directory."""
        source = b.dir
        source.tier.evictions += 1
        below = source.tier.index + 1
        try:
            if below < len(self.tiers):
                dest = self._reserve(b.size, start_tier=below)
                if dest is not None:
                    try:
                        if self._move(b, dest):
                            return b.size
                    except (OSError, CacheError) as e:
                        log.warning("block store: cannot move block %s to %s, dropping it: %s",
                                    b.block_id, dest.path, e)
            return self._drop([b], f"evicted from {source.tier.alias}")
        finally:
            b.moving = False

    def _move(self, b: Block, dest: DirState) -> bool:
        """Copy a block into ``dest`` (where its size is reserved), switch the index row and
        remove the old file; False if the block was dropped meanwhile. Errors of ``dest`` raise
        ``CacheWriteError`` (``dest`` then takes no block for a while), a bad source
        ``OSError`` or ``CacheError``."""
        try:
            tmp = copy_block(b.path, b.size, b.checksum, dest, b.block_id)
        except CacheWriteError as e:
            self._release(dest, b.size)
            self._dir_failed(dest, e)
            raise
        except BaseException:
            self._release(dest, b.size)
            raise
        final = dest.block_path(b.block_id)
        with self._lock:
            if b.removed or self._blocks.get(b.block_id) is not b:
                unlink_quietly(tmp)
                dest.reserved -= b.size
                return False
            try:
                ensure_parent(final)
                os.rename(tmp, final)
            except OSError as e:
                unlink_quietly(tmp)
                dest.reserved -= b.size
                raise CacheWriteError(f"cannot move block {b.block_id} into {dest.path}: {e}",
                                      dest) from e
            try:
                with self.state.transaction() as conn:
                    index.move_block(conn, b, dest.tier.alias, dest.path)
            except BaseException:
                unlink_quietly(final)
                dest.reserved -= b.size
                raise
            old_path, old = b.path, b.dir
            del old.blocks[b.block_id]
            old.used -= b.size
            b.dir = dest
            dest.blocks[b.block_id] = b
            dest.used += b.size
            dest.reserved -= b.size
            b.tier_hits = 0
            unlink_quietly(old_path)
        log.debug("block store: moved block %s from %s to %s", b.block_id, old.path, dest.path)
        return True

    def _promote(self, b: Block) -> None:
        """Move a block to the top tier (or the highest tier above it with room); a block whose
        file turns out bad on the way is dropped."""
        with self._lock:
            if b.removed or b.moving or b.dir.tier.index == 0:
                return
            b.moving = True
        try:
            dest = self._reserve(b.size, start_tier=0, end_tier=b.dir.tier.index)
            if dest is not None:
                self._move(b, dest)
        except CacheWriteError as e:
            log.warning("block store: cannot promote block %s: %s", b.block_id, e)
        except (OSError, CacheError) as e:
            log.warning("block store: block %s is bad, dropping it: %s", b.block_id, e)
            self._drop([b], "bad on promotion")
        finally:
            b.moving = False

    # -- the block lifecycle -----------------------------------------------------------------------

    def create_block(self, identity: FileIdentity, index: int, *, length: int | None = None,
                     avoid_dirs: Collection[str] = ()) -> TempBlock:
        """A temp block for block ``index`` of ``identity``, in the first tier with room (or room
        made by eviction), invisible to readers until committed. Raises :class:`CacheError` when
        no tier can take it.

        ``length`` reserves that many bytes instead of the block's length (a writer that does not
        know the file's final size yet; it commits with ``identity=``); ``avoid_dirs`` names
        directories the block must not go to (replicas of one block in distinct directories)."""
        self._check_open()
        length = block_length(identity.size, self.block_size, index) if length is None else length
        if not 0 < length <= self.block_size:
            raise InvalidInputError(f"a block holds 1 to {self.block_size} bytes, not {length}")
        exclude: set[DirState] = {d for p in avoid_dirs if (d := self._dirs.get(p)) is not None}
        # Copies go to other devices than the copies before them while some directory is on
        # another device; then to other directories only.
        devices = {d.device for d in exclude}
        same_device = {d for d in self._dirs.values() if d.device in devices} - exclude
        while True:
            d = self._reserve(length, exclude=exclude | same_device) if same_device else None
            if d is None:
                d = self._reserve(length, exclude=exclude)
            if d is None:
                raise CacheError(f"no cache tier can take block {index} of {identity.uri} "
                                 f"({length} bytes): full of pinned or unpersisted data, or "
                                 "failing")
            try:
                return TempBlock(self, identity, index, block_id(identity, index), length, d)
            except OSError as e:
                self._release(d, length)
                self._dir_failed(d, e)
                exclude.add(d)

    def commit_block(self, temp: TempBlock, *, persisted: bool = True,
                     identity: FileIdentity | None = None) -> BlockInfo:
        """fsync the temp block, rename it into place and write its index row (one step under the
        store's lock): readers see the whole block or nothing. ``persisted=False`` marks a block
        whose only copy is the cache (never evicted, ``free`` refused) until
        :meth:`mark_persisted`. A block already cached under that id wins (the temp is dropped;
        a persisted commit marks that block persisted).
        ``identity`` re-keys the block to the file version known only now (a writer's: the
        final size, mtime, ETag); its bytes must be that version's block length, the rest of
        the reservation is released.
        Raises :class:`CacheError` for an incomplete block, ``CacheWriteError`` for I/O errors
        (the temp block is then aborted)."""
        if identity is not None and temp.state == "open":
            self._rekey_temp(temp, identity)
        return self._commit(temp, persisted).info()

    def _rekey_temp(self, temp: TempBlock, identity: FileIdentity) -> None:
        try:
            want = block_length(identity.size, self.block_size, temp.index)
        except ValueError as e:
            self.abort_block(temp)
            raise CacheError(str(e)) from e
        if temp.written != want or want > temp.length:
            self.abort_block(temp)
            raise CacheError(f"block {temp.index} of {identity.uri} has {want} bytes, "
                             f"{temp.written} written")
        with self._lock:
            temp.dir.reserved -= temp.length - want
            temp.length = want
            temp.identity = identity
            temp.block_id = block_id(identity, temp.index)

    def abort_block(self, temp: TempBlock) -> None:
        """Remove a temp block and release its reservation (a no-op once committed/aborted)."""
        if temp.state != "open":
            return
        temp.state = "aborted"
        try:
            temp._close()
        except OSError:
            pass
        unlink_quietly(temp.path)
        self._release(temp.dir, temp.length)

    def _commit(self, temp: TempBlock, persisted: bool) -> Block:
        if temp.state != "open":
            raise CacheError(f"temp block {temp.block_id} is {temp.state}")
        if temp.written != temp.length:
            self.abort_block(temp)
            raise CacheError(f"block {temp.block_id} is incomplete: {temp.written} of "
                             f"{temp.length} bytes written")
        d = temp.dir
        try:
            sync_and_close(temp)
        except OSError as e:
            self.abort_block(temp)
            raise CacheWriteError(f"cannot sync block {temp.block_id} in {d.path}: {e}", d) from e
        final = d.block_path(temp.block_id)
        with self._lock:
            existing = self._blocks.get(temp.block_id)
            if existing is not None:
                self.abort_block(temp)
                temp.state = "committed"
                if persisted and not existing.persisted:
                    self.mark_persisted(existing.identity, [existing.index])
                return existing
            try:
                ensure_parent(final)
                os.rename(temp.path, final)
            except OSError as e:
                self.abort_block(temp)
                raise CacheWriteError(f"cannot commit block {temp.block_id} in {d.path}: {e}",
                                      d) from e
            b = Block(temp.block_id, temp.identity, temp.index, d, temp.length, temp.checksum,
                      self._clock(), persisted=persisted)
            self._apply_rules(b)
            self._tick += 1
            self._evictor.on_access(b, self._tick, new=True)
            stale = [s for key in self._by_uri.get(temp.identity.uri, ())
                     if key != b.file_key for s in self._by_file.get(key, {}).values()
                     if s.persisted]
            try:
                with self.state.transaction() as conn:
                    index.insert_block(conn, b)
                    index.delete_blocks(conn, [s.block_id for s in stale])
            except BaseException:
                unlink_quietly(final)
                temp.state = "aborted"
                d.reserved -= temp.length
                raise
            temp.state = "committed"
            d.reserved -= temp.length
            d.used += temp.length
            self._attach(b)
            for s in stale:
                path = s.path
                self._detach(s)
                unlink_quietly(path)
            if stale:
                log.debug("block store: dropped %d stale block(s) of %s", len(stale),
                          temp.identity.uri)
        fsync_dir(os.path.dirname(final))
        return b

    def put_block(self, identity: FileIdentity, index: int, data: bytes, *,
                  persisted: bool = True) -> BlockInfo | None:
        """Cache a whole block (create, write, commit), spilling to another directory or tier on
        an I/O error; ``None`` (logged) when no tier can take it."""
        self._check_open()
        b = self._store_block(identity, index, data, persisted)
        return b.info() if b is not None else None

    def _store_block(self, identity: FileIdentity, idx: int, data: bytes,
                     persisted: bool) -> Block | None:
        length = block_length(identity.size, self.block_size, idx)
        if len(data) != length:
            raise CacheError(f"block {idx} of {identity.uri} has {length} bytes, "
                             f"{len(data)} given")
        bid = block_id(identity, idx)
        with self._lock:
            existing = self._blocks.get(bid)
            if existing is not None:
                if persisted and not existing.persisted:
                    self.mark_persisted(identity, [idx])
                return existing
        exclude: set[DirState] = set()
        while True:
            d = self._reserve(length, exclude=exclude)
            if d is None:
                self._warn_pass_through(identity, idx, length)
                return None
            try:
                temp = TempBlock(self, identity, idx, bid, length, d)
            except OSError as e:
                self._release(d, length)
                self._dir_failed(d, e)
                exclude.add(d)
                continue
            try:
                temp.write(data)
                return self._commit(temp, persisted)
            except CacheWriteError as e:
                self._dir_failed(d, e)
                exclude.add(d)
            except StateStoreError as e:
                log.error("block store: cannot index block %s of %s, serving it without "
                          "caching: %s", bid, identity.uri, e)
                return None

    def _warn_pass_through(self, identity: FileIdentity, idx: int, length: int) -> None:
        with self._lock:
            self._pass_through += 1
            now = time.monotonic()
            if now - self._last_warning < WARN_EVERY_S:
                return
            self._last_warning = now
        log.warning("block store: no cache tier can take block %d of %s (%d bytes): the tiers "
                    "are full of pinned or unpersisted data, failing, or smaller than a block; "
                    "serving it without caching", idx, identity.uri, length)

    # -- reads -----------------------------------------------------------------------------------

    def read(self, identity: FileIdentity, start: int, end: int, fetch: Fetch,
             read_type: ReadType | str = ReadType.CACHE) -> bytes:
        """Bytes ``[start, end)`` of the file (``end`` is clamped to its size), from cached blocks
        and, for the others, from ``fetch`` (see :class:`ReadType`)."""
        return b"".join(self.iter_read(identity, start, end, fetch, read_type))

    @overload
    def iter_read(self, identity: FileIdentity, start: int, end: int, fetch: Fetch,
                  read_type: ReadType | str = ..., *, chunk_size: int | None = ...,
                  segments: Literal[False] = ...) -> Iterator[bytes]: ...

    @overload
    def iter_read(self, identity: FileIdentity, start: int, end: int, fetch: Fetch,
                  read_type: ReadType | str = ..., *, chunk_size: int | None = ...,
                  segments: bool) -> Iterator[bytes | BlockSegment]: ...

    def iter_read(self, identity: FileIdentity, start: int, end: int, fetch: Fetch,
                  read_type: ReadType | str = ReadType.CACHE, *,
                  chunk_size: int | None = None, segments: bool = False
                  ) -> Iterator[bytes | BlockSegment]:
        """The bytes of :meth:`read` as chunks of at most ``chunk_size`` (default
        ``read_chunk_bytes``), block after block: at most one block is held in memory. With
        ``segments``, a cached block's range comes as one :class:`BlockSegment` (its open file,
        for ``sendfile``) instead of its bytes."""
        self._check_open()
        rt = ReadType(read_type)
        if start < 0 or end < start:
            raise InvalidInputError(f"bad byte range [{start}, {end})")
        end = min(end, identity.size)
        chunk = chunk_size or self.config.read_chunk_bytes
        for idx, length, lo, hi in self._spans(identity, start, end):
            yield from self._read_block(identity, idx, length, lo, hi, fetch, rt, chunk,
                                        segments)

    def _spans(self, identity: FileIdentity, start: int, end: int
               ) -> Iterator[tuple[int, int, int, int]]:
        """(block index, block length, [lo, hi) within the block) of each block the bytes
        ``[start, end)`` of the file cover (``end`` at most its size)."""
        bs = self.block_size
        if start >= end:
            return
        for idx in range(start // bs, (end - 1) // bs + 1):
            b_start = idx * bs
            length = min(bs, identity.size - b_start)
            yield idx, length, max(start, b_start) - b_start, min(end, b_start + length) - b_start

    def _promotes(self, b: Block, rt: ReadType, tier_hits: int) -> bool:
        """Whether a read of ``b`` that makes its hits in its tier ``tier_hits`` promotes it."""
        promote_after = self.config.promote_after_accesses
        return rt is not ReadType.NO_CACHE and b.dir.tier.index > 0 and (
            rt is ReadType.CACHE_PROMOTE or bool(promote_after and tier_hits >= promote_after))

    def read_cached(self, identity: FileIdentity, start: int, end: int,
                    read_type: ReadType | str = ReadType.CACHE) -> bytes | None:
        """Bytes ``[start, end)`` of the file (``end`` clamped to its size) if every block of the
        range is cached and reading them can neither wait for a disk (a memory file system, or
        pages in the page cache) nor move a block (a promotion) nor write the index (an access
        flush); else None, with nothing changed: read with :meth:`iter_read` then, in a
        thread. Counted as :meth:`iter_read` counts hits. The S3 gateway answers warm GETs so,
        on its event loop."""
        self._check_open()
        rt = ReadType(read_type)
        if start < 0 or end < start:
            raise InvalidInputError(f"bad byte range [{start}, {end})")
        end = min(end, identity.size)
        if start >= end:
            return b""
        spans = list(self._spans(identity, start, end))
        ranges: list[tuple[Block, int, int]] = []
        with self._lock:
            if len(self._dirty) + len(spans) >= self.config.access_flush_every:
                return None
            for idx, _, lo, hi in spans:
                b = self._blocks.get(block_id(identity, idx))
                if b is None or self._promotes(b, rt, b.tier_hits + 1):
                    return None
                ranges.append((b, lo, hi))
        pieces: list[bytes] = []
        for b, lo, hi in ranges:
            try:
                fd = os.open(b.path, os.O_RDONLY)
            except OSError:
                return None  # evicted meanwhile, or unreadable: iter_read tells which
            try:
                if os.fstat(fd).st_size != b.size:
                    return None
                data = read_nowait(fd, lo, hi, b.dir.in_memory)
            except OSError:
                return None
            finally:
                os.close(fd)
            if data is None:
                return None
            pieces.append(data)
        with self._lock:
            for b, lo, hi in ranges:
                self._count_hit(b, hi - lo, rt, touch=self._blocks.get(b.block_id) is b)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _count_hit(self, b: Block, nbytes: int, rt: ReadType, *, touch: bool = True) -> None:
        """A read served ``nbytes`` of block ``b`` (a detached block is not ``touch``ed)."""
        tier = b.dir.tier
        tier.hits += 1
        tier.bytes_served += nbytes
        self._hits += 1
        if touch and rt is not ReadType.NO_CACHE:
            self._touch(b)

    def load(self, identity: FileIdentity, fetch: Fetch) -> int:
        """Cache every block of a file (as a CACHE read of all of it would); the bytes read."""
        total = 0
        for data in self.iter_read(identity, 0, identity.size, fetch):
            total += len(data)
        return total

    def _read_block(self, identity: FileIdentity, idx: int, length: int, lo: int, hi: int,
                    fetch: Fetch, rt: ReadType, chunk: int, segments: bool = False
                    ) -> Iterator[bytes | BlockSegment]:
        bid = block_id(identity, idx)
        b_start = idx * self.block_size
        while True:
            fd = -1
            hit: Block | None = None
            flight: _Flight | None = None
            leader = False
            fill: _Flight | None | bool = False  # False: not a partial read
            with self._lock:
                b = self._blocks.get(bid)
                if b is not None:
                    try:
                        fd = os.open(b.path, os.O_RDONLY)
                        hit = b
                    except OSError as e:
                        log.warning("block store: cannot open block %s (%s), dropping it: %s",
                                    bid, b.path, e)
                        self._drop([b], "unreadable")
                if hit is not None:
                    self._count_hit(hit, hi - lo, rt)
                elif rt is not ReadType.NO_CACHE and hi - lo < \
                        self.config.async_fill_below * length:
                    # Part of a cold block: this reader's bytes now, the block in the background.
                    fill = self._schedule_fill(bid)
                else:
                    flight = self._inflight.get(bid)
                    if flight is None and rt is not ReadType.NO_CACHE:
                        flight = self._inflight[bid] = _Flight()
                        leader = True
            if hit is not None:
                served = lo
                try:
                    if os.fstat(fd).st_size != hit.size:
                        raise OSError(errno.EIO, f"block file has {os.fstat(fd).st_size} bytes, "
                                                 f"{hit.size} indexed")
                    if segments:
                        yield BlockSegment(fd, lo, hi - lo)  # the consumer sends it whole
                        served = hi
                    else:
                        for data in read_chunks(fd, lo, hi, chunk):
                            served += len(data)
                            yield data
                except OSError as e:
                    log.warning("block store: block %s (%s) is bad, dropping it: %s", bid,
                                hit.path, e)
                    self._drop([hit], "bad on read")
                    if served == lo:
                        continue
                    yield self._fetch(identity, b_start + served, b_start + hi, fetch)
                    return
                finally:
                    os.close(fd)
                self._maybe_flush()
                if self._promotes(hit, rt, hit.tier_hits):
                    self._promote(hit)
                return
            if fill is not False:  # a partial read: its range now, the block filled behind it
                with self._lock:
                    self._misses += 1
                data = b""
                try:
                    data = self._fetch(identity, b_start + lo, b_start + hi, fetch)
                finally:  # after the reader's own request: the fill never delays it
                    if isinstance(fill, _Flight):
                        self._start_fill(fill, identity, idx, bid, length, fetch, (lo, data))
                yield from self._slices(data, 0, hi - lo, chunk)
                return
            if flight is None:  # NO_CACHE, nobody fetching it: only the bytes asked for
                with self._lock:
                    self._misses += 1
                    self._pass_through += 1
                yield from self._slices(self._fetch(identity, b_start + lo, b_start + hi, fetch),
                                        0, hi - lo, chunk)
                return
            if leader:
                data = self._lead(flight, identity, idx, bid, length, fetch)
            else:
                flight.event.wait()
                if flight.error is not None:
                    raise flight.error
                assert flight.data is not None
                data = flight.data
            yield from self._slices(data, lo, hi, chunk)
            return

    def _schedule_fill(self, bid: str) -> _Flight | None:
        """Under the lock: the flight of a new background fill of block ``bid``, None when one
        is under way already or the fill queue is full (the block is not cached then)."""
        if bid in self._inflight or self._fills >= self.config.async_fill_queue:
            return None
        flight = self._inflight[bid] = _Flight()
        self._fills += 1
        return flight

    def _start_fill(self, flight: _Flight, identity: FileIdentity, idx: int, bid: str,
                    length: int, fetch: Fetch, served: tuple[int, bytes]) -> None:
        """Fetch and cache a whole block in the background; readers of all of it wait on
        ``flight`` as on any cold fetch. ``served``: what the partial reader got (see
        :meth:`_lead`)."""
        with self._lock:
            if self._filler is None and not self._fills_stopped:
                self._filler = ThreadPoolExecutor(max_workers=self.config.async_fill_workers,
                                                  thread_name_prefix="block-fill")
            filler = self._filler

        def run() -> None:
            try:
                with self._lock:
                    closing = self._fills_stopped
                if closing:
                    self._abandon(flight, bid, CacheError("the block store is closing"))
                    return
                try:
                    self._lead(flight, identity, idx, bid, length, fetch, count_miss=False,
                               served=served)
                except Exception as e:  # noqa: BLE001 - its reader was served; nobody to tell
                    log.warning("block store: background fill of block %d of %s failed: %s",
                                idx, identity.uri, e)
            finally:
                with self._lock:
                    self._fills -= 1

        try:
            if filler is None:
                raise RuntimeError("closed")
            filler.submit(run)
        except RuntimeError:  # closed meanwhile
            with self._lock:
                self._fills -= 1
            self._abandon(flight, bid, CacheError("the block store is closing"))

    def _abandon(self, flight: _Flight, bid: str, error: BaseException) -> None:
        with self._lock:
            if self._inflight.get(bid) is flight:
                del self._inflight[bid]
        flight.error = error
        flight.event.set()

    def wait_fills(self, timeout: float = 60.0) -> bool:
        """Wait until no background fill is waiting or running; whether that happened."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._fills == 0:
                    return True
            time.sleep(0.01)
        return False

    def _lead(self, flight: _Flight, identity: FileIdentity, idx: int, bid: str, length: int,
              fetch: Fetch, *, count_miss: bool = True,
              served: tuple[int, bytes] | None = None) -> bytes:
        """Fetch a cold block for every reader waiting on ``flight``, and cache it (a miss
        unless a background fill: its reader counted one). ``served``: (offset in the block,
        bytes) a reader already got; the block must hold them, or the file changed in between
        and nothing is cached."""
        try:
            data = self._fetch(identity, idx * self.block_size, idx * self.block_size + length,
                               fetch)
            if served is not None and data[served[0]:served[0] + len(served[1])] != served[1]:
                raise UfsError(f"{identity.uri} changed while block {idx} was being cached")
        except BaseException as e:
            flight.error = e
            with self._lock:
                self._inflight.pop(bid, None)
            flight.event.set()
            raise
        try:
            b = self._store_block(identity, idx, data, persisted=True)
        except Exception as e:  # the reader gets its bytes whatever happens to the cache
            log.error("block store: caching block %s of %s failed: %s", bid, identity.uri, e)
            b = None
        finally:
            with self._lock:
                flight.data = data
                self._inflight.pop(bid, None)
                flight.event.set()
        with self._lock:
            if count_miss:
                self._misses += 1
                if b is not None:
                    b.dir.tier.misses += 1
        return data

    def _fetch(self, identity: FileIdentity, start: int, end: int, fetch: Fetch) -> bytes:
        data = fetch(start, end)
        if len(data) != end - start:
            raise UfsError(f"under storage returned {len(data)} bytes of {identity.uri} "
                           f"[{start}, {end}), {end - start} expected (did the file change?)")
        with self._lock:
            self._bytes_from_ufs += len(data)
        return bytes(data)

    @staticmethod
    def _slices(data: bytes, lo: int, hi: int, chunk: int) -> Iterator[bytes]:
        if lo == 0 and hi == len(data) and chunk >= hi:
            yield data
            return
        view = memoryview(data)
        for pos in range(lo, hi, chunk):
            yield bytes(view[pos:min(hi, pos + chunk)])

    # -- access statistics -----------------------------------------------------------------------

    def _maybe_flush(self) -> None:
        if len(self._dirty) >= self.config.access_flush_every:
            self.flush()

    def flush(self) -> None:
        """Write the access statistics gathered since the last flush to the index."""
        with self._lock:
            dirty = list(self._dirty.values())
            self._dirty.clear()
            if dirty:
                try:
                    with self.state.transaction() as conn:
                        index.update_access(conn, dirty)
                except StateStoreError as e:
                    log.warning("block store: cannot write access statistics: %s", e)

    # -- policies: pin, TTL, free, persisted -----------------------------------------------------

    def pin(self, prefix: str) -> int:
        """Pin a file (its URI) or every file under a prefix, cached now or later: pinned blocks
        are never evicted. The number of blocks pinned now."""
        return self._set_rule(prefix, pinned=True)

    def unpin(self, prefix: str) -> int:
        """Remove the pin of ``prefix`` (blocks pinned by another rule stay pinned)."""
        return self._set_rule(prefix, pinned=False)

    def set_ttl(self, prefix: str, ttl_s: float, action: TtlAction | str = TtlAction.FREE) -> int:
        """Blocks of files under ``prefix`` expire ``ttl_s`` seconds after they were cached (or
        after now, for those cached already); :meth:`expire` then applies ``action``."""
        if not ttl_s >= 0 or math.isinf(ttl_s):
            raise InvalidInputError(f"a TTL must be a finite number of seconds >= 0, got {ttl_s}")
        return self._set_rule(prefix, ttl_s=ttl_s, action=TtlAction(action))

    def clear_ttl(self, prefix: str) -> int:
        """Remove the TTL of ``prefix``."""
        return self._set_rule(prefix, ttl_s=None, action=None)

    _UNSET = object()

    def _set_rule(self, prefix: str, *, pinned: bool | None = None,
                  ttl_s: float | None | object = _UNSET,
                  action: TtlAction | None = None) -> int:
        self._check_open()
        p = _norm_prefix(prefix)
        with self._lock:
            old = self._rules.get(p) or Rule(p, False, None, None, self._clock())
            rule = replace(old, updated_at=self._clock())
            if pinned is not None:
                rule = replace(rule, pinned=pinned, updated_at=old.updated_at)
            if ttl_s is not self._UNSET:
                rule = replace(rule, ttl_s=ttl_s if isinstance(ttl_s, (int, float)) else None,
                               ttl_action=action)
            affected = self._blocks_under(p)
            before = {b.block_id: (b.pinned, b.expire_at, b.ttl_action) for b in affected}
            if rule.pinned or rule.ttl_s is not None:
                self._rules[p] = rule
            else:
                self._rules.pop(p, None)
            for b in affected:
                self._apply_rules(b)
            try:
                with self.state.transaction() as conn:
                    index.put_rule(conn, rule)
                    index.update_policy(conn, affected)
            except BaseException:
                if old.pinned or old.ttl_s is not None:
                    self._rules[p] = old
                else:
                    self._rules.pop(p, None)
                for b in affected:
                    b.pinned, b.expire_at, b.ttl_action = before[b.block_id]
                raise
            return len(affected)

    def rules(self) -> list[Rule]:
        """The pin / TTL rules, by prefix."""
        with self._lock:
            return sorted(self._rules.values(), key=lambda r: r.prefix)

    def free(self, prefix: str) -> int:
        """Drop the cached blocks of a file or of every file under a prefix (pinned ones too);
        the bytes freed. Refused, dropping nothing, if any of them is not persisted."""
        self._check_open()
        p = _norm_prefix(prefix)
        with self._lock:
            blocks = self._blocks_under(p)
            unpersisted = [b for b in blocks if not b.persisted]
            if unpersisted:
                files = sorted({b.identity.uri for b in unpersisted})
                raise BlockNotPersistedError(
                    f"cannot free {prefix}: {len(unpersisted)} cached block(s) of "
                    f"{', '.join(files[:3])}{' ...' if len(files) > 3 else ''} are not persisted "
                    "to under storage yet")
            return self._drop(blocks, f"free {p}")

    def expire(self, now: float | None = None,
               on_delete: Callable[[str], None] | None = None) -> ExpireReport:
        """Apply expired TTLs: ``free`` drops the expired blocks; ``delete`` calls ``on_delete``
        (or the store's) with the file's URI, then drops all its blocks (the store itself never
        deletes under-storage files). Unpersisted blocks are kept, and so are a file's blocks
        when its delete callback fails; both are retried on the next call."""
        self._check_open()
        now = self._clock() if now is None else now
        callback = on_delete or self._on_delete
        with self._lock:
            expired: dict[str, list[Block]] = {}
            for b in self._blocks.values():
                if b.expire_at is not None and b.expire_at <= now:
                    expired.setdefault(b.identity.uri, []).append(b)
        deleted: list[str] = []
        kept: list[str] = []
        freed_blocks = freed_bytes = 0
        for uri, blocks in sorted(expired.items()):
            if any(not b.persisted for b in blocks):
                log.info("block store: TTL of %s expired, kept: not persisted yet", uri)
                kept.append(uri)
                continue
            if any(b.ttl_action is TtlAction.DELETE for b in blocks):
                if callback is None:
                    log.warning("block store: TTL of %s expired with action delete but no "
                                "delete callback is set: its blocks are only freed", uri)
                else:
                    try:
                        callback(uri)
                    except Exception as e:
                        log.warning("block store: TTL delete of %s failed, retried later: %s",
                                    uri, e)
                        kept.append(uri)
                        continue
                    deleted.append(uri)
                with self._lock:
                    blocks = [b for k in self._by_uri.get(uri, ())
                              for b in self._by_file.get(k, {}).values() if b.persisted]
            with self._lock:
                live = [b for b in blocks if self._blocks.get(b.block_id) is b]
                freed_bytes += self._drop(live, f"TTL of {uri}")
                freed_blocks += len(live)
        return ExpireReport(deleted_files=deleted, freed_blocks=freed_blocks,
                            freed_bytes=freed_bytes, kept_files=kept)

    def mark_persisted(self, identity: FileIdentity, indexes: Iterable[int] | None = None) -> int:
        """Mark blocks of a file version persisted (all, or those of ``indexes``): they become
        evictable and freeable. The number of blocks changed."""
        self._check_open()
        with self._lock:
            blocks = self._by_file.get(identity.key, {})
            wanted = set(indexes) if indexes is not None else None
            todo = [b for i, b in blocks.items()
                    if not b.persisted and (wanted is None or i in wanted)]
            if todo:
                with self.state.transaction() as conn:
                    index.set_persisted(conn, [b.block_id for b in todo])
                for b in todo:
                    b.persisted = True
            return len(todo)

    def discard(self, identity: FileIdentity) -> int:
        """Drop every cached block of one file version, persisted or not (the file was deleted or
        superseded: its only copy is meant to go); the bytes freed."""
        self._check_open()
        with self._lock:
            blocks = list(self._by_file.get(identity.key, {}).values())
            return self._drop(blocks, f"discard {identity.uri}")

    def rekey(self, old: FileIdentity, new: FileIdentity, *, persisted: bool = True) -> int:
        """Give the cached blocks of file version ``old`` to version ``new`` (same size: the
        same bytes under the identity the under storage reports after a persist), renamed in
        place and re-indexed in one transaction; ``persisted`` marks them so. Blocks being moved
        are dropped (read again from under storage later). The number of blocks re-keyed."""
        self._check_open()
        if old.size != new.size:
            raise InvalidInputError(f"cannot re-key {old.uri}: {old.size} bytes vs {new.size}")
        if old.key == new.key:
            return self.mark_persisted(new) if persisted else 0
        with self._move_lock, self._lock:
            blocks = [b for b in self._by_file.get(old.key, {}).values()]
            busy = [b for b in blocks if b.moving]
            if busy:
                self._drop(busy, "re-keyed while moving")
            moved: list[tuple[Block, Block, str, str]] = []
            dup = [b for b in blocks if not b.removed and block_id(new, b.index) in self._blocks]
            if dup:
                self._drop(dup, "re-keyed onto a cached version")
            for b in blocks:
                if b.moving or b.removed:
                    continue
                nb = Block(block_id(new, b.index), new, b.index, b.dir, b.size, b.checksum,
                           b.created_at, last_access=b.last_access,
                           access_count=b.access_count, crf=b.crf,
                           persisted=b.persisted or persisted)
                self._apply_rules(nb)
                src, dst = b.path, nb.path
                try:
                    ensure_parent(dst)
                    os.rename(src, dst)
                except OSError as e:
                    log.warning("block store: cannot re-key block %s (%s): %s", b.block_id,
                                src, e)
                    continue
                moved.append((b, nb, src, dst))
            try:
                with self.state.transaction() as conn:
                    index.delete_blocks(conn, [b.block_id for b, _, _, _ in moved])
                    for _, nb, _, _ in moved:
                        index.insert_block(conn, nb)
            except BaseException:
                for _, _, src, dst in moved:
                    try:
                        os.rename(dst, src)
                    except OSError:
                        pass
                raise
            for b, nb, _, _ in moved:
                d = b.dir
                self._detach(b)
                d.used += nb.size
                self._attach(nb)
            return len(moved)

    # -- inspection ------------------------------------------------------------------------------

    def block_info(self, identity: FileIdentity, index: int) -> BlockInfo | None:
        """The committed block ``index`` of this file version, or ``None``."""
        with self._lock:
            b = self._blocks.get(block_id(identity, index))
            return b.info() if b is not None else None

    def cached_blocks(self, identity: FileIdentity) -> list[int]:
        """Indexes of this file version's cached blocks."""
        with self._lock:
            return sorted(self._by_file.get(identity.key, {}))

    def is_fully_cached(self, identity: FileIdentity) -> bool:
        with self._lock:
            return len(self._by_file.get(identity.key, {})) == block_count(identity.size,
                                                                            self.block_size)

    def blocks(self, prefix: str | None = None) -> list[BlockInfo]:
        """Every committed block (of files under ``prefix``), by URI and index."""
        with self._lock:
            chosen = (self._blocks_under(_norm_prefix(prefix)) if prefix is not None
                      else list(self._blocks.values()))
            return sorted((b.info() for b in chosen), key=lambda i: (i.identity.uri, i.index))

    def unpersisted(self) -> list[BlockInfo]:
        """Blocks committed with ``persisted=False`` and not yet marked persisted."""
        with self._lock:
            return sorted((b.info() for b in self._blocks.values() if not b.persisted),
                          key=lambda i: (i.identity.uri, i.index))

    def stats(self) -> CacheStats:
        """Per tier and directory: capacity, used, blocks, pinned and unpersisted bytes, health;
        per tier hits, misses, evictions, bytes served; store-wide totals."""
        now = time.monotonic()
        with self._lock:
            tiers = []
            for t in self.tiers:
                dirs = [DirStats(
                    path=d.path, capacity_bytes=d.quota, used_bytes=d.used,
                    reserved_bytes=d.reserved, blocks=len(d.blocks),
                    pinned_bytes=sum(b.size for b in d.blocks.values() if b.pinned),
                    unpersisted_bytes=sum(b.size for b in d.blocks.values() if not b.persisted),
                    failing=not d.healthy(now)) for d in t.dirs]
                tiers.append(TierStats(
                    alias=t.alias, capacity_bytes=sum(d.capacity_bytes for d in dirs),
                    used_bytes=sum(d.used_bytes for d in dirs),
                    blocks=sum(d.blocks for d in dirs),
                    pinned_bytes=sum(d.pinned_bytes for d in dirs),
                    unpersisted_bytes=sum(d.unpersisted_bytes for d in dirs),
                    hits=t.hits, misses=t.misses, evictions=t.evictions,
                    bytes_served=t.bytes_served, dirs=dirs))
            total = self._hits + self._misses
            return CacheStats(tiers=tiers, hits=self._hits, misses=self._misses,
                              pass_through=self._pass_through,
                              bytes_from_ufs=self._bytes_from_ufs,
                              hit_ratio=self._hits / total if total else 0.0)

    def close(self) -> None:
        """Write the access statistics and release the directories (idempotent)."""
        if self._closed:
            return
        with self._lock:
            self._fills_stopped = True
            filler, self._filler = self._filler, None
        if filler is not None:  # fills not started give up; running ones finish first
            filler.shutdown(wait=True)
        self.flush()
        self._closed = True
        self._release_dirs()

    def __enter__(self) -> BlockStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def dir_paths(config: CacheConfig) -> list[Path]:
        """The storage directories a config names, tier after tier."""
        return [d.path for t in config.tiers for d in t.dirs]
