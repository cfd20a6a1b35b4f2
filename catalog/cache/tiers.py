"""In-memory state of the tiers: directories with their byte accounting, and committed blocks.

The block store keeps this state under its lock; the index in the state store mirrors it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from catalog.cache.model import BlockInfo, FileIdentity, TtlAction

TMP_DIR = ".tmp"
BLOCKS_DIR = "blocks"
LOCK_FILE = ".lock"


class Block:
    """A committed block (mutable; owned by the store's lock)."""

    __slots__ = ("block_id", "file_key", "identity", "index", "dir", "size", "checksum",
                 "created_at", "last_access", "access_count", "crf", "pinned", "expire_at",
                 "ttl_action", "persisted", "moving", "removed", "tier_hits")

    def __init__(self, block_id: str, identity: FileIdentity, index: int, dir: DirState,
                 size: int, checksum: int, created_at: float, *, last_access: int = 0,
                 access_count: int = 0, crf: float = 1.0, pinned: bool = False,
                 expire_at: float | None = None, ttl_action: TtlAction | None = None,
                 persisted: bool = True) -> None:
        self.block_id = block_id
        self.file_key = identity.key
        self.identity = identity
        self.index = index
        self.dir = dir
        self.size = size
        self.checksum = checksum
        self.created_at = created_at
        self.last_access = last_access
        self.access_count = access_count
        self.crf = crf
        self.pinned = pinned
        self.expire_at = expire_at
        self.ttl_action = ttl_action
        self.persisted = persisted
        #: Being copied to another directory (eviction or promotion): not picked again.
        self.moving = False
        #: Dropped while something (a move) still held it.
        self.removed = False
        #: Hits since the block arrived in its current tier (promotion on repeated access).
        self.tier_hits = 0

    @property
    def path(self) -> str:
        return self.dir.block_path(self.block_id)

    @property
    def evictable(self) -> bool:
        return not (self.pinned or not self.persisted or self.moving or self.removed)

    def info(self) -> BlockInfo:
        return BlockInfo(
            block_id=self.block_id, identity=self.identity, index=self.index,
            tier=self.dir.tier.alias, dir=self.dir.path, path=self.path, size=self.size,
            checksum=self.checksum, created_at=self.created_at, access_count=self.access_count,
            pinned=self.pinned, persisted=self.persisted, expire_at=self.expire_at,
            ttl_action=self.ttl_action)


class DirState:
    """One storage directory: quota, committed bytes, bytes reserved by writers, its blocks."""

    def __init__(self, tier: TierState, path: Path, quota: int, device: str | None = None
                 ) -> None:
        self.tier = tier
        self.root = path
        self.path = str(path)
        #: The failure domain: configured, else the file system's device number once open.
        self.device = device
        self.tmp = os.path.join(self.path, TMP_DIR)
        self.blocks_root = os.path.join(self.path, BLOCKS_DIR)
        self.quota = quota
        self.used = 0
        self.reserved = 0
        self.blocks: dict[str, Block] = {}
        self.failed_until = 0.0
        self.lock_fd: int | None = None
        #: On a memory file system (tmpfs): reading its blocks never waits for a disk.
        self.in_memory = False

    @property
    def free(self) -> int:
        return self.quota - self.used - self.reserved

    def healthy(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) >= self.failed_until

    def block_path(self, block_id: str) -> str:
        return os.path.join(self.blocks_root, block_id[:2], block_id)

    def evictable_bytes(self) -> int:
        return sum(b.size for b in self.blocks.values() if b.evictable)

    def __repr__(self) -> str:
        return f"DirState({self.tier.alias}:{self.path}, {self.used}/{self.quota})"


class TierState:
    """One tier: its position (0 = top), directories and counters."""

    def __init__(self, index: int, alias: str) -> None:
        self.index = index
        self.alias = alias
        self.dirs: list[DirState] = []
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.bytes_served = 0
        #: Next directory of the round-robin allocator.
        self.next_dir = 0
