"""Evictors: the order in which evictable blocks leave a full directory.

Both use a logical clock (one tick per block access, as Alluxio's annotators do), so the order
does not depend on wall-clock resolution:

* :class:`LRUEvictor`: the least recently accessed block first.
* :class:`LRFUEvictor`: the lowest combined recency/frequency value first. Each access adds 1 to
  the block's CRF, and a CRF decays by ``attenuation ** -(step * ticks elapsed)``; ``step`` near
  1 behaves like LRU, near 0 like LFU (Alluxio's LRFU, compared at the current tick).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable

from catalog.cache.config import CacheConfig, EvictorKind
from catalog.cache.tiers import Block


class Evictor(ABC):
    """Keeps each block's ordering fields current and picks victims."""

    @abstractmethod
    def on_access(self, block: Block, tick: int, *, new: bool = False) -> None:
        """Record an access (or the block's arrival, ``new``) at logical time ``tick``."""

    @abstractmethod
    def key(self, block: Block) -> float:
        """Eviction priority: the lowest goes first."""

    def victims(self, blocks: Iterable[Block], need: int) -> list[Block]:
        """Evictable blocks, in eviction order, until their sizes add up to ``need`` bytes (all
        of them if they do not)."""
        chosen: list[Block] = []
        total = 0
        for b in sorted((b for b in blocks if b.evictable), key=self.key):
            if total >= need:
                break
            chosen.append(b)
            total += b.size
        return chosen


class LRUEvictor(Evictor):
    """Least recently used first."""

    def on_access(self, block: Block, tick: int, *, new: bool = False) -> None:
        block.last_access = tick

    def key(self, block: Block) -> float:
        return float(block.last_access)


class LRFUEvictor(Evictor):
    """Least recently/frequently used first (CRF decayed to a common tick)."""

    def __init__(self, step_factor: float, attenuation: float) -> None:
        self.step = step_factor
        self.attenuation = attenuation
        self._log_att = math.log2(attenuation)

    def on_access(self, block: Block, tick: int, *, new: bool = False) -> None:
        if new:
            block.crf = 1.0
        elif tick != block.last_access:
            block.crf = block.crf * self.attenuation ** (-self.step * (tick - block.last_access)) \
                + 1.0
        block.last_access = tick

    def key(self, block: Block) -> float:
        # log2(crf * att^-(step * (now - last))) up to the constant -step*now*log2(att): no
        # underflow for blocks untouched for long.
        return math.log2(max(block.crf, 1e-300)) + self.step * self._log_att * block.last_access


def make_evictor(config: CacheConfig) -> Evictor:
    """The evictor a config names."""
    if config.evictor is EvictorKind.LRFU:
        return LRFUEvictor(config.lrfu_step_factor, config.lrfu_attenuation_factor)
    return LRUEvictor()
