"""The embedded transformation executor: one :class:`PartitionPlan` made into Parquet files.

:func:`execute_partition` reads each output group's input files with the Hive-semantics source
reader (:func:`catalog.transform.source.iter_source_batches`, many files per batch), optionally
sorts them (``sort.by``, ascending, NULLs first as Hive's ``ASC``, stable), and writes
``part-<i>.parquet`` below ``output_dir`` through the :class:`Namespace`. All data work is
columnar (pyarrow / DuckDB); no row is handled in Python. Reading and writing overlap: statistics
and Parquet encoding of a batch run on a writer thread while the next batch is read.

Rules:

* Output file ``i`` is ``{output_dir}/part-{i}.parquet``, written under its final name (the
  namespace has no rename yet). On any failure, and on cancellation (``cancelled()`` is checked
  before each output file; :class:`TransformCancelled` is raised), the whole ``output_dir`` is
  deleted recursively before the error propagates — a half-written layout never remains.
* Parquet: compression from ``file.parquet.compression`` (``none`` writes uncompressed; note that
  pyarrow's ``lz4`` is Parquet's ``LZ4_RAW``); rows per row group estimated as
  ``row.group.size / (nbytes / num_rows)`` of the Arrow data (at least 1); timestamps are written
  as INT96 (what Hive < 4 reads); everything else with the Arrow type of the Hive column type.
* Memory: ``memory_limit_bytes`` (None: unbounded) bounds what a partition holds. Without
  ``sort.by`` an output file is streamed: batches are buffered until a row group is full, and a
  row group is at most a quarter of the limit (``row.group.size`` is lowered to it); the reader's
  DuckDB gets a quarter and a batch of text a sixteenth. With ``sort.by`` the output group's rows
  go into an on-disk DuckDB table in a temporary directory and come back sorted by DuckDB (half
  the limit, one thread, spilling past it), in row-group-sized batches.
* An empty plan (no output groups) writes no file: the directory is created with ``fs.mkdirs`` and
  engines read an empty directory as no rows; the layout says ``numRows=0``, ``numFiles=0``.
* ``progress(bytes_read, rows_read, bytes_written, rows_written)`` is called with running totals
  for the partition as text is read and batches are parsed (bytes of text taken in, capped per
  output file at its planned input size) and after each output file (``bytes_read`` is then the
  planned input size of the files done; ``bytes_written`` / ``rows_written`` grow per file).

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

``numDVs`` counts NULL as one value when the column has NULLs, as Hive does (Trino's reader
subtracts one in that case, so ``SHOW STATS`` shows the non-NULL count). It is exact while a
column's distinct values fit :data:`DISTINCT_CAP`; past it the per-chunk distinct counts are
summed (capped at the non-NULL count), an upper-bound estimate.
Bounds are omitted when a column has no non-NULL value.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from catalog.exceptions import CatalogError, InvalidInputError
from catalog.fs.namespace import Namespace
from catalog.models import Column, ColumnStatistics, Layout, Partition, SerDe, Table
from catalog.transform.definition import TransformDefinition
from catalog.transform.planner import PartitionPlan
from catalog.transform.source import arrow_schema, configure_duckdb, iter_source_batches
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
            # Hive counts NULL as one more distinct value (Trino's reader subtracts it again).
            data["numDVs"] = min(self.rows, dvs + (1 if self.nulls else 0))
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


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sorted_stream(tables: Iterator[pa.Table], keys: list[str], schema: pa.Schema,
                   memory_limit_bytes: int | None, batch_rows: int) -> Iterator[pa.Table]:
    """``tables`` sorted by ``keys`` (ascending, NULLs first, stable), through DuckDB: the rows
    go into a DuckDB table that spills to a temporary directory past its memory limit (half of
    ``memory_limit_bytes``: the reader is done by then), and come back in ``batch_rows``
    batches."""
    tmpdir = tempfile.mkdtemp(prefix="strata-sort-")
    con = duckdb.connect(os.path.join(tmpdir, "sort.duckdb"))  # on disk: evictable past the limit
    try:
        configure_duckdb(con, None if memory_limit_bytes is None else memory_limit_bytes // 2,
                         1, tmpdir)  # one thread: per-thread sort state would not spill
        con.execute("SET preserve_insertion_order=false")  # __strata_rn keeps the sort stable
        cols = ", ".join(_quoted(f.name) for f in schema)
        created = False
        offset = 0
        for t in tables:
            if t.num_rows == 0:
                continue
            con.register("strata_part", t)
            try:
                if not created:
                    con.execute(f"CREATE TABLE strata_sort AS SELECT {cols}, "
                                f"CAST(row_number() OVER () + {offset} AS BIGINT) AS __strata_rn "
                                f"FROM strata_part")
                    created = True
                else:
                    con.execute(f"INSERT INTO strata_sort SELECT {cols}, "
                                f"row_number() OVER () + {offset} FROM strata_part")
            finally:
                con.unregister("strata_part")
            offset += t.num_rows
            del t
        if not created:
            return
        con.execute("CHECKPOINT")  # the rows to disk, so the sort has the memory
        order = ", ".join(f"{_quoted(k)} ASC NULLS FIRST" for k in keys)
        reader = con.execute(f"SELECT {cols} FROM strata_sort ORDER BY {order}, __strata_rn"
                             ).to_arrow_reader(batch_rows)
        for batch in reader:
            yield _cast(pa.Table.from_batches([batch]), schema)
    finally:
        con.close()
        shutil.rmtree(tmpdir, ignore_errors=True)


class _FileWriter:
    """One Parquet output: buffers Arrow tables and writes whole row groups."""

    def __init__(self, sink: Any, schema: pa.Schema, definition: TransformDefinition,
                 stats: _PartitionStats, row_group_bytes: int) -> None:
        self.sink = sink
        self.definition = definition
        self.row_group_bytes = row_group_bytes
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
            self.rows_per_group = _rows_per_group(table, self.row_group_bytes)
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


def _cast(t: pa.Table, schema: pa.Schema) -> pa.Table:
    if t.schema.equals(schema):
        return t
    try:
        return t.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise InvalidInputError(f"cannot convert source data to the column types: {e}") from e


def _write_group(i: int, files: list[str], *, table: Table, partition: Partition | None,
                 definition: TransformDefinition, fs: Namespace, output_dir: str,
                 schema: pa.Schema, sort_keys: list[str], stats: _PartitionStats,
                 memory_limit_bytes: int | None = None,
                 pool: ThreadPoolExecutor | None = None,
                 on_progress: Callable[[int, int], None] | None = None) -> tuple[int, int]:
    """Write output file ``i``; ``(rows, bytes)`` written. Reading (DuckDB) and writing
    (statistics, Parquet encoding) overlap: each table is written on ``pool``'s single thread
    (one of its own when None) while the next one is read, so at most one table waits."""
    if pool is None:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="strata-write") as own:
            return _write_group(i, files, table=table, partition=partition,
                                definition=definition, fs=fs, output_dir=output_dir,
                                schema=schema, sort_keys=sort_keys, stats=stats,
                                memory_limit_bytes=memory_limit_bytes, pool=own,
                                on_progress=on_progress)
    row_group_bytes = definition.row_group_size
    if memory_limit_bytes is not None:
        row_group_bytes = max(1 << 20, min(row_group_bytes, memory_limit_bytes // 4))
    path = f"{output_dir}/part-{i}.parquet"
    sd = partition.sd if partition is not None else table.sd
    sink = fs.open_output(path)
    try:
        writer = _FileWriter(sink, schema, definition, stats, row_group_bytes)
        try:
            on_bytes = None if on_progress is None else (lambda n: on_progress(0, n))
            tables: Iterator[pa.Table] = (_cast(t, schema) for t in iter_source_batches(
                files, sd, table.sd.columns, table.parameters, fs,
                memory_limit_bytes=memory_limit_bytes, on_bytes=on_bytes))
            if sort_keys:
                batch_rows = max(1024, int(row_group_bytes / max(1, 64 * len(schema))))
                tables = _sorted_stream(tables, sort_keys, schema, memory_limit_bytes,
                                        batch_rows)
            inflight: Future[None] | None = None
            try:
                for t in tables:
                    if inflight is not None:
                        inflight.result()
                    if on_progress is not None and not sort_keys:
                        on_progress(t.num_rows, 0)
                    inflight = pool.submit(writer.add, t)
                    del t
            finally:
                if inflight is not None:
                    inflight.result()
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
                      cancelled: Callable[[], bool] | None = None,
                      memory_limit_bytes: int | None = None) -> Layout:
    """Write ``plan``'s output files below ``output_dir`` and return the new :class:`Layout`
    (see the module docstring). ``memory_limit_bytes`` bounds the memory the data work holds
    (DuckDB's ``memory_limit``, batch and row-group buffers). Raises :class:`TransformCancelled`
    when ``cancelled()`` turns true, :class:`InvalidInputError` for unreadable input or a bad
    ``sort.by``; on every error the whole ``output_dir`` is deleted first."""
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
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="strata-write") as pool:
            for i, files in enumerate(plan.output_files):
                planned = plan.estimated_bytes[i] if i < len(plan.estimated_bytes) else 0
                group = [0, 0]  # rows and text bytes read of this output file so far

                def advance(rows: int, nbytes: int, planned: int = planned,
                            group: list[int] = group) -> None:
                    # Live progress within an output file: bytes capped at what was planned
                    # (decompressed text is larger), rows as read.
                    group[0] += rows
                    group[1] = min(planned, group[1] + nbytes)
                    if progress is not None:
                        progress(bytes_read + group[1], rows_written + group[0],
                                 bytes_written, rows_written)

                if cancelled is not None and cancelled():
                    raise TransformCancelled(
                        f"transformation of partition '{plan.name or '(unpartitioned)'}' of "
                        f"{table.db_name}.{table.name} was cancelled")
                rows, size = _write_group(i, files, table=table, partition=partition,
                                          definition=definition, fs=fs, output_dir=output_dir,
                                          schema=schema, sort_keys=sort_keys, stats=stats,
                                          memory_limit_bytes=memory_limit_bytes, pool=pool,
                                          on_progress=advance if progress is not None else None)
                bytes_read += planned
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
