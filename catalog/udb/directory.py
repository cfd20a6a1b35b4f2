"""UDB ``directory``: a folder of data files served as a database, for users with no metastore.

Layout rules (the embedded default connector)::

    <uri>/<source_db>/<table>/[k1=v1/[k2=v2/...]]<data files>

* **URI**: ``file:///abs/path``, a plain absolute path, ``s3://bucket/prefix`` (credentials from
  the mount that serves it, if any) or a namespace path ``strata:///mount/path``; all I/O goes
  through :mod:`catalog.fs` (tables are served at the under-storage URIs).
* **source_db**: the name of a sub-folder of the URI (the database folder). When it is ``"."`` or
  the URI's own last folder name, the URI folder itself is the database folder (so
  ``attach directory /data/sales sales`` serves ``/data/sales``; a database folder really named
  like its parent is reached as ``/data/sales/sales`` + ``sales``). A missing folder raises
  ``NoSuchDatabaseError`` naming the path.
* **tables**: one sub-folder each; names are lower-cased (as Hive does), entries starting with
  ``.``/``_`` are hidden (as Hive/Spark/Trino skip them), loose files in the database folder are
  ignored, folder names that are not identifiers (letters, digits, ``_``, ``-``) are skipped. A
  folder with no data files at all (empty, or only empty partition folders) is **not** a table
  yet: it is skipped (noted in :attr:`DirectoryUdb.problems`) until data appears, since a Hive
  table needs columns.
* **partitions**: Hive-style ``key=value`` folders, possibly nested; keys in folder order
  (lower-cased), values unescaped with Hive's rules (``__HIVE_DEFAULT_PARTITION__`` kept). Every
  data file must sit exactly under the same key sequence; a table mixing layouts (files at the
  top and in partitions, different keys, files in non-``key=value`` sub-folders) is skipped and
  reported. Empty leaf folders with the full key sequence are (empty) partitions. Key types:
  ``int``/``bigint`` when every value is an integer, ``date`` when every value is an ISO date,
  else ``string`` (default-partition values do not vote). A Parquet column named like a
  partition key is dropped (the folder value wins, as in Hive/Spark); a CSV one, positional, is
  kept as ``<name>_data``.
* **format**: by extension (``.parquet``/``.parq``; ``.csv``/``.tsv``/``.txt`` optionally
  ``.gz``/``.bz2``/``.zst``); extension-less files (Hive's ``000000_0``) are Parquet when a sample
  carries the ``PAR1`` magic. Option ``format`` forces one. Mixed formats skip the table.
* **schema**: Parquet from the footers of up to :data:`_SAMPLE_FILES` files spread over the table
  (unified, numeric widening allowed); CSV from DuckDB's sniffer over the first
  :data:`_CSV_SAMPLE_BYTES` of one file. Inferred once per table, never per partition.
* **CSV serde rule**: when the sniffer found a quote character *and* it occurs in the sampled data
  rows, the table uses ``OpenCSVSerde`` (separatorChar/quoteChar[/escapeChar]) and every column is
  ``string`` (the only type that serde reads); otherwise ``LazySimpleSerDe`` with typed columns,
  ``field.delim``/``serialization.format`` = delimiter and ``serialization.null.format`` = ``''``
  (empty fields are NULL, as the writers of such files mean). Option ``csv.quoted`` forces the
  choice. Header files get table parameter ``skip.header.line.count=1``.
* **types** (Arrow -> Hive): int8/16/32/64 -> tinyint/smallint/int/bigint, uint8/16/32 ->
  smallint/int/bigint, uint64 -> decimal(20,0), float16/32 -> float, float64 -> double,
  decimal(p<=38,s) -> decimal(p,s), string -> string, binary -> binary, date -> date, timestamp
  (any unit/zone) -> timestamp, list -> array<>, map -> map<>, struct -> struct<>. Parquet columns
  without a Hive type (time, duration, null, decimal(p>38), odd struct field names) are left out
  and reported; in CSV they read as ``string``.

Options: ``format`` (csv|parquet: force the format of every file), ``csv.delimiter`` (one
character, ``\\t``/``tab`` for tabs; default sniffed), ``csv.header`` (true|false, default true;
without header columns are ``c0``, ``c1``, ...), ``csv.quoted`` (auto|true|false: the serde rule).

Tables are ``EXTERNAL_TABLE`` with ``EXTERNAL=TRUE``; ``numFiles``/``totalSize`` sit on
unpartitioned tables and on each partition. Locations are URIs without trailing slash
(``file:///...`` locally), written raw as Hive does (a folder ``k=a%2Fb`` stays so).
One recursive listing per table serves the table, its partitions and their data fingerprints.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from catalog.exceptions import (
    InvalidInputError,
    InvalidOptionError,
    NoSuchDatabaseError,
    NoSuchPathError,
    UdbError,
)
from catalog.fs.fingerprint import digest_entries
from catalog.fs.namespace import Namespace
from catalog.fs.ufs import FileStatus, UnderFileSystem
from catalog.models import (
    EXTERNAL_TABLE,
    Column,
    Database,
    Partition,
    SerDe,
    StorageDescriptor,
    Table,
    partition_name,
    unescape_partition_value,
)
from catalog.udb.base import UnderDatabase

if TYPE_CHECKING:
    import duckdb

    from catalog.config import Settings

log = logging.getLogger(__name__)

#: Builds the error that skips one table, from a reason.
_Fail = Callable[[str], UdbError]

PARQUET_INPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
PARQUET_OUTPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"
PARQUET_SERDE = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
TEXT_INPUT = "org.apache.hadoop.mapred.TextInputFormat"
TEXT_OUTPUT = "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat"
LAZY_SIMPLE_SERDE = "org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe"
OPEN_CSV_SERDE = "org.apache.hadoop.hive.serde2.OpenCSVSerde"

#: Parquet files whose footers are read (spread over the table) to infer its schema.
_SAMPLE_FILES = 5
#: Bytes of one CSV file (decompressed) given to DuckDB's sniffer.
_CSV_SAMPLE_BYTES = 1 << 20

_TABLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
_FIELD_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_COMPRESSION = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd"}
_CSV_EXT = (".csv", ".tsv", ".txt")
_PARQUET_EXT = (".parquet", ".parq")
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")
_DUCKDB_TYPES = {
    "BOOLEAN": "boolean", "TINYINT": "tinyint", "SMALLINT": "smallint", "INTEGER": "int",
    "BIGINT": "bigint", "FLOAT": "float", "DOUBLE": "double", "DATE": "date",
    "TIMESTAMP": "timestamp", "VARCHAR": "string",
}
_DUCKDB_DECIMAL = re.compile(r"^DECIMAL\((\d+),\s*(\d+)\)$")


def _hidden(name: str) -> bool:
    return name.startswith(".") or name.startswith("_")


def _file_kind(name: str) -> str | None:
    """'parquet' or 'csv' from a file name's extension, None when it says nothing."""
    lower = name.lower()
    if lower.endswith(_PARQUET_EXT):
        return "parquet"
    stem, ext = os.path.splitext(lower)
    if ext in _COMPRESSION:
        lower = stem
    return "csv" if lower.endswith(_CSV_EXT) else None


