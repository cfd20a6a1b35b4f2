"""Configuration of the block store: tiers (ordered, fastest first), their directories and quotas.

Parsable from JSON so that one setting can hold it, e.g.::

    {"block_size": "64MiB",
     "tiers": [{"alias": "MEM", "dirs": [{"path": "/dev/shm/strata", "quota": "4GiB"}]},
               {"alias": "SSD", "dirs": [{"path": "/ssd1/strata", "quota": "200GiB"},
                                         {"path": "/ssd2/strata", "quota": "200GiB"}]}]}

Byte sizes take an integer or a text with a 1024-based unit (``512MiB``, ``2GB``, ``1TiB``).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from catalog.transform.definition import parse_bytes

MiB = 1024 * 1024
GiB = 1024 * MiB


def _bytes(value: Any) -> Any:
    """``"64MiB"`` -> 67108864; integers pass as they are (pydantic checks their range)."""
    if isinstance(value, str):
        stripped = value.strip()
        return int(stripped) if stripped.isdigit() else parse_bytes("byte size", stripped)
    return value


#: A byte count given as an integer or a text with a unit.
ByteSize = Annotated[int, BeforeValidator(_bytes)]


class EvictorKind(str, Enum):
    """Which blocks leave a full tier first: least recently used, or least by LRFU score."""

    LRU = "LRU"
    LRFU = "LRFU"


class AllocatorKind(str, Enum):
    """Which directory of a tier gets a new block: the one with most free room, or in turn."""

    MAX_FREE = "max_free"
    ROUND_ROBIN = "round_robin"


class DirConfig(BaseModel):
    """One storage directory of a tier and its byte quota."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path
    quota: ByteSize = Field(ge=0, description="bytes of blocks this directory may hold")
    device: str | None = Field(
        default=None, min_length=1, max_length=128,
        description="the failure domain (disk, host) this directory is on; copies of a "
                    "replicated write go to distinct devices when there are enough (default: "
                    "the file system's device number)")


class TierConfig(BaseModel):
    """One tier (``MEM``, ``SSD``, ``HDD`` or any alias), with one or more directories."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alias: str = Field(pattern=r"^[A-Za-z0-9_]{1,32}$")
    dirs: list[DirConfig] = Field(min_length=1)


class CacheConfig(BaseModel):
    """The block store's configuration; tiers are ordered, the first is the fastest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tiers: list[TierConfig] = Field(min_length=1)
    block_size: ByteSize = Field(default=64 * MiB, ge=1, le=4 * GiB)
    evictor: EvictorKind = EvictorKind.LRU
    allocator: AllocatorKind = AllocatorKind.MAX_FREE
    lrfu_step_factor: float = Field(
        default=0.25, gt=0, le=1,
        description="LRFU: weight of an access decays by attenuation^(-step * accesses since)")
    lrfu_attenuation_factor: float = Field(default=2.0, gt=1)
    promote_after_accesses: int = Field(
        default=3, ge=0,
        description="CACHE reads move a block to the top tier after this many hits in a lower "
                    "tier (0: only CACHE_PROMOTE promotes)")
    verify_checksums: bool = Field(
        default=True,
        description="on start, check every block's checksum (False: its size only)")
    verify_parallelism: int = Field(default=4, ge=1, le=64)
    dir_failure_backoff_s: float = Field(
        default=30.0, ge=0,
        description="a directory that failed a write (ENOSPC, EIO) takes no new block for "
                    "this long")
    read_chunk_bytes: ByteSize = Field(default=4 * MiB, ge=1,
                                       description="chunk size of streaming reads")
    access_flush_every: int = Field(
        default=256, ge=1,
        description="access statistics are written to the index after this many hits (and on "
                    "flush/close)")
    async_fill_below: float = Field(
        default=0.0, ge=0, le=1,
        description="a cold CACHE read of less than this fraction of a block gets its bytes "
                    "from under storage at once (a ranged read) while the whole block is "
                    "fetched and cached in the background (0, the default: the reader waits "
                    "for the block; each partial read is then one request more to the store)")
    async_fill_workers: int = Field(default=2, ge=1, le=64,
                                    description="background block fills at once")
    async_fill_queue: int = Field(
        default=64, ge=0,
        description="background fills waiting or running at most; past it a partial read is "
                    "served without caching its block")

    @field_validator("tiers")
    @classmethod
    def _distinct(cls, tiers: list[TierConfig]) -> list[TierConfig]:
        aliases = [t.alias.upper() for t in tiers]
        if len(set(aliases)) != len(aliases):
            raise ValueError(f"tier aliases must be distinct, got {[t.alias for t in tiers]}")
        paths = [str(d.path.expanduser().absolute()) for t in tiers for d in t.dirs]
        if len(set(paths)) != len(paths):
            raise ValueError("a directory may appear in only one tier, once")
        return tiers

    @model_validator(mode="after")
    def _chunk(self) -> CacheConfig:
        if self.read_chunk_bytes > self.block_size:
            object.__setattr__(self, "read_chunk_bytes", self.block_size)
        return self

    @classmethod
    def from_json(cls, text: str) -> CacheConfig:
        """Parse the JSON form (as a ``CATALOG_CACHE_TIERS`` setting holds it)."""
        return cls.model_validate_json(text)

    @classmethod
    def single_tier(cls, path: Path, quota: int, alias: str = "SSD", **kw: Any) -> CacheConfig:
        """One tier of one directory, e.g. ``<data_dir>/cache`` when nothing is configured."""
        return cls(tiers=[TierConfig(alias=alias, dirs=[DirConfig(path=path, quota=quota)])], **kw)
