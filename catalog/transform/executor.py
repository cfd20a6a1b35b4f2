"""The embedded transformation executor: one :class:`PartitionPlan` made into Parquet files.

:func:`execute_partition` reads each output group's input files with the Hive-semantics source
reader (:func:`catalog.transform.source.iter_source_groups`, many files per batch), optionally
sorts them (``sort.by``, ascending, NULLs first as Hive's ``ASC``, stable), and writes
``part-<i>.parquet`` below ``output_dir`` through the :class:`Namespace`. All data work is
columnar (pyarrow / DuckDB); no row is handled in Python. Reading and writing overlap: the
source is read on a thread of its own (its DuckDB on all CPUs but one), one table ahead and on
into the next output group while the calling thread computes statistics and encodes Parquet;
progress is still reported on the calling thread.

Rules:

* Output file ``i`` is ``{output_dir}/part-{i}.parquet``, written under its final name (the
  namespace has no rename yet). On any failure, and on cancellation (``cancelled()`` is checked
  before each output file; :class:`TransformCancelled` is raised), the whole ``output_dir`` is
  deleted recursively before the error propagates — a half-written layout never remains.
* Parquet: compression from ``file.parquet.compression`` (``none`` writes uncompressed; note that
  pyarrow's ``lz4`` is Parquet's ``LZ4_RAW``); rows per row group estimated as
  ``row.group.size / (nbytes / num_rows)`` of the Arrow data (at least 1); timestamps are written
  as INT96 (what Hive < 4 reads); everything else with the Arrow type of the Hive column type
  (decimals as FIXED_LEN_BYTE_ARRAY). A column is dictionary-encoded unless the file's first row
  groups have more distinct values than :data:`DICTIONARY_MAX_RATIO` of their non-NULL values
  (there a dictionary costs several times plain encoding's CPU and makes the file larger; the
  encoding is invisible to readers).
* Memory: ``memory_limit_bytes`` (None: unbounded) bounds what a partition holds. Without
  ``sort.by`` an output file is streamed: batches are buffered until a row group is full, and a
  row group is at most a quarter of the limit (``row.group.size`` is lowered to it); the reader's
  DuckDB gets a quarter and a batch of text a thirty-second (one batch is typed while the next
  is read, one table waits for the writer). With ``sort.by`` the output group's rows
  go into an on-disk DuckDB table in a temporary directory and come back sorted by DuckDB (half
  the limit, one thread, spilling past it), in row-group-sized batches.
* Unparseable text values (``unparseable``; see
  :func:`catalog.transform.source.iter_source_groups` for which values and the line numbering):
  ``null`` reads them as NULL, as Hive does; ``fail`` fails the partition with the
  :class:`InvalidInputError` of the first one (file, line, column, raw value); ``side-file``
  serves them as NULL too (the layout is the one ``null`` writes) and writes each value also to
  ``{unparseable_dir(output_dir)}/part-{i}.parquet`` (the output directory's sibling
  ``_unparseable-<name>``: outside what engines read, hidden by its ``_``; only for output
  files with such values), through the same namespace, one row per value: ``source_file``,
  ``line``, ``column``, ``column_type``, ``value`` (the raw field) and ``raw_line``, in file,
  line and column order; its footer's ``strata.unparseable.rows`` is the number of source rows
  (:func:`unparseable_rows` sums them). The side directory is deleted with the output on
  failure, and first when it exists (an earlier attempt's).
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
column's distinct values fit :data:`DISTINCT_CAP`; past it the per-chunk (row groups written at
once) distinct counts are summed (capped at the non-NULL count), an upper-bound estimate.
Decimals of precision <= 18 are counted by their unscaled integers (the same count, cheaper
hashing); the chunks' distinct values are merged only when their sum could pass the cap (or at
the end), with the same result as merging each as it comes.
Bounds are omitted when a column has no non-NULL value.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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
from catalog.transform.source import (
    UNPARSEABLE_SCHEMA,
    arrow_schema,
    configure_duckdb,
    iter_source_groups,
)
from catalog.udb.directory import PARQUET_INPUT, PARQUET_OUTPUT, PARQUET_SERDE

#: Distinct values kept per column for an exact ``numDVs``.
DISTINCT_CAP = 200_000
#: Distinct values of chunks kept unmerged per column at least (merging waits until the pending
#: chunks hold as many values as the merged ones, or could pass :data:`DISTINCT_CAP`).
PENDING_MIN = 1 << 16
#: Seconds between two progress events of the reading thread.
PROGRESS_EVERY_S = 0.05
#: A column is dictionary-encoded in a file unless its first row groups have more distinct
#: values than this fraction of their non-NULL values.
DICTIONARY_MAX_RATIO = 0.125
#: Name prefix of a layout's side-file directory (``unparseable=side-file``), next to it.
UNPARSEABLE_PREFIX = "_unparseable-"
#: Side rows buffered before a row group of the side file is written.
SIDE_FLUSH_BYTES = 8 << 20
_ROWS_KEY = b"strata.unparseable.rows"

_COMPRESSION = {"snappy": "SNAPPY", "zstd": "ZSTD", "gzip": "GZIP", "lz4": "LZ4", "none": "NONE"}
_EPOCH = dt.date(1970, 1, 1)


class TransformCancelled(CatalogError):
    """The transformation was cancelled; its partial output has been removed."""

    http_status = 409


ProgressFn = Callable[[int, int, int, int], None]
#: A :class:`_ReadAhead`'s source: ``read(groups, on_bytes(group, n), on_side(group, side
#: rows, row count))``, the ``(group, table)`` batches in order.
_ReadFn = Callable[[list[list[str]], Callable[[int, int], None],
                    Callable[[int, pa.Table, int], None]], Iterator[tuple[int, pa.Table]]]


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


def _distinct_keys(values: pa.ChunkedArray | pa.Array,
                   arrow_type: pa.DataType) -> pa.ChunkedArray | pa.Array:
    """``values`` as keys with the same distinct values and NULLs, cheaper to hash: a decimal of
    precision <= 18 as its unscaled integer (int32 up to precision 9; distinct decimals of one
    scale are distinct unscaled integers), anything else as it is."""
    if not pa.types.is_decimal128(arrow_type) or arrow_type.precision > 18:
        return values
    unscaled = pa.decimal128(arrow_type.precision, 0)
    target = pa.int32() if arrow_type.precision <= 9 else pa.int64()
    if isinstance(values, pa.ChunkedArray):
        return pa.chunked_array([pc.cast(c.view(unscaled), target, safe=False)
                                 for c in values.chunks],
                                target)
    return pc.cast(values.view(unscaled), target, safe=False)


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
    #: While ``exact``: the distinct non-NULL values of the chunks merged so far (for
    #: decimals of precision <= 18 their unscaled integers, see :func:`_distinct_keys`) ...
    uniques: pa.Array | None = None
    #: ... and those of each later chunk, merged when the cap could be passed (or at the end).
    pending: list[pa.Array] = field(default_factory=list)
    dv_estimate: int = 0
    exact: bool = True

    def add(self, values: pa.ChunkedArray | pa.Array) -> int | None:
        """Take in one chunk; the chunk's distinct non-NULL count (None for boolean and binary,
        which keep none)."""
        n = len(values)
        if n == 0:
            return 0
        nulls = values.null_count
        self.rows += n
        self.nulls += nulls
        if nulls == n:
            return 0
        kind = self.kind
        if kind == "boolean":
            self.trues += int(pc.sum(values.cast(pa.int64())).as_py() or 0)
            return None
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
            return None  # HMS keeps no distinct count for binary
        return self._add_distinct(_distinct_keys(values, self.arrow_type))

    def _add_distinct(self, values: pa.ChunkedArray | pa.Array) -> int:
        if not self.exact:
            count = int(pc.count_distinct(values).as_py())
            self.dv_estimate += count
            return count
        chunk = pc.unique(values)
        if isinstance(chunk, pa.ChunkedArray):
            chunk = chunk.combine_chunks()
        if chunk.null_count:
            chunk = chunk.drop_null()
        self.pending.append(chunk)
        pending = sum(len(c) for c in self.pending)
        merged = len(self.uniques) if self.uniques is not None else 0
        if merged + pending > DISTINCT_CAP or pending > max(merged, PENDING_MIN):
            self._settle()  # past the cap, or the pending chunks (repeats) outgrew the merged
        return len(chunk)

    def _settle(self) -> None:
        """Merge the pending chunks, with the result of merging each as it came: the union
        of the chunks so far while it fits :data:`DISTINCT_CAP`; at the first chunk past it,
        the union's size becomes the estimate and each later chunk adds its own distinct
        count. Chunks are merged together when even their sum fits the cap."""
        pending, self.pending = self.pending, []
        for k, chunk in enumerate(pending):
            if not self.exact:
                self.dv_estimate += len(chunk)  # a chunk's count_distinct
                continue
            have = len(self.uniques) if self.uniques is not None else 0
            rest = pending[k:]
            if have + sum(len(c) for c in rest) <= DISTINCT_CAP:  # no union can pass the cap
                parts = ([self.uniques] if self.uniques is not None else []) + rest
                self.uniques = parts[0] if len(parts) == 1 else pc.unique(
                    pa.concat_arrays(parts))
                return
            merged = chunk if self.uniques is None else pc.unique(
                pa.concat_arrays([self.uniques, chunk]))
            if len(merged) > DISTINCT_CAP:
                self.exact = False
                self.dv_estimate = len(merged)
                self.uniques = None
            else:
                self.uniques = merged

    def distinct_values(self) -> pa.Array | None:
        """The distinct non-NULL values (as :func:`_distinct_keys`) while exact, else None."""
        if self.pending:
            self._settle()
        return self.uniques if self.exact else None

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
                values = self.distinct_values()
                dvs = len(values) if values is not None else 0
            if not self.exact:
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

    def add(self, table: pa.Table) -> dict[str, int]:
        """Take in a table; the distinct non-NULL count of each of its columns that keeps one."""
        counts = {}
        for s in self.columns:
            dvs = s.add(table.column(s.column.name))
            if dvs is not None:
                counts[s.column.name] = dvs
        return counts

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


def _leaves(t: pa.DataType) -> int:
    if pa.types.is_struct(t):
        return sum(_leaves(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_map(t):
        return _leaves(t.key_type) + _leaves(t.item_type)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _leaves(t.value_type)
    return 1


def _leaf_paths(schema: pa.Schema) -> list[list[str]]:
    """Each column's Parquet leaf column paths (``a.list.element`` for a list of ``a``)."""
    sink = pa.BufferOutputStream()
    pq.ParquetWriter(sink, schema, use_deprecated_int96_timestamps=True).close()
    pschema = pq.read_metadata(pa.BufferReader(sink.getvalue())).schema
    paths, i = [], 0
    for f in schema:
        n = _leaves(f.type)
        paths.append([pschema.column(j).path for j in range(i, i + n)])
        i += n
    return paths