def _spread(items: Sequence[Any], n: int) -> list[Any]:
    """Up to ``n`` items evenly spread over ``items`` (first and last included)."""
    if len(items) <= n:
        return list(items)
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)]


def hive_type(t: pa.DataType) -> str | None:
    """The Hive type of an Arrow type, None when Hive has none."""
    if pa.types.is_dictionary(t):
        return hive_type(t.value_type)
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_integer(t):
        signed = {8: "tinyint", 16: "smallint", 32: "int", 64: "bigint"}
        unsigned = {8: "smallint", 16: "int", 32: "bigint", 64: "decimal(20,0)"}
        return (signed if pa.types.is_signed_integer(t) else unsigned)[t.bit_width]
    if pa.types.is_float16(t) or pa.types.is_float32(t):
        return "float"
    if pa.types.is_float64(t):
        return "double"
    if pa.types.is_decimal(t):
        return f"decimal({t.precision},{t.scale})" if t.precision <= 38 else None
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t)
            or pa.types.is_fixed_size_binary(t)):
        return "binary"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
            or pa.types.is_list_view(t) or pa.types.is_large_list_view(t)):
        inner = hive_type(t.value_type)
        return f"array<{inner}>" if inner else None
    if pa.types.is_map(t):
        k, v = hive_type(t.key_type), hive_type(t.item_type)
        return f"map<{k},{v}>" if k and v else None
    if pa.types.is_struct(t):
        members = []
        for f in t:
            ft = hive_type(f.type)
            if ft is None or not _FIELD_NAME.match(f.name):
                return None
            members.append(f"{f.name}:{ft}")
        return f"struct<{','.join(members)}>" if members else None
    return None


