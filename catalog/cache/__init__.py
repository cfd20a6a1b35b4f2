"""The tiered block store: under-storage files cached as fixed-size blocks over ordered tiers.

A library that knows nothing of storage: a file is identified by a :class:`FileIdentity` (URI,
size, mtime, ETag) and read through a ``fetch(start, end) -> bytes`` the caller gives.

**Tiers.** :class:`CacheConfig` lists tiers fastest first (``MEM`` on a tmpfs or any directory,
``SSD``, ``HDD``), each with directories and byte quotas. Files are cut into blocks of
``block_size`` (64 MiB by default; a small file is one block, the last block is shorter). A block's
id derives from the whole identity and its index, so a changed source file (any of URI, size,
mtime, ETag) never hits stale blocks; caching a new version drops the old version's persisted
blocks.

**Lifecycle.** :meth:`BlockStore.create_block` reserves room and opens a temp file in the chosen
directory's ``.tmp`` area, seen by its writer only; :meth:`BlockStore.commit_block` checks the
length, fsyncs, renames the file into ``blocks/`` and writes its index row in one step under the
store's lock (readers see a whole block or none); :meth:`BlockStore.abort_block` removes it.
:meth:`BlockStore.put_block` does all three for a block in memory.

**Allocation and eviction** are separate (as in Alluxio's TieredBlockStore): the allocator
(:mod:`catalog.cache.allocator`, max-free or round-robin per tier) gives a new block to the first
tier with room, skipping directories that failed a write (ENOSPC, EIO, removed) for
``dir_failure_backoff_s``, so a full or failing tier spills to the next. When no tier has room,
the evictor (:mod:`catalog.cache.evictor`, LRU by default or LRFU) makes room top tier first:
its victims, only unpinned, persisted blocks, move one tier down (copied, checksum-verified,
fsynced, index row switched) or leave the last tier. When nothing can be evicted (pinned or
unpersisted data) the read is served without caching and a warning is logged; it is never an
error for the reader.

**Index.** The state store's ``cache_blocks`` table (and ``cache_rules`` for pins and TTLs)
mirrors the in-memory state: commits, moves, drops and rule changes are written in a transaction
as they happen; access statistics (logical access time, count, LRFU score), which only order
eviction, are written in batches (``access_flush_every``, :meth:`BlockStore.flush`, close).

**Verification on start.** Temp files (writes a crash interrupted) are removed; every indexed
block is checked against its file (size, and crc32 unless ``verify_checksums`` is off); a
missing, truncated or corrupt block is dropped, row and file, never served; block files no row
names (a crash between rename and index write) are removed; directories over a (shrunk) quota
are evicted down to it. A block whose file turns out bad when read is dropped and fetched again.

**Reads** (:meth:`BlockStore.read`, :meth:`BlockStore.iter_read` for streaming) take a
:class:`ReadType`: ``CACHE`` caches missing blocks whole, ``CACHE_PROMOTE`` also moves a block
read from a lower tier to the top one (``CACHE`` does after ``promote_after_accesses`` hits),
``NO_CACHE`` reads through, caching nothing and leaving the eviction order untouched.
Concurrent readers of one cold block fetch it from under storage once (single flight).

**Pin, TTL, free.** :meth:`BlockStore.pin` by file or prefix: pinned blocks are never evicted.
:meth:`BlockStore.set_ttl` with action ``free`` (drop the blocks) or ``delete`` (the caller's
``on_delete(uri)`` is called, then the blocks are dropped: the store never deletes under-storage
files itself), applied by :meth:`BlockStore.expire`. :meth:`BlockStore.free` drops cached copies.

**Unpersisted blocks** (``commit_block(..., persisted=False)``, for writes whose only copy is
the cache until an async persist) are never evicted, ``free`` of them raises
:class:`BlockNotPersistedError`, and a TTL keeps them; :meth:`BlockStore.mark_persisted` makes
them ordinary blocks. :meth:`BlockStore.stats` gives per tier and directory capacity, used,
blocks, pinned bytes, hits, misses and evictions.

One block store owns its directories (``flock`` on ``<dir>/.lock``).
"""

from catalog.cache.config import (
    AllocatorKind,
    CacheConfig,
    DirConfig,
    EvictorKind,
    TierConfig,
)
from catalog.cache.index import Rule
from catalog.cache.lifecycle import CacheWriteError, TempBlock
from catalog.cache.model import (
    BlockInfo,
    BlockNotPersistedError,
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
from catalog.cache.store import BlockStore

__all__ = [
    "AllocatorKind", "BlockInfo", "BlockNotPersistedError", "BlockStore", "CacheConfig",
    "CacheDirInUseError", "CacheError", "CacheStats", "CacheWriteError", "DirConfig", "DirStats",
    "EvictorKind", "ExpireReport", "Fetch", "FileIdentity", "ReadType", "Rule", "TempBlock",
    "TierConfig", "TierStats", "TtlAction", "block_count", "block_id", "block_length",
]