def _dictionary_columns(schema: pa.Schema, table: pa.Table,
                        distinct: dict[str, int]) -> list[str]:
    """The leaf columns to dictionary-encode, judged on a file's first row groups ``table``:
    all but those whose distinct count is known and above :data:`DICTIONARY_MAX_RATIO` of their
    non-NULL values (a dictionary there costs several times plain encoding's CPU and makes
    the file larger; the encoding is invisible to readers)."""
    out = []
    for f, paths in zip(schema, _leaf_paths(schema)):
        dvs = distinct.get(f.name)
        if dvs is not None:
            col = table.column(f.name)
            if dvs > DICTIONARY_MAX_RATIO * (len(col) - col.null_count):
                continue
        out.extend(paths)
    return out


class _FileWriter:
    """One Parquet output: buffers Arrow tables and writes whole row groups. The Parquet writer
    is opened with the first row groups, which choose the dictionary-encoded columns."""

    def __init__(self, sink: Any, schema: pa.Schema, definition: TransformDefinition,
                 stats: _PartitionStats, row_group_bytes: int) -> None:
        self.sink = sink
        self.schema = schema
        self.definition = definition
        self.row_group_bytes = row_group_bytes
        self.stats = stats
        self.writer: pq.ParquetWriter | None = None
        self.buffer: list[pa.Table] = []
        self.buffered_rows = 0
        self.rows_per_group: int | None = None
        self.rows = 0

    def _open(self, use_dictionary: bool | list[str]) -> pq.ParquetWriter:
        self.writer = pq.ParquetWriter(self.sink, self.schema,
                                       compression=_COMPRESSION[self.definition.compression],
                                       use_dictionary=use_dictionary,
                                       use_deprecated_int96_timestamps=True)
        return self.writer

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
            distinct = self.stats.add(out)
            writer = self.writer or self._open(_dictionary_columns(self.schema, out, distinct))
            writer.write_table(out, row_group_size=group)
            self.rows += whole
        if whole < data.num_rows:
            self.buffer, self.buffered_rows = [data.slice(whole)], data.num_rows - whole

    def close(self) -> int:
        """Finish the file; the number of bytes written."""
        self._flush(final=True)
        (self.writer or self._open(True)).close()
        size = int(self.sink.tell()) if hasattr(self.sink, "tell") else -1
        return size

    def abort(self) -> None:
        """Close the Parquet writer after a failure (the file is deleted by the caller)."""
        if self.writer is not None:
            self.writer.close()


