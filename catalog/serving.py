"""The served-location policy: the one place that decides what an engine sees for a table or
partition (which layout, which location, in which client's spelling).

Inputs: the current transformed layout (if any), the database's ``serve.mode``, its
``bypass.tables`` and the client view. ``direct`` (the default) serves UDB locations as they are
and transformed copies at their under-storage URI; ``cached`` serves every location under the
S3 gateway, ``s3://<bucket>/<key>`` where ``/<bucket>/<key>`` is the location's namespace path
(the core mounts a source's storage automatically when no mount covers it), so engines read
through the gateway and its block store. In ``direct`` mode the client view changes the
spelling: Trino's listener gets local ``file:`` locations as ``local:///`` (Trino 476's native
local file system lists files as ``local:///...`` and drops every file whose parent is not
textually the table location, so a ``file:`` table would read as empty); gateway locations are
the same for every client.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
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
        if mode not in (SERVE_DIRECT, SERVE_CACHED):
            raise InvalidOptionError(f"serve.mode must be direct or cached, got '{mode}'")
        bypass = frozenset(n.strip().lower() for n in options.get("bypass.tables", "").split(",")
                           if n.strip())
        return cls(mode, bypass)

    def uses_layouts(self, table: str) -> bool:
        """Whether transformed layouts are served for ``table`` (bypassed tables: never)."""
        return table.lower() not in self.bypass


#: Maps a storage location to the one served (the gateway's ``s3://`` spelling in cached mode).
Locate = Callable[[str], str]


def _present(location: str | None, view: ClientView, locate: Locate | None) -> str | None:
    if locate is not None and location:
        return locate(location)
    return view.present(location)


def _sd(sd: StorageDescriptor, layout: Layout | None, view: ClientView,
        locate: Locate | None = None) -> StorageDescriptor:
    out = layout.apply(sd) if layout is not None else sd
    presented = _present(out.location, view, locate)
    return out if presented == out.location else out.model_copy(update={"location": presented})


def served_table(table: Table, layout: Layout | None, view: ClientView,
                 locate: Locate | None = None) -> Table:
    """``table`` as an engine sees it: with its transformed ``layout`` (unpartitioned tables
    only; None serves the source) in the client's spelling, or where ``locate`` (cached mode)
    puts it."""
    if layout is None:
        sd = _sd(table.sd, None, view, locate)
        return table if sd is table.sd else table.model_copy(update={"sd": sd})
    params = {k: v for k, v in table.parameters.items() if k not in _TEXT_ONLY_PARAMETERS}
    params.update(layout.parameters)
    update: dict[str, object] = {"sd": _sd(table.sd, layout, view, locate),
                                 "parameters": params}
    if layout.column_stats:
        update["column_stats"] = layout.column_stats
    return table.model_copy(update=update)


def served_partition(partition: Partition, layout: Layout | None,
                     view: ClientView, locate: Locate | None = None) -> Partition:
    """``partition`` as an engine sees it (see :func:`served_table`)."""
    sd = _sd(partition.sd, layout, view, locate)
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
