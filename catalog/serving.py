"""The served-location policy: the one place that decides what an engine sees for a table or
partition (which layout, which location, in which client's spelling).

Inputs: the current transformed layout (if any), the database's ``serve.mode``, its
``bypass.tables`` and the client view. ``direct`` (the default) serves UDB locations as they are
and transformed copies at their under-storage URI; ``cached`` (every location under the S3
gateway) comes with the gateway. The client view only changes the spelling: Trino's listener gets
local ``file:`` locations as ``local:///`` (Trino 476's native local file system lists files as
``local:///...`` and drops every file whose parent is not textually the table location, so a
``file:`` table would read as empty).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from catalog.exceptions import InvalidOptionError
from catalog.models import Database, Layout, Partition, StorageDescriptor, Table

SERVE_DIRECT = "direct"
SERVE_CACHED = "cached"
#: Table parameters that only make sense for the source's text files.
_TEXT_ONLY_PARAMETERS = ("skip.header.line.count", "skip.footer.line.count")


class ClientView(enum.Enum):
    """How a client spells storage locations."""

    VERBATIM = "verbatim"  # Spark, Hive, PrestoDB: Hadoop file systems
    TRINO = "trino"  # local file: locations as local:///

    def present(self, location: str | None) -> str | None:
        if self is ClientView.TRINO and location and location.startswith("file:"):
            return "local://" + "/" + location[len("file:"):].lstrip("/")
        return location


@dataclass(frozen=True)
class ServePolicy:
    """A database's serving options (``serve.mode``, ``bypass.tables``)."""

    mode: str
    bypass: frozenset[str]

    @classmethod
    def parse(cls, options: Mapping[str, str]) -> ServePolicy:
        mode = options.get("serve.mode", SERVE_DIRECT).strip().lower()
        if mode == SERVE_CACHED:
            raise InvalidOptionError(
                "serve.mode=cached serves locations through the S3 gateway, which this release "
                "does not have yet; use serve.mode=direct")
        if mode != SERVE_DIRECT:
            raise InvalidOptionError(f"serve.mode must be direct or cached, got '{mode}'")
        bypass = frozenset(n.strip().lower() for n in options.get("bypass.tables", "").split(",")
                           if n.strip())
        return cls(mode, bypass)

    def uses_layouts(self, table: str) -> bool:
        """Whether transformed layouts are served for ``table`` (bypassed tables: never)."""
        return table.lower() not in self.bypass


def _sd(sd: StorageDescriptor, layout: Layout | None, view: ClientView) -> StorageDescriptor:
    out = layout.apply(sd) if layout is not None else sd
    presented = view.present(out.location)
    return out if presented == out.location else out.model_copy(update={"location": presented})


def served_table(table: Table, layout: Layout | None, view: ClientView) -> Table:
    """``table`` as an engine sees it: with its transformed ``layout`` (unpartitioned tables
    only; None serves the source) in the client's spelling."""
    if layout is None:
        sd = _sd(table.sd, None, view)
        return table if sd is table.sd else table.model_copy(update={"sd": sd})
    params = {k: v for k, v in table.parameters.items() if k not in _TEXT_ONLY_PARAMETERS}
    params.update(layout.parameters)
    update: dict[str, object] = {"sd": _sd(table.sd, layout, view), "parameters": params}
    if layout.column_stats:
        update["column_stats"] = layout.column_stats
    return table.model_copy(update=update)


def served_partition(partition: Partition, layout: Layout | None,
                     view: ClientView) -> Partition:
    """``partition`` as an engine sees it (see :func:`served_table`)."""
    sd = _sd(partition.sd, layout, view)
    if layout is None:
        return partition if sd is partition.sd else partition.model_copy(update={"sd": sd})
    update: dict[str, object] = {"sd": sd,
                                 "parameters": {**partition.parameters, **layout.parameters}}
    if layout.column_stats:
        update["column_stats"] = layout.column_stats
    return partition.model_copy(update=update)


def served_database(db: Database, view: ClientView) -> Database:
    location = view.present(db.location)
    return db if location == db.location else db.model_copy(update={"location": location})