# -- unparseable values (``unparseable=side-file``) ------------------------------------------------

def unparseable_dir(output_dir: str) -> str:
    """Where the side files of the layout written to ``output_dir`` go: its sibling
    ``_unparseable-<name>`` (outside the served directory; hidden by its ``_``)."""
    parent, _, name = output_dir.rstrip("/").rpartition("/")
    return f"{parent}/{UNPARSEABLE_PREFIX}{name}"


def remove_tree(fs: Namespace, path: str) -> None:
    """Delete the directory ``path`` of ``fs`` and everything below it, if it is there."""
    mount, uri = fs.resolve(path)
    if fs.ufs(mount).exists(uri):
        fs.delete(path, recursive=True)


def unparseable_rows(fs: Namespace, output_dir: str) -> int:
    """The number of source rows in the side files of the layout written to ``output_dir``
    (from their footers; 0 when there are none)."""
    side = unparseable_dir(output_dir)
    mount, uri = fs.resolve(side)
    ufs = fs.ufs(mount)
    entries = ufs.list(uri)
    total = 0
    for e in entries or []:
        if e.is_dir or not e.name.endswith(".parquet"):
            continue
        with ufs.open_input(e.uri) as f:
            meta = pq.read_metadata(f).metadata or {}
        total += int(meta.get(_ROWS_KEY, b"0"))
    return total


