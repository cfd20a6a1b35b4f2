"""Service-level answers: what the catalog service returns to its front ends (REST serialises
them as they are; the CLI prints them). No store records leave the core."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, field_serializer

from catalog.models import Database, Partition, Table


class Counts(BaseModel):
    unchanged: int = 0
    updated: int = 0
    added: int = 0
    removed: int = 0


class SyncReport(BaseModel):
    """What one attach or sync did."""

    db: str
    tables: Counts = Field(default_factory=Counts)
    partitions: Counts = Field(default_factory=Counts)
    layouts_reverted: int = Field(
        default=0, description="transformed partitions served from their source again because "
                               "the source changed")
    errors: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(
        default_factory=list, description="what the under-database skipped (not a failure)")
    duration_s: float = 0.0

    @field_serializer("duration_s")
    def _rounded(self, value: float) -> float:
        return round(value, 3)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


class DatabaseSummary(BaseModel):
    name: str
    udb_type: str
    uri: str
    source_db: str
    table_count: int
    serve_mode: str
    attached_at: datetime
    last_sync_at: datetime | None
    last_sync: SyncReport | None


class DatabaseDetail(DatabaseSummary):
    database: Database
    options: dict[str, str] = Field(description="attach options (secret values redacted)")
    sync_interval_s: float = Field(description="effective periodic sync interval; 0 = disabled")


class LayoutSummary(BaseModel):
    """Which layout a table is served with."""

    kind: str = Field(description="source | transformed | mixed (some partitions transformed)")
    transformed_partitions: int = 0
    version: int | None = Field(default=None,
                                description="layout version of an unpartitioned table")


class TableSummary(BaseModel):
    name: str
    type: str
    location: str | None = Field(description="the served location")
    version: int
    partition_count: int
    bypass: bool
    layout: str = Field(description="source | transformed | mixed")


class TableDetail(Table):
    """The table as served, plus what the catalog keeps about it."""

    id: int
    version: int
    partition_count: int
    layout: LayoutSummary
    location: str | None
    source_location: str | None
    bypass: bool
    fingerprint: str | None


class PartitionOut(Partition):
    name: str
    layout: str = Field(default="source", description="source, or transformed v<N>")
    source_location: str | None = None


class PartitionPage(BaseModel):
    total: int = Field(description="partitions matching the filter")
    offset: int
    limit: int
    partitions: list[PartitionOut]


class LocationOwner(BaseModel):
    """Which attached table (and partition, and layout) a storage path belongs to."""

    db: str
    table: str
    partition: str | None = None
    layout_version: int | None = Field(default=None, description="None: the source layout")
    location: str
