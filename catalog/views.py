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
    layout_version: int | None = Field(default=None, description="the served layout's version")
    stale: bool = Field(default=False, description="served from its source because the source "
                                                   "changed after it was transformed")
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


JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")


class TransformTaskOut(BaseModel):
    """One partition of a transformation job and its progress."""

    partition: str = Field(description="partition name, '' for an unpartitioned table")
    state: str
    bytes_total: int = Field(description="bytes of source data planned")
    bytes_read: int
    rows_read: int
    bytes_written: int
    rows_written: int
    files_written: int
    layout_version: int | None = None
    location: str | None = Field(default=None, description="where the new layout is written")
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    unparseable_rows: int | None = Field(
        default=None, description="source rows with unparseable values, also written to the "
                                  "job's side file (unparseable=side-file; else null)")


class TransformJobOut(BaseModel):
    """A transformation job: its state (queued, running, succeeded, failed, cancelled),
    progress summed over its partitions, and each partition's."""

    id: int
    db: str
    table: str
    state: str
    trigger: str = Field(description="manual, on-change or cron")
    definition: str
    executor: str
    error: str | None = None
    table_version: int | None = Field(default=None, description="after the switch")
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = Field(default=None, description="started_at to finished_at (or "
                                                               "to now while running)")
    partitions_total: int
    partitions_done: int
    bytes_total: int
    bytes_read: int
    rows_read: int
    bytes_written: int
    rows_written: int
    files_written: int
    partitions: list[TransformTaskOut] = Field(default_factory=list)