class _SideWriter:
    """One output file's side file of unparseable values (:data:`UNPARSEABLE_SCHEMA`), opened
    with its first rows (no rows, no file), buffered up to :data:`SIDE_FLUSH_BYTES` per row
    group; its footer keeps the number of source rows (``strata.unparseable.rows``)."""

    def __init__(self, fs: Namespace, path: str) -> None:
        self.fs = fs
        self.path = path
        self.sink: Any = None
        self.writer: pq.ParquetWriter | None = None
        self.buffer: list[pa.Table] = []
        self.buffered = 0
        self.rows = 0

    def add(self, side: pa.Table, rows: int) -> None:
        self.rows += rows
        self.buffer.append(side)
        self.buffered += side.nbytes
        if self.buffered >= SIDE_FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self.buffer:
            return
        if self.writer is None:
            self.sink = self.fs.open_output(self.path)
            self.writer = pq.ParquetWriter(self.sink, UNPARSEABLE_SCHEMA, compression="ZSTD")
        self.writer.write_table(pa.concat_tables(self.buffer))
        self.buffer, self.buffered = [], 0

    def close(self) -> None:
        self._flush()
        if self.writer is None:
            return
        self.writer.add_key_value_metadata({_ROWS_KEY.decode(): str(self.rows)})
        self.writer.close()
        self.sink.close()

    def abort(self) -> None:
        self.buffer = []
        if self.writer is not None:
            try:
                self.writer.close()
            finally:
                self.sink.abort()


def _cast(t: pa.Table, schema: pa.Schema) -> pa.Table:
    if t.schema.equals(schema):
        return t
    try:
        return t.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise InvalidInputError(f"cannot convert source data to the column types: {e}") from e


class _Stopped(Exception):
    """The read-ahead was closed while its thread was reading."""


