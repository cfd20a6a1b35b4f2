"""The embedded transformation executor: one :class:`PartitionPlan` made into Parquet files.

:func:`execute_partition` reads each output group's input files with the Hive-semantics source
reader (:func:`catalog.transform.source.iter_source_tables`), optionally sorts them
(``sort.by``, ascending, NULLs first as Hive's ``ASC``), and writes ``part-<i>.parquet`` below
``output_dir`` through the :class:`Namespace`. All data work is columnar (pyarrow / DuckDB); no row
is handled in Python.

Rules:

* Output file ``i`` is ``{output_dir}/part-{i}.parquet``, written under its final name (the
  namespace has no rename yet). On any failure, and on cancellation (``cancelled()`` is checked
  before each output file; :class:`TransformCancelled` is raised), the whole ``output_dir`` is
  deleted recursively before the error propagates — a half-written layout never remains.
* Parquet: compression from ``file.parquet.compression`` (``none`` writes uncompressed; note that
  pyarrow's ``lz4`` is Parquet's ``LZ4_RAW``); rows per row group estimated as
  ``row.group.size / (nbytes / num_rows)`` of the Arrow data (at least 1); timestamps are written
  as INT96 (what Hive < 4 reads); everything else with the Arrow type of the Hive column type.
* Without ``sort.by`` an output file is streamed: input tables are buffered until a row group is
  full, so memory stays around one row group plus one input file. With ``sort.by`` the whole
  output group is read, sorted, then written.
* An empty plan (no output groups) writes no file: the directory is created with ``fs.mkdirs`` and
  engines read an empty directory as no rows; the layout says ``numRows=0``, ``numFiles=0``.
* ``progress(bytes_read, rows_read, bytes_written, rows_written)`` is called after each output file
  with running totals for the partition (``bytes_read`` is the planned input size).

Column statistics (the HMS union members of :class:`catalog.models.ColumnStatistics`), merged over
all output files of the partition:

* integers → ``long``, float/double → ``double``: ``lowValue``, ``highValue``, ``numNulls``,
  ``numDVs`` (NaN is ignored for the bounds);
* decimal → ``decimal`` with bounds ``{"unscaled": <base64 big-endian two's complement>,
  "scale": s}``; date → ``date`` with bounds ``{"daysSinceEpoch": n}``;
* string/char/varchar → ``string``: ``maxColLen`` / ``avgColLen`` (characters, over non-NULL
  values), ``numNulls``, ``numDVs``; binary → ``binary``: ``maxColLen``, ``avgColLen``,
  ``numNulls``;
* boolean → ``boolean``: ``numTrues``, ``numFalses``, ``numNulls``;
* timestamp and complex types get no statistics (the catalog's stats kinds have no member for them).

``numDVs`` is exact while a column's distinct values fit :data:`DISTINCT_CAP`; past it the
per-chunk distinct counts are summed (capped at the non-NULL count), an upper-bound estimate.
Bounds are omitted when a column has no non-NULL value.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from catalog.exceptions import CatalogError, InvalidInputError
from catalog.fs.namespace import Namespace
from catalog.models import Column, ColumnStatistics, Layout, Partition, SerDe, Table
from catalog.transform.definition import TransformDefinition
from catalog.transform.planner import PartitionPlan
from catalog.transform.source import arrow_schema, iter_source_tables
from catalog.udb.directory import PARQUET_INPUT, PARQUET_OUTPUT, PARQUET_SERDE

#: Distinct values kept per column for an exact ``numDVs``.
DISTINCT_CAP = 200_000

_COMPRESSION = {"snappy": "SNAPPY", "zstd": "ZSTD", "gzip": "GZIP", "lz4": "LZ4", "none": "NONE"}
_EPOCH = dt.date(1970, 1, 1)


class TransformCancelled(CatalogError):
    """The transformation was cancelled; its partial output has been removed."""

    http_status = 409


ProgressFn = Callable[[int, int, int, int], None]


# -- statistics -----------------------------------------------------------------------------------

def _stats_kind(arrow_type: pa.DataType) -> str | None:
    if pa.types.is_boolean(arrow_type):
        return "boolean"
    if pa.types.is_integer(arrow_type):
        return "long"
    if pa.types.is_floating(arrow_type):
        return "double"
    if pa.types.is_decimal(arrow_type):
        return "decimal"
    if pa.types.is_date(arrow_type):
        return "date"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "string"
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return "binary"
    return None


def _decimal_bound(value: Decimal, scale: int) -> dict[str, Any]:
    unscaled = int(value.scaleb(scale))
    length = max(1, (unscaled.bit_length() + 8) // 8)  # room for the sign bit
    raw = unscaled.to_bytes(length, "big", signed=True)
    return {"unscaled": base64.b64encode(raw).decode("ascii"), "scale": scale}


@dataclass
class _ColumnStats:
    """Running statistics of one column over the chunks seen so far."""

    column: Column
    kind: str
    arrow_type: pa.DataType
    rows: int = 0
    nulls: int = 0
    low: Any = None
    high: Any = None
    trues: int = 0
    len_sum: int = 0
    len_max: int = 0
    uniques: pa.Array | None = None
    dv_estimate: int = 0
    exact: bool = True

    def add(self, values: pa.ChunkedArray | pa.Array) -> None:
        n = len(values)
        if n == 0:
            return
        nulls = values.null_count
        self.rows += n
        self.nulls += nulls
        if nulls == n:
            return
        kind = self.kind
        if kind == "boolean":
            self.trues += int(pc.sum(values.cast(pa.int64())).as_py() or 0)
            return
        if kind in ("string", "binary"):
            lengths = pc.utf8_length(values) if kind == "string" else pc.binary_length(values)
            self.len_sum += int(pc.sum(lengths.cast(pa.int64())).as_py() or 0)
            self.len_max = max(self.len_max, int(pc.max(lengths).as_py() or 0))
        else:
            bounds = values
            if kind == "double":
                bounds = pc.filter(values, pc.invert(pc.is_nan(values)))
            mm = pc.min_max(bounds)
            lo, hi = mm["min"].as_py(), mm["max"].as_py()
            if lo is not None:
                self.low = lo if self.low is None else min(self.low, lo)
                self.high = hi if self.high is None else max(self.high, hi)
        if kind == "binary":
            return  # HMS keeps no distinct count for binary
        self._add_distinct(values)

    def _add_distinct(self, values: pa.ChunkedArray | pa.Array) -> None:
        if not self.exact:
            self.dv_estimate += int(pc.count_distinct(values).as_py())
            return
        chunk = pc.unique(values.drop_null())
        if isinstance(chunk, pa.ChunkedArray):
            chunk = chunk.combine_chunks()
        merged = chunk if self.uniques is None else pc.unique(
            pa.concat_arrays([self.uniques, chunk]))
        if len(merged) > DISTINCT_CAP:
            self.exact = False
            self.dv_estimate = len(merged)
            self.uniques = None
        else:
            self.uniques = merged

    def result(self) -> ColumnStatistics:
        non_null = self.rows - self.nulls
        data: dict[str, Any] = {"numNulls": self.nulls}
        if self.kind == "boolean":
            data.update(numTrues=self.trues, numFalses=non_null - self.trues)
        elif self.kind in ("string", "binary"):
            data.update(maxColLen=self.len_max,
                        avgColLen=(self.len_sum / non_null) if non_null else 0.0)
        if self.kind not in ("boolean", "binary"):
            if self.exact:
                dvs = len(self.uniques) if self.uniques is not None else 0
            else:
                dvs = min(self.dv_estimate, non_null)
            data["numDVs"] = dvs
        if self.low is not None and self.kind not in ("string", "binary", "boolean"):
            data["lowValue"], data["highValue"] = self._bound(self.low), self._bound(self.high)
        return ColumnStatistics(column=self.column.name, type=self.column.type, kind=self.kind,
                                data=data)

    def _bound(self, value: Any) -> Any:
        if self.kind == "long":
            return int(value)
        if self.kind == "double":
            return float(value)
        if self.kind == "date":
            return {"daysSinceEpoch": (value - _EPOCH).days}
        assert self.kind == "decimal"
        return _decimal_bound(value, self.arrow_type.scale)


class _PartitionStats:
    def __init__(self, columns: list[Column], schema: pa.Schema) -> None:
        self.columns: list[_ColumnStats] = []
        for c, f in zip(columns, schema):
            kind = _stats_kind(f.type)
            if kind is not None:
                self.columns.append(_ColumnStats(c, kind, f.type))

    def add(self, table: pa.Table) -> None:
        for s in self.columns:
            s.add(table.column(s.column.name))

    def result(self) -> list[ColumnStatistics]:
        return [s.result() for s in self.columns]


# -- writing --------------------------------------------------------------------------------------

def _rows_per_group(table: pa.Table, row_group_bytes: int) -> int:
    if table.num_rows == 0:
        return 1 << 20
    per_row = max(1.0, table.nbytes / table.num_rows)
    return max(1, int(row_group_bytes / per_row))


def _sort_keys(definition: TransformDefinition, columns: list[Column]) -> list[str]:
    by_lower = {c.name.lower(): c.name for c in columns}
    keys = []
    for name in definition.sort_by:
        if name.lower() not in by_lower:
            raise InvalidInputError(
                f"sort.by names column '{name}', which the table does not have "
                f"(columns: {', '.join(c.name for c in columns)})")
        keys.append(by_lower[name.lower()])
    return keys


def _sorted(table: pa.Table, keys: list[str]) -> pa.Table:
    if not keys or table.num_rows < 2:
        return table
    if int(pa.__version__.split(".")[0]) >= 25:  # null placement per key since pyarrow 25
        indices = pc.sort_indices(table, sort_keys=[(k, "ascending", "at_start") for k in keys])
    else:  # pragma: no cover - older pyarrow
        indices = pc.sort_indices(table, sort_keys=[(k, "ascending") for k in keys],
                                  null_placement="at_start")
    return table.take(indices)


class _FileWriter:
    """One Parquet output: buffers Arrow tables and writes whole row groups."""

    def __init__(self, sink: Any, schema: pa.Schema, definition: TransformDefinition,
                 stats: _PartitionStats) -> None:
        self.sink = sink
        self.definition = definition
        self.stats = stats
        self.writer = pq.ParquetWriter(sink, schema,
                                       compression=_COMPRESSION[definition.compression],
                                       use_deprecated_int96_timestamps=True)
        self.buffer: list[pa.Table] = []
        self.buffered_rows = 0
        self.rows_per_group: int | None = None
        self.rows = 0

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if self.rows_per_group is None:
            self.rows_per_group = _rows_per_group(table, self.definition.row_group_size)
        self.buffer.append(table)
        self.buffered_rows += table.num_rows
        if self.buffered_rows >= self.rows_per_group:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        if not self.buffer:
            return
        data = pa.concat_tables(self.buffer)
        self.buffer, self.buffered_rows = [], 0
        group = self.rows_per_group or max(1, data.num_rows)
        whole = data.num_rows if final else (data.num_rows // group) * group
        if whole:
            out = data.slice(0, whole)
            self.stats.add(out)
            self.writer.write_table(out, row_group_size=group)
            self.rows += whole
        if whole < data.num_rows:
            self.buffer, self.buffered_rows = [data.slice(whole)], data.num_rows - whole

    def close(self) -> int:
        """Finish the file; the number of bytes written."""
        self._flush(final=True)
        self.writer.close()
        size = int(self.sink.tell()) if hasattr(self.sink, "tell") else -1
        return size


def _group_tables(files: list[str], table: Table, partition: Partition | None,
                  fs: Namespace) -> Iterator[pa.Table]:
    sd = partition.sd if partition is not None else table.sd
    return iter_source_tables(files, sd, table.sd.columns, table.parameters, fs)


def _cast(t: pa.Table, schema: pa.Schema) -> pa.Table:
    if t.schema.equals(schema):
        return t
    try:
        return t.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise InvalidInputError(f"cannot convert source data to the column types: {e}") from e


def _write_group(i: int, files: list[str], *, table: Table, partition: Partition | None,
                 definition: TransformDefinition, fs: Namespace, output_dir: str,
                 schema: pa.Schema, sort_keys: list[str], stats: _PartitionStats
                 ) -> tuple[int, int]:
    """Write output file ``i``; ``(rows, bytes)`` written."""
    path = f"{output_dir}/part-{i}.parquet"
    sink = fs.open_output(path)
    try:
        writer = _FileWriter(sink, schema, definition, stats)
        try:
            tables = _group_tables(files, table, partition, fs)
            if sort_keys:
                parts = [_cast(t, schema) for t in tables]
                data = pa.concat_tables(parts) if parts else schema.empty_table()
                writer.add(_sorted(data, sort_keys))
            else:
                for t in tables:
                    writer.add(_cast(t, schema))
            size = writer.close()
        except BaseException:
            try:
                writer.writer.close()
            except Exception:  # noqa: BLE001 - the original error matters
                pass
            raise
    finally:
        sink.close()
    if size < 0:
        size = fs.stat(path).size
    return writer.rows, size


def execute_partition(plan: PartitionPlan, *, table: Table, partition: Partition | None,
                      definition: TransformDefinition, fs: Namespace, output_dir: str,
                      version: int, source_fingerprint: str | None,
                      progress: ProgressFn | None = None,
                      cancelled: Callable[[], bool] | None = None) -> Layout:
    """Write ``plan``'s output files below ``output_dir`` and return the new :class:`Layout`
    (see the module docstring). Raises :class:`TransformCancelled` when ``cancelled()`` turns
    true, :class:`InvalidInputError` for unreadable input or a bad ``sort.by``; on every error the
    whole ``output_dir`` is deleted first."""
    output_dir = output_dir.rstrip("/")
    columns = table.sd.columns
    if not columns:
        raise InvalidInputError(f"table '{table.db_name}.{table.name}' has no columns")
    sort_keys = _sort_keys(definition, columns)
    schema = arrow_schema(columns)
    stats = _PartitionStats(columns, schema)
    location = fs.resolve(output_dir)[1]
    bytes_read = rows_written = bytes_written = 0
    try:
        fs.mkdirs(output_dir)
        for i, files in enumerate(plan.output_files):
            if cancelled is not None and cancelled():
                raise TransformCancelled(
                    f"transformation of partition '{plan.name or '(unpartitioned)'}' of "
                    f"{table.db_name}.{table.name} was cancelled")
            rows, size = _write_group(i, files, table=table, partition=partition,
                                      definition=definition, fs=fs, output_dir=output_dir,
                                      schema=schema, sort_keys=sort_keys, stats=stats)
            bytes_read += plan.estimated_bytes[i] if i < len(plan.estimated_bytes) else 0
            rows_written += rows
            bytes_written += size
            if progress is not None:
                progress(bytes_read, rows_written, bytes_written, rows_written)
    except BaseException:
        try:
            fs.delete(output_dir, recursive=True)
        except Exception:  # noqa: BLE001 - keep the original error
            pass
        raise
    return Layout(
        partition=plan.name, version=version, location=location,
        input_format=PARQUET_INPUT, output_format=PARQUET_OUTPUT,
        serde=SerDe(serialization_lib=PARQUET_SERDE, parameters={"serialization.format": "1"}),
        parameters={"numRows": str(rows_written), "totalSize": str(bytes_written),
                    "numFiles": str(len(plan.output_files))},
        column_stats=stats.result(), source_fingerprint=source_fingerprint)


__all__ = ["DISTINCT_CAP", "TransformCancelled", "execute_partition"]
