"""The block store's vocabulary: file identities, block ids, read types, block info, stats and
errors."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from catalog.exceptions import CatalogError, InUseError

#: The caller's reader of the under-storage file: ``fetch(start, end)`` returns bytes
#: ``[start, end)`` (as fsspec's caching.py fetchers do).
Fetch = Callable[[int, int], bytes]


@dataclass(frozen=True)
class BlockSegment:
    """Bytes ``[offset, offset + count)`` of a committed block file, open as ``fd``: what a
    segment read (``iter_read(..., segments=True)``) yields for a cached block instead of its
    bytes, so a server can send them with ``sendfile``. ``fd`` is valid only until the iterator
    is advanced (it is closed then); a block evicted meanwhile keeps its bytes for ``fd``."""

    fd: int
    offset: int
    count: int

    def read(self) -> bytes:
        """The bytes themselves (``OSError(EIO)`` when the file is shorter)."""
        data = os.pread(self.fd, self.count, self.offset)
        if len(data) != self.count:
            raise OSError(errno.EIO, f"block file gave {len(data)} bytes, {self.count} expected")
        return data


@dataclass(frozen=True)
class FileIdentity:
    """An under-storage file as it is now: a change of any field makes its cached blocks miss."""

    uri: str
    size: int
    mtime_ns: int
    etag: str | None = None

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError(f"file size must be >= 0, got {self.size}")

    @property
    def key(self) -> str:
        """32 hex digits derived from every field (uri, size, mtime, ETag)."""
        raw = json.dumps([self.uri, self.size, self.mtime_ns, self.etag], separators=(",", ":"))
        return hashlib.blake2b(raw.encode(), digest_size=16).hexdigest()


def block_id(identity: FileIdentity, index: int) -> str:
    """The id of block ``index`` of a file version: ``<file key>-<index>``."""
    return f"{identity.key}-{index}"


def block_count(size: int, block_size: int) -> int:
    """Blocks of a file of ``size`` bytes (an empty file has none)."""
    return (size + block_size - 1) // block_size


def block_length(size: int, block_size: int, index: int) -> int:
    """Bytes of block ``index``: ``block_size`` except the last one, which may be shorter."""
    start = index * block_size
    if index < 0 or start >= size:
        raise ValueError(f"block {index} is outside a file of {size} bytes")
    return min(block_size, size - start)


class ReadType(str, Enum):
    """How a read uses the cache.

    * ``CACHE``: serve cached blocks, fetch missing ones in whole blocks and cache them.
    * ``CACHE_PROMOTE``: as CACHE, and move a block read from a lower tier to the top tier.
    * ``NO_CACHE``: serve cached blocks without touching their LRU/LRFU order, read the rest
      straight from under storage (only the bytes asked for), cache nothing.
    """

    CACHE = "CACHE"
    CACHE_PROMOTE = "CACHE_PROMOTE"
    NO_CACHE = "NO_CACHE"


class TtlAction(str, Enum):
    """What happens to a file under an expired TTL: its cached blocks are dropped (``free``), or
    the store's ``on_delete`` callback is asked to delete the file, then its blocks dropped."""

    FREE = "free"
    DELETE = "delete"


@dataclass(frozen=True)
class BlockInfo:
    """A committed block as the index holds it."""

    block_id: str
    identity: FileIdentity
    index: int
    tier: str
    dir: str
    path: str
    size: int
    checksum: int
    created_at: float
    access_count: int
    pinned: bool
    persisted: bool
    expire_at: float | None
    ttl_action: TtlAction | None


@dataclass(frozen=True)
class DirStats:
    """One storage directory: quota, bytes held, blocks, pinned / unpersisted bytes, health."""

    path: str
    capacity_bytes: int
    used_bytes: int
    reserved_bytes: int
    blocks: int
    pinned_bytes: int
    unpersisted_bytes: int
    failing: bool


@dataclass(frozen=True)
class TierStats:
    """One tier: the sums of its directories and its counters since the store opened.

    ``hits`` are block reads served from this tier, ``misses`` cold blocks fetched from under
    storage and cached into it, ``evictions`` blocks moved out of it (down a tier, or dropped
    from the last one) to make room.
    """

    alias: str
    capacity_bytes: int
    used_bytes: int
    blocks: int
    pinned_bytes: int
    unpersisted_bytes: int
    hits: int
    misses: int
    evictions: int
    bytes_served: int
    dirs: list[DirStats]


@dataclass(frozen=True)
class CacheStats:
    """The whole store: per tier, plus reads served without caching (``pass_through``)."""

    tiers: list[TierStats]
    hits: int
    misses: int
    pass_through: int
    bytes_from_ufs: int
    hit_ratio: float

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able data."""
        return asdict(self)


@dataclass(frozen=True)
class ExpireReport:
    """What one TTL pass did: files handed to ``on_delete``, blocks and bytes dropped, files kept
    because their blocks are not persisted yet or the delete callback failed."""

    deleted_files: list[str]
    freed_blocks: int
    freed_bytes: int
    kept_files: list[str]


class CacheError(CatalogError):
    """The block store failed or was misused (a block written past its length, a closed store)."""


class CacheDirInUseError(CacheError):
    """A cache directory is held by another block store (another process)."""


class BlockNotPersistedError(InUseError):
    """Refused: the blocks are not persisted to under storage yet (their only copy is cached)."""
