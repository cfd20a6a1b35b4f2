"""The catalog's domain model: protocol-independent, immutable, JSON-serialisable.

The fields mirror what a Hive Metastore keeps so that nothing is lost between an under-database and
the engines; converting from/to the HMS Thrift structs happens at the boundaries only
(``catalog.udb.hive`` reads them, ``api.thrift`` writes them).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MANAGED_TABLE = "MANAGED_TABLE"
EXTERNAL_TABLE = "EXTERNAL_TABLE"
VIRTUAL_VIEW = "VIRTUAL_VIEW"
MATERIALIZED_VIEW = "MATERIALIZED_VIEW"

#: Hive's name for the partition of rows whose partition key is NULL.
DEFAULT_PARTITION_NAME = "__HIVE_DEFAULT_PARTITION__"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Column(_Model):
    name: str
    type: str
    comment: str | None = None


class SerDe(_Model):
    name: str | None = None
    serialization_lib: str | None = None
    parameters: dict[str, str] = Field(default_factory=dict)


class SortColumn(_Model):
    column: str
    order: int  # 1 ascending, 0 descending (Hive's convention)


class SkewedInfo(_Model):
    column_names: list[str] = Field(default_factory=list)
    column_values: list[list[str]] = Field(default_factory=list)
    location_map: list[tuple[list[str], str]] = Field(default_factory=list)


class StorageDescriptor(_Model):
    columns: list[Column] = Field(default_factory=list)
    location: str | None = None
    input_format: str | None = None
    output_format: str | None = None
    compressed: bool = False
    num_buckets: int = -1
    serde: SerDe = Field(default_factory=SerDe)
    bucket_columns: list[str] = Field(default_factory=list)
    sort_columns: list[SortColumn] = Field(default_factory=list)
    parameters: dict[str, str] = Field(default_factory=dict)
    skewed: SkewedInfo = Field(default_factory=SkewedInfo)
    stored_as_sub_directories: bool = False


class ColumnStatistics(_Model):
    """Statistics of one column; ``kind`` names the HMS union member.

    ``kind`` is one of boolean, long, double, string, binary, decimal, date; ``data`` holds that
    member's fields by their HMS names (``numNulls``, ``numDVs``, ``lowValue``, ...). Decimal
    bounds are ``{"unscaled": <base64>, "scale": n}``, dates ``{"daysSinceEpoch": n}``, bit vectors
    base64.
    """

    column: str
    type: str
    kind: str
    data: dict[str, Any] = Field(default_factory=dict)


class Database(_Model):
    name: str
    description: str | None = None
    location: str | None = None
    parameters: dict[str, str] = Field(default_factory=dict)
    owner_name: str | None = None
    owner_type: str | None = None  # USER, ROLE, GROUP


class Table(_Model):
    db_name: str
    name: str
    table_type: str = EXTERNAL_TABLE
    owner: str | None = None
    owner_type: str | None = None
    create_time: int = 0
    last_access_time: int = 0
    retention: int = 0
    sd: StorageDescriptor = Field(default_factory=StorageDescriptor)
    partition_keys: list[Column] = Field(default_factory=list)
    parameters: dict[str, str] = Field(default_factory=dict)
    view_original_text: str | None = None
    view_expanded_text: str | None = None
    temporary: bool = False
    rewrite_enabled: bool = False
    column_stats: list[ColumnStatistics] = Field(default_factory=list)

    @property
    def is_view(self) -> bool:
        return self.table_type in (VIRTUAL_VIEW, MATERIALIZED_VIEW)

    @property
    def is_partitioned(self) -> bool:
        return bool(self.partition_keys)


class Partition(_Model):
    values: list[str]
    db_name: str
    table_name: str
    create_time: int = 0
    last_access_time: int = 0
    sd: StorageDescriptor = Field(default_factory=StorageDescriptor)
    parameters: dict[str, str] = Field(default_factory=dict)
    column_stats: list[ColumnStatistics] = Field(default_factory=list)


def escape_partition_value(value: str) -> str:
    """Escape a partition value the way Hive's ``FileUtils.escapePathName`` does."""
    if not _NEEDS_ESCAPE.search(value):
        return value
    out = []
    for ch in value:
        if ch in _ESCAPED or ord(ch) < 0x20:
            out.append(f"%{ord(ch):02X}")
        else:
            out.append(ch)
    return "".join(out)


def unescape_partition_value(value: str) -> str:
    """Undo :func:`escape_partition_value`."""
    out = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "%" and _is_hex(value[i + 1 : i + 3]):
            out.append(chr(int(value[i + 1 : i + 3], 16)))
            i += 3
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _is_hex(s: str) -> bool:
    return len(s) == 2 and all(c in "0123456789abcdefABCDEF" for c in s)


_ESCAPED = set('"#%\'*/:=?\\\x7f{[]^')
_NEEDS_ESCAPE = re.compile("[" + re.escape("".join(sorted(_ESCAPED))) + "\x00-\x1f]")


def partition_name(keys: list[Column] | list[str], values: list[str]) -> str:
    """The Hive partition name ``k1=v1/k2=v2`` (keys and values escaped)."""
    names = [k.name if isinstance(k, Column) else k for k in keys]
    if len(names) != len(values):
        raise ValueError(f"{len(values)} partition values for {len(names)} keys")
    return "/".join(
        f"{escape_partition_value(k)}={escape_partition_value(v)}" for k, v in zip(names, values)
    )


def parse_partition_name(name: str) -> list[tuple[str, str]]:
    """Split ``k1=v1/k2=v2`` into ``[(k1, v1), (k2, v2)]``, unescaping both sides."""
    pairs = []
    for part in name.split("/"):
        if "=" not in part:
            raise ValueError(f"partition name component '{part}' has no '='")
        k, v = part.split("=", 1)
        pairs.append((unescape_partition_value(k), unescape_partition_value(v)))
    return pairs


class Layout(_Model):
    """One immutable, versioned physical layout of a partition (``partition == ''`` for an
    unpartitioned table): where its files are and how to read them.

    The source layout is the under-database's own storage descriptor; a transformed layout
    replaces location, formats and serde, and carries the statistics computed while writing.
    """

    partition: str
    version: int
    location: str
    input_format: str
    output_format: str
    serde: SerDe
    #: numRows / totalSize / numFiles of the new files, merged over the source's parameters.
    parameters: dict[str, str] = Field(default_factory=dict)
    column_stats: list[ColumnStatistics] = Field(default_factory=list)
    #: The source data fingerprint the layout was made from (sync reverts when it changes).
    source_fingerprint: str | None = None
    created_at: float = 0.0

    def apply(self, sd: StorageDescriptor) -> StorageDescriptor:
        """``sd`` as it reads with this layout."""
        return sd.model_copy(update={"location": self.location, "input_format": self.input_format,
                                     "output_format": self.output_format, "serde": self.serde,
                                     "compressed": False})