def duckdb_hive_type(t: str) -> str:
    """The Hive type of a type DuckDB's CSV sniffer picked (``string`` when unsure)."""
    m = _DUCKDB_DECIMAL.match(t)
    if m and int(m.group(1)) <= 38:
        return f"decimal({m.group(1)},{m.group(2)})"
    return _DUCKDB_TYPES.get(t, "string")


def partition_key_type(values: Sequence[str]) -> str:
    """``int``/``bigint`` if all values are integers, ``date`` if all are ISO dates, else string.

    ``__HIVE_DEFAULT_PARTITION__`` values (NULLs) are ignored; none left -> ``string``.
    """
    arr = pa.array([v for v in values if v != "__HIVE_DEFAULT_PARTITION__"], pa.string())
    if len(arr) == 0:
        return "string"
    if pc.all(pc.match_substring_regex(arr, r"^-?[0-9]+$")).as_py():
        try:
            ints = pc.cast(arr, pa.int64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return "string"
        bounds = pc.min_max(ints)
        small = -(2**31) <= bounds["min"].as_py() and bounds["max"].as_py() < 2**31
        return "int" if small else "bigint"
    if pc.all(pc.match_substring_regex(arr, r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")).as_py():
        try:
            pc.cast(arr, pa.date32())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return "string"
        return "date"
    return "string"


@dataclass
class _File:
    rel: str  # path relative to the table folder
    size: int
    mtime_ns: int


@dataclass
class _PartDir:
    folder: str  # "k1=v1/k2=v2" as on disk
    values: list[str]
    files: list[_File] = field(default_factory=list)


@dataclass
class _Scan:
    table: Table
    partitions: list[Partition]


@dataclass
class _Format:
    kind: str  # parquet | csv
    columns: list[Column]
    serde: SerDe
    input_format: str
    output_format: str
    table_parameters: dict[str, str]


class DirectoryUdb(UnderDatabase):
    """A database folder whose sub-folders are tables (see the module docstring for the rules)."""

    OPTIONS = frozenset({"format", "csv.delimiter", "csv.header", "csv.quoted"})

    def __init__(self, uri: str, source_db: str, options: Mapping[str, str],
                 settings: Settings | None = None, fs: Namespace | None = None) -> None:
        super().__init__(uri, source_db, options, fs)
        self.format = _choice(options, "format", ("parquet", "csv"), None)
        self.csv_delimiter = _delimiter(options.get("csv.delimiter"))
        self.csv_header = _choice(options, "csv.header", _TRUE + _FALSE, "true") in _TRUE
        quoted = _choice(options, "csv.quoted", ("auto",) + _TRUE + _FALSE, "auto")
        self.csv_quoted: bool | None = None if quoted == "auto" else quoted in _TRUE
        if not source_db or "/" in source_db or source_db == "..":
            raise InvalidInputError(f"'{source_db}' is not a folder name (use '.' for the URI "
                                    "folder itself)")
        self.ufs, root_location = self._root(uri)
        root_name = root_location.rstrip("/").rsplit("/", 1)[-1]
        if source_db == "." or source_db == root_name:
            self.db_location = root_location
        else:
            self.db_location = f"{root_location.rstrip('/')}/{source_db}"
        self.db_name = root_name if source_db == "." else source_db
        self._scans: dict[str, _Scan] = {}
        self._fingerprints: dict[str, str] = {}
        self._duck: duckdb.DuckDBPyConnection | None = None

    # -- the contract ----------------------------------------------------------------------------

    def get_database(self) -> Database:
        self._require_db()
        return Database(name=self.db_name, location=self.db_location,
                        description=f"directory {self.db_location}")

    def list_tables(self) -> list[str]:
        return sorted(self._table_folders())

    def get_tables(self, names: Sequence[str]) -> list[Table]:
        folders = self._table_folders()
        out = []
        for name in names:
            folder = folders.get(name.lower())
            if folder is None:
                continue
            try:
                scan = self._scan(name.lower(), folder)
            except UdbError as e:
                self._problem(str(e))
                continue
            if scan is not None:
                out.append(scan.table)
        out.sort(key=lambda t: t.name)
        return out

    def list_partitions(self, table: Table) -> list[Partition]:
        if not table.partition_keys:
            return []
        scan = self._scans.get(table.name.lower())
        if scan is None:
            folder = self._table_folders().get(table.name.lower())
            scan = self._scan(table.name.lower(), folder) if folder is not None else None
        return list(scan.partitions) if scan is not None else []

    def fingerprints(self, locations: Iterable[str | None]) -> dict[str, str | None]:
        """From the table listings already made; the rest through the namespace."""
        wanted = [loc for loc in locations if loc]
        out: dict[str, str | None] = {loc: self._fingerprints[loc] for loc in wanted
                                      if loc in self._fingerprints}
        out.update(super().fingerprints(loc for loc in wanted if loc not in out))
        return out

    def close(self) -> None:
        if self._duck is not None:
            self._duck.close()
            self._duck = None

    # -- listing ---------------------------------------------------------------------------------

    def _root(self, uri: str) -> tuple[UnderFileSystem, str]:
        if not uri or not (uri.startswith("/") or "://" in uri or uri.startswith(
                ("file:", "strata:"))):
            raise InvalidInputError(f"directory URI '{uri}' must be an absolute path or a URI "
                                    "like file:///data, s3://bucket/prefix or strata:///mount")
        try:
            return self.fs.location_of(uri.split("?", 1)[0])
        except InvalidInputError as e:
            raise InvalidInputError(f"directory URI '{uri}' is not usable: {e}") from e
        except NoSuchPathError as e:
            raise InvalidInputError(f"directory URI '{uri}': {e}") from e

    def _require_db(self) -> None:
        info = self.ufs.info(self.db_location)
        if info is None or not info.is_dir:
            e = NoSuchDatabaseError(self.source_db)
            e.args = (f"database '{self.source_db}' does not exist: no folder "
                      f"{self.db_location}",)
            raise e

    def _table_folders(self) -> dict[str, str]:
        """Lower-cased table name -> folder name."""
        self._require_db()
        infos = self.ufs.list(self.db_location) or []
        out: dict[str, str] = {}
        for info in sorted(infos, key=lambda i: i.name):
            name = info.name
            if not info.is_dir or _hidden(name):
                continue
            if not _TABLE_NAME.match(name):
                hint = (" (a partition folder: point the URI at the database folder)"
                        if "=" in name else "")
                self._problem(f"folder {self.db_location}/{name} skipped: not a table name"
                              f"{hint}")
                continue
            if name.lower() in out:
                self._problem(f"folder {self.db_location}/{name} skipped: table "
                              f"'{name.lower()}' exists already as folder '{out[name.lower()]}'")
                continue
            out[name.lower()] = name
        return out

    def _problem(self, message: str) -> None:
        if message not in self.problems:
            log.warning("directory udb %s: %s", self.db_location, message)
            self.problems.append(message)

    def _list(self, location: str) -> tuple[list[_File], list[str]]:
        """Visible files and folders under ``location``, relative to it (a storage that
        cannot be listed raises ``UfsUnavailableError``: never taken for an empty table)."""
        infos: list[FileStatus] = self.ufs.list(location, recursive=True) or []
        files, dirs = [], []
        for info in infos:
            rel = info.rel
            if any(_hidden(p) for p in rel.split("/")):
                continue
            if info.is_dir:
                dirs.append(rel)
            else:
                files.append(_File(rel, info.size, info.mtime_ns))
        files.sort(key=lambda f: f.rel)
        return files, dirs

    # -- one table -------------------------------------------------------------------------------

    def _scan(self, name: str, folder: str) -> _Scan | None:
        """Table + partitions of one folder; None when it holds no data yet."""
        location = f"{self.db_location}/{folder}"

        def fail(reason: str) -> UdbError:
            return UdbError(f"table '{self.db_name}.{name}' at {location}: {reason}")

        files, dirs = self._list(location)
        if not files:
            self._problem(f"table '{self.db_name}.{name}' at {location}: no data files, skipped "
                          "until data appears")
            return None
        keys, parts = _layout(files, dirs, fail)
        fmt = self._format(name, location, files, keys, fail)
        mtimes = [f.mtime_ns for f in files]
        create_time = min(mtimes) // 1_000_000_000
        key_columns = [Column(name=k, type=partition_key_type([p.values[i] for p in parts]))
                       for i, k in enumerate(keys)]
        sd = StorageDescriptor(columns=fmt.columns, location=location,
                               input_format=fmt.input_format, output_format=fmt.output_format,
                               serde=fmt.serde)
        params = {"EXTERNAL": "TRUE", **fmt.table_parameters}
        if not keys:
            params["numFiles"] = str(len(files))
            params["totalSize"] = str(sum(f.size for f in files))
            self._fingerprints[location] = digest_entries(
                [(f.rel, f.size, f.mtime_ns) for f in files])
        table = Table(db_name=self.db_name, name=name, table_type=EXTERNAL_TABLE,
                      create_time=create_time, sd=sd, partition_keys=key_columns,
                      parameters=params)
        partitions = []
        seen: dict[str, str] = {}
        for p in parts:
            pname = partition_name(keys, p.values)
            if pname in seen:
                raise fail(f"folders '{seen[pname]}' and '{p.folder}' are the same partition "
                           f"'{pname}'")
            seen[pname] = p.folder
            ploc = f"{location}/{p.folder}"
            cut = len(p.folder) + 1
            self._fingerprints[ploc] = digest_entries(
                [(f.rel[cut:], f.size, f.mtime_ns) for f in p.files])
            partitions.append(Partition(
                values=p.values, db_name=self.db_name, table_name=name,
                create_time=(min(f.mtime_ns for f in p.files) // 1_000_000_000
                             if p.files else create_time),
                sd=sd.model_copy(update={"location": ploc}),
                parameters={"numFiles": str(len(p.files)),
                            "totalSize": str(sum(f.size for f in p.files))}))
        scan = _Scan(table, partitions)
        self._scans[name] = scan
        return scan

    def _format(self, name: str, location: str, files: list[_File],
                keys: list[str], fail: _Fail) -> _Format:
        data = [f for f in files if f.size > 0] or files
        kind = self.format
        if kind is None:
            kinds = {k for k in (_file_kind(f.rel) for f in data) if k}
            unknown = [f for f in data if _file_kind(f.rel) is None]
            if unknown:
                for f in _spread(unknown, _SAMPLE_FILES):
                    if not self._has_parquet_magic(f"{location}/{f.rel}"):
                        raise fail(f"file '{f.rel}' is neither Parquet nor named like CSV "
                                   "(.csv/.tsv/.txt); set option format=csv|parquet to force")
                kinds.add("parquet")
            if len(kinds) > 1:
                raise fail("mixes Parquet and CSV files")
            kind = kinds.pop()
        if kind == "parquet":
            columns = self._parquet_columns(name, data, keys, fail, location)
            return _Format("parquet", columns,
                           SerDe(serialization_lib=PARQUET_SERDE,
                                 parameters={"serialization.format": "1"}),
                           PARQUET_INPUT, PARQUET_OUTPUT, {})
        return self._csv_format(name, location, data, keys, fail)

    def _has_parquet_magic(self, uri: str) -> bool:
        try:
            with self.ufs.open_input(uri) as f:
                return bool(f.read(4) == b"PAR1")
        except NoSuchPathError:
            return False

    def _parquet_columns(self, name: str, files: list[_File], keys: list[str],
                         fail: _Fail, location: str) -> list[Column]:
        schemas = []
        for f in _spread(files, _SAMPLE_FILES):
            try:
                with self.ufs.open_input(f"{location}/{f.rel}") as src:
                    schemas.append(pq.read_schema(src))
            except NoSuchPathError as e:
                raise fail(f"file '{f.rel}' vanished while reading: {e}") from e
            except (OSError, pa.ArrowException) as e:
                raise fail(f"cannot read the Parquet footer of '{f.rel}': {e}") from e
        try:
            schema = pa.unify_schemas(schemas, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise fail(f"files disagree on the schema: {e}") from e
        columns: list[Column] = []
        for f in schema:
            col = f.name.lower()
            if col in keys:
                continue
            htype = hive_type(f.type)
            if htype is None:
                self._problem(f"table '{self.db_name}.{name}' at {location}: column '{f.name}' "
                              f"of type {f.type} has no Hive type; left out")
                continue
            columns.append(Column(name=col, type=htype))
        _check_columns(columns, fail)
        return columns

    def _csv_format(self, name: str, location: str, files: list[_File],
                    keys: list[str], fail: _Fail) -> _Format:
        sample_file = files[0]
        sample = self._csv_sample(f"{location}/{sample_file.rel}", sample_file.rel, fail)
        delim, quote, escape, names, types = self._sniff(sample, sample_file.rel, fail)
        if self.csv_quoted is None:
            body = sample.split(b"\n", 1)[-1] if self.csv_header else sample
            quoted = bool(quote) and quote.encode() in body
        else:
            quoted = self.csv_quoted
        if quoted:
            serde = SerDe(serialization_lib=OPEN_CSV_SERDE, parameters={
                "separatorChar": delim, "quoteChar": quote or '"', "serialization.format": "1",
                **({"escapeChar": escape} if escape and escape != (quote or '"') else {})})
            types = ["string"] * len(types)
        else:
            serde = SerDe(serialization_lib=LAZY_SIMPLE_SERDE, parameters={
                "field.delim": delim, "serialization.format": delim,
                "serialization.null.format": ""})
        columns = []
        for n, t in zip(names, types):
            col = n.lower()
            if col in keys:  # CSV columns are positional: keep it, renamed
                col = f"{col}_data"
                self._problem(f"table '{self.db_name}.{name}' at {location}: CSV column '{n}' "
                              f"clashes with a partition key; served as '{col}'")
            columns.append(Column(name=col, type=t))
        _check_columns(columns, fail)
        params = {"skip.header.line.count": "1"} if self.csv_header else {}
        return _Format("csv", columns, serde, TEXT_INPUT, TEXT_OUTPUT, params)

    def _csv_sample(self, path: str, rel: str, fail: _Fail) -> bytes:
        """The first (decompressed) bytes of a CSV file, cut after the last whole line."""
        ext = os.path.splitext(path)[1].lower()
        codec = _COMPRESSION.get(ext)
        try:
            with self.ufs.open_input(path) as raw:
                f = pa.CompressedInputStream(raw, codec) if codec else raw
                data = bytes(f.read(_CSV_SAMPLE_BYTES))
        except NoSuchPathError as e:
            raise fail(f"file '{rel}' vanished while reading: {e}") from e
        except (OSError, pa.ArrowException) as e:
            raise fail(f"cannot read '{rel}': {e}") from e
        if len(data) == _CSV_SAMPLE_BYTES and b"\n" in data:
            data = data[:data.rindex(b"\n") + 1]
        return data

    def _sniff(self, sample: bytes, rel: str, fail: _Fail
               ) -> tuple[str, str, str, list[str], list[str]]:
        """(delimiter, quote, escape, column names, Hive types) of a CSV sample, by DuckDB."""
        import duckdb

        if self._duck is None:
            self._duck = duckdb.connect()
        fd, tmp = tempfile.mkstemp(suffix=".csv", prefix="strata-sniff-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(sample)
            args: list[Any] = [tmp, self.csv_header]
            delim_arg = ""
            if self.csv_delimiter is not None:
                delim_arg = ", delim => ?"
                args.append(self.csv_delimiter)
            row = self._duck.execute(
                "SELECT Delimiter, Quote, Escape, Columns FROM sniff_csv(?, sample_size => -1, "
                f"header => ?{delim_arg})", args).fetchone()
        except duckdb.Error as e:
            raise fail(f"cannot sniff CSV file '{rel}': {e}") from e
        finally:
            os.unlink(tmp)
        if row is None:
            raise fail(f"cannot sniff CSV file '{rel}'")
        delim, quote, escape, cols = row

        def char(v: str) -> str:
            return "" if v in ("(empty)", "\0") else v

        if len(delim) != 1:
            raise fail(f"CSV delimiter {delim!r} of '{rel}' is not one character")
        names = [c["name"] if self.csv_header else f"c{i}" for i, c in enumerate(cols)]
        return (delim, char(quote), char(escape), names,
                [duckdb_hive_type(c["type"]) for c in cols])


# -- helpers -------------------------------------------------------------------------------------


def _layout(files: list[_File], dirs: list[str], fail: _Fail) -> tuple[list[str], list[_PartDir]]:
    """Partition keys and partition folders of a table's listing; raises on a mixed layout."""
    layouts: dict[tuple[str, ...], str] = {}
    parts: dict[str, _PartDir] = {}
    for f in files:
        segments = f.rel.split("/")[:-1]
        pairs = [_kv(s) for s in segments]
        bad = next((s for s, kv in zip(segments, pairs) if kv is None), None)
        if bad is not None:
            raise fail(f"file '{f.rel}' sits in sub-folder '{bad}', which is not a key=value "
                       "partition folder")
        keys = tuple(kv[0] for kv in pairs if kv is not None)
        layouts.setdefault(keys, f.rel)
        if len(layouts) > 1:
            (k1, f1), (k2, f2) = list(layouts.items())[:2]
            raise fail(f"mixed layouts: '{f1}' ({_describe(k1)}) and '{f2}' ({_describe(k2)})")
        if keys:
            folder = "/".join(segments)
            part = parts.get(folder)
            if part is None:
                part = parts[folder] = _PartDir(
                    folder, [kv[1] for kv in pairs if kv is not None])
            part.files.append(f)
    (keys,) = layouts
    if keys:
        for d in dirs:
            segments = d.split("/")
            if len(segments) != len(keys) or d in parts:
                continue
            pairs = [_kv(s) for s in segments]
            if all(kv is not None for kv in pairs) and tuple(
                    kv[0] for kv in pairs if kv is not None) == keys:
                parts[d] = _PartDir(d, [kv[1] for kv in pairs if kv is not None])
    ordered = sorted(parts.values(), key=lambda p: p.folder)
    return list(keys), ordered


def _kv(segment: str) -> tuple[str, str] | None:
    key, eq, value = segment.partition("=")
    if not eq or not key:
        return None
    if "%" in segment:
        key, value = unescape_partition_value(key), unescape_partition_value(value)
    return key.lower(), value


def _describe(keys: tuple[str, ...]) -> str:
    return f"partitioned by {', '.join(keys)}" if keys else "unpartitioned"


def _check_columns(columns: list[Column], fail: _Fail) -> None:
    if not columns:
        raise fail("no columns with a Hive type")
    names = [c.name for c in columns]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise fail(f"column names clash when lower-cased: {', '.join(dupes)}")


def _choice(options: Mapping[str, str], key: str, allowed: tuple[str, ...],
            default: str | None) -> Any:
    raw = options.get(key)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value not in allowed:
        raise InvalidOptionError(f"option {key} must be one of {', '.join(allowed)}, got '{raw}'")
    return value


def _delimiter(raw: str | None) -> str | None:
    if raw is None:
        return None
    value = {"\\t": "\t", "tab": "\t"}.get(raw.lower(), raw)
    if len(value) != 1:
        raise InvalidOptionError(f"option csv.delimiter must be one character, got '{raw}'")
    return value