class _ReadAhead:
    """The source batches of output groups, read in order on a thread of its own (the reader's
    DuckDB query runs while the calling thread computes statistics and encodes Parquet), at
    most ``depth`` tables ahead of their consumer; reading goes on into the next group while
    the previous one's file is finished. Progress events (bytes of text taken in) and a
    batch's unparseable side rows (before its table) reach the consumer in order, on its
    thread. :meth:`close` stops the thread and waits for it."""

    def __init__(self, groups: list[list[str]], read: _ReadFn, depth: int = 1) -> None:
        self.groups = groups
        self.read = read
        self.depth = depth
        self.cond = threading.Condition()
        self.items: deque[tuple[str, int, Any]] = deque()
        self.tables = 0
        self.stopped = False
        self.next_group = 0
        self.thread = threading.Thread(target=self._run, name="strata-read", daemon=True)
        self.thread.start()

    def _put(self, item: tuple[str, int, Any]) -> None:
        with self.cond:
            if item[0] == "table":
                while self.tables >= self.depth and not self.stopped:
                    self.cond.wait()
                self.tables += 1
            if self.stopped:
                raise _Stopped
            self.items.append(item)
            self.cond.notify_all()

    def _run(self) -> None:
        try:
            held = [0] * len(self.groups)  # bytes taken in and not yet told, per group
            current = [0]  # the group being consumed
            told_at = [time.monotonic()]

            def tell(group: int) -> None:
                if held[group]:
                    self._put(("bytes", group, held[group]))
                    held[group] = 0
                told_at[0] = time.monotonic()

            def on_bytes(group: int, n: int) -> None:
                # The next group's bytes wait for its turn; the current one's are told at most
                # every PROGRESS_EVERY_S (a wake-up of the consumer each).
                held[group] += n
                if group == current[0] and time.monotonic() - told_at[0] >= PROGRESS_EVERY_S:
                    tell(group)

            def advance(to: int) -> None:
                while current[0] < to:  # the groups before ``to`` are complete
                    tell(current[0])
                    self._put(("end", current[0], None))
                    current[0] += 1
                if to < len(self.groups):
                    tell(to)

            def on_side(group: int, side: pa.Table, rows: int) -> None:
                advance(group)  # a batch of ``group``: the groups before it are complete
                self._put(("side", group, (side, rows)))

            for i, t in self.read(self.groups, on_bytes, on_side):
                advance(i)
                self._put(("table", i, t))
                del t
            advance(len(self.groups))
        except _Stopped:
            pass
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            with self.cond:
                self.items.append(("error", -1, e))
                self.cond.notify_all()

    def group(self, i: int) -> Iterator[tuple[str, Any]]:
        """Group ``i``'s events, ``("bytes", n)``, ``("side", (rows, count))`` and
        ``("table", t)``, until its end; the groups must be taken in order, each to its end."""
        assert i == self.next_group, "groups are read in order"
        while True:
            with self.cond:
                while not self.items:
                    self.cond.wait()
                kind, g, payload = self.items.popleft()
                if kind == "table":
                    self.tables -= 1
                    self.cond.notify_all()
            if kind == "error":
                raise payload
            assert g == i
            if kind == "end":
                self.next_group = i + 1
                return
            yield kind, payload
            del payload

    def close(self) -> None:
        with self.cond:
            self.stopped = True
            self.items.clear()
            self.cond.notify_all()
        self.thread.join()


def _source_reader(table: Table, partition: Partition | None, fs: Namespace,
                   memory_limit_bytes: int | None, unparseable: str = "null") -> _ReadFn:
    """The read function of a :class:`_ReadAhead`: the Hive-semantics source reader over all
    the groups, its DuckDB on all CPUs but one (the writing thread's)."""
    sd = partition.sd if partition is not None else table.sd
    threads = max(1, (os.cpu_count() or 1) - 1)

    def read(groups: list[list[str]], on_bytes: Callable[[int, int], None],
             on_side: Callable[[int, pa.Table, int], None]) -> Iterator[tuple[int, pa.Table]]:
        return iter_source_groups(groups, sd, table.sd.columns, table.parameters, fs,
                                  memory_limit_bytes=memory_limit_bytes, threads=threads,
                                  on_bytes=on_bytes, unparseable=unparseable,
                                  on_unparseable=on_side)
    return read


def _events_in_line(table: Table, partition: Partition | None, fs: Namespace,
                    memory_limit_bytes: int | None, files: list[str], unparseable: str = "null"
                    ) -> Iterator[tuple[str, Any]]:
    """:meth:`_ReadAhead.group`'s events of one group read on the calling thread, one batch at a
    time (for sorting: the sort's DuckDB has the memory)."""
    sd = partition.sd if partition is not None else table.sd
    told: list[tuple[str, Any]] = []
    for _, t in iter_source_groups(
            [files], sd, table.sd.columns, table.parameters, fs,
            memory_limit_bytes=memory_limit_bytes,
            on_bytes=lambda group, n: told.append(("bytes", n)), overlap=False,
            unparseable=unparseable,
            on_unparseable=lambda group, side, rows: told.append(("side", (side, rows)))):
        yield from told
        told.clear()
        yield "table", t
        del t
    yield from told


