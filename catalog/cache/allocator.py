"""Allocators: which directory of which tier receives a new block.

An allocator only looks at free room (quota minus committed and reserved bytes) and directory
health; it never evicts. The store asks it first; when no tier has room it makes room by eviction
(:mod:`catalog.cache.evictor`) in the directories :meth:`Allocator.eviction_candidates` names.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence

from catalog.cache.config import AllocatorKind
from catalog.cache.tiers import DirState, TierState


class Allocator(ABC):
    """Picks a directory for ``size`` bytes: the first tier (from ``start_tier``) with room."""

    def allocate(self, tiers: Sequence[TierState], size: int, *, start_tier: int = 0,
                 exclude: Collection[DirState] = (), now: float) -> DirState | None:
        """A directory with ``size`` bytes free, in the first tier that has one; ``None`` if no
        tier has. Directories in ``exclude`` or failing (see ``dir_failure_backoff_s``) are
        skipped, so a failing tier spills to the next one."""
        for tier in tiers[start_tier:]:
            chosen = self.pick(tier, size, exclude, now)
            if chosen is not None:
                return chosen
        return None

    @abstractmethod
    def pick(self, tier: TierState, size: int, exclude: Collection[DirState],
             now: float) -> DirState | None:
        """A directory of ``tier`` with ``size`` bytes free, or ``None``."""

    @staticmethod
    def usable(d: DirState, size: int, exclude: Collection[DirState], now: float) -> bool:
        return d not in exclude and d.healthy(now) and d.quota >= size

    def eviction_candidates(self, tier: TierState, size: int, exclude: Collection[DirState],
                            now: float) -> list[DirState]:
        """Directories of ``tier`` where eviction could make ``size`` bytes free, the ones needing
        the least eviction first."""
        dirs = [d for d in tier.dirs if self.usable(d, size, exclude, now)
                and d.free + d.evictable_bytes() >= size]
        return sorted(dirs, key=lambda d: d.free, reverse=True)


class MaxFreeAllocator(Allocator):
    """The directory of the tier with the most free room (Alluxio's MaxFreeAllocator)."""

    def pick(self, tier: TierState, size: int, exclude: Collection[DirState],
             now: float) -> DirState | None:
        best: DirState | None = None
        for d in tier.dirs:
            if self.usable(d, size, exclude, now) and d.free >= size and (
                    best is None or d.free > best.free):
                best = d
        return best


class RoundRobinAllocator(Allocator):
    """The tier's directories in turn, skipping those without room."""

    def pick(self, tier: TierState, size: int, exclude: Collection[DirState],
             now: float) -> DirState | None:
        n = len(tier.dirs)
        for step in range(n):
            d = tier.dirs[(tier.next_dir + step) % n]
            if self.usable(d, size, exclude, now) and d.free >= size:
                tier.next_dir = (tier.next_dir + step + 1) % n
                return d
        return None


def make_allocator(kind: AllocatorKind) -> Allocator:
    """The allocator a config names."""
    return RoundRobinAllocator() if kind is AllocatorKind.ROUND_ROBIN else MaxFreeAllocator()