def _write_group(i: int, files: list[str], *, table: Table, partition: Partition | None,
                 definition: TransformDefinition, fs: Namespace, output_dir: str,
                 schema: pa.Schema, sort_keys: list[str], stats: _PartitionStats,
                 memory_limit_bytes: int | None = None,
                 read_ahead: tuple[_ReadAhead, int] | None = None,
                 on_progress: Callable[[int, int], None] | None = None) -> tuple[int, int]:
    """Write output file ``i`` from ``files`` (and its side file, ``unparseable=side-file``);
    ``(rows, bytes)`` written. The files are read ahead on a thread of their own
    (``read_ahead``: a read-ahead over several groups and the index of this one in it), while
    the calling thread computes statistics and encodes Parquet."""
    mode = definition.unparseable
    if read_ahead is None and not sort_keys:
        own = _ReadAhead([files], _source_reader(table, partition, fs, memory_limit_bytes,
                                                 mode))
        try:
            return _write_group(i, files, table=table, partition=partition,
                                definition=definition, fs=fs, output_dir=output_dir,
                                schema=schema, sort_keys=sort_keys, stats=stats,
                                memory_limit_bytes=memory_limit_bytes, read_ahead=(own, 0),
                                on_progress=on_progress)
        finally:
            own.close()
    events = (_events_in_line(table, partition, fs, memory_limit_bytes, files, mode)
              if read_ahead is None else read_ahead[0].group(read_ahead[1]))
    side = (_SideWriter(fs, f"{unparseable_dir(output_dir)}/part-{i}.parquet")
            if mode == "side-file" else None)
    row_group_bytes = definition.row_group_size
    if memory_limit_bytes is not None:
        row_group_bytes = max(1 << 20, min(row_group_bytes, memory_limit_bytes // 4))
    path = f"{output_dir}/part-{i}.parquet"
    sink = fs.open_output(path)
    try:
        writer = _FileWriter(sink, schema, definition, stats, row_group_bytes)
        try:
            def tables() -> Iterator[pa.Table]:
                for kind, payload in events:
                    if kind == "bytes":
                        if on_progress is not None:
                            on_progress(0, payload)
                        continue
                    if kind == "side":
                        if side is not None:
                            side.add(*payload)
                        continue
                    t = _cast(payload, schema)
                    del payload
                    if on_progress is not None and not sort_keys:
                        on_progress(t.num_rows, 0)
                    yield t

            batches: Iterator[pa.Table] = tables()
            if sort_keys:
                batch_rows = max(1024, int(row_group_bytes / max(1, 64 * len(schema))))
                batches = _sorted_stream(batches, sort_keys, schema, memory_limit_bytes,
                                         batch_rows)
            for t in batches:
                writer.add(t)
                del t
            size = writer.close()
            if side is not None:
                side.close()
        except BaseException:
            for w in (writer, side):
                try:
                    if w is not None:
                        w.abort()
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
    side_dir = unparseable_dir(output_dir) if definition.unparseable == "side-file" else None
    bytes_read = rows_written = bytes_written = 0
    try:
        if side_dir is not None:
            remove_tree(fs, side_dir)  # an earlier attempt's
        fs.mkdirs(output_dir)
        # Reading runs on into the next output group, except when sorting: the sort's DuckDB
        # then has the memory (half the limit) to itself.
        ahead = None if sort_keys else _ReadAhead(
            plan.output_files, _source_reader(table, partition, fs, memory_limit_bytes,
                                              definition.unparseable))
        try:
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
                                          memory_limit_bytes=memory_limit_bytes,
                                          read_ahead=None if ahead is None else (ahead, i),
                                          on_progress=advance if progress is not None else None)
                bytes_read += planned
                rows_written += rows
                bytes_written += size
                if progress is not None:
                    progress(bytes_read, rows_written, bytes_written, rows_written)
        finally:
            if ahead is not None:
                ahead.close()
    except BaseException:
        for d in (output_dir, side_dir):
            try:
                if d == output_dir:
                    fs.delete(d, recursive=True)
                elif d is not None:
                    remove_tree(fs, d)
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


__all__ = ["DISTINCT_CAP", "UNPARSEABLE_PREFIX", "TransformCancelled", "execute_partition",
           "unparseable_dir", "unparseable_rows"]
