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
  ignored, folder names that are not identifiers (letters, digits, ``_``, ``-``; at most
  :data:`MAX_NAME_LENGTH` = 128 characters, Hive's limit; ``\\Z``-anchored, so no trailing
  newline) are skipped. A
  folder with no data files at all (empty, or only empty partition folders) is **not** a table
  yet: it is skipped (noted in :attr:`DirectoryUdb.problems`) until data appears, since a Hive
  table needs columns.
* **partitions**: Hive-style ``key=value`` folders, possibly nested; keys in folder order
  (lower-cased), values unescaped with Hive's rules (``__HIVE_DEFAULT_PARTITION__`` kept; an
  empty value, folder ``k=``, is that default partition too, with a warning: Hive never writes
  ``k=`` and names NULL values so; ``k=`` next to ``k=__HIVE_DEFAULT_PARTITION__`` is the "same
  partition" error below). A key must be a valid column name (see *names*) of at most 128
  characters, else the table is skipped. Every
  data file must sit exactly under the same key sequence; a table mixing layouts (files at the
  top and in partitions, different keys, files in non-``key=value`` sub-folders) is skipped and
  reported. Empty leaf folders with the full key sequence are (empty) partitions. Key types:
  ``int``/``bigint`` when every value is an integer, ``date`` when every value is an ISO date,
  else ``string`` (default-partition values do not vote). A Parquet column named like a
  partition key is dropped (the folder value wins, as in Hive/Spark); a CSV one, positional, is
  kept as ``<name>_data``.
* **names**: entries whose name is not UTF-8 (``os.scandir`` yields them as surrogate escapes,
  which JSON, SQLite and pyarrow refuse) are skipped, each reported once (a folder, not every
  file under it) with the bytes shown ``\\xNN``: a table folder so named is no table, a file or
  partition folder so named is left out of its table, which stays. Column and partition key
  names may not hold control characters (C0, DEL, C1) nor ``,`` (Hive joins column names with
  it): such a Parquet column is left out, such a CSV column (positional) is served as ``c<i>``
  (``i`` its position), both reported with the name ``\\x``-escaped. Every problem message is
  valid UTF-8 text.
* **broken files**: a Parquet file shorter than 12 bytes (0 bytes: a writer not done) and a
  sampled one whose footer cannot be read (truncated) are *bad files*: left out of the schema
  sample (up to :data:`_SPARE_SAMPLES` other files are read in their place) and **not counted**
  in ``numFiles``/``totalSize``, each reported naming the file; the table (or partition) stays,
  its location unchanged, so an engine reading it fails on that file until it is fixed or
  removed (the fingerprint still covers every file: fixing it shows at the next sync). Only the
  sampled footers are read: a truncated file outside the sample is not noticed. A CSV file that
  cannot be read (a broken ``.gz``) is a bad file the same way, the next one is sampled. When no
  file can be read at all (every Parquet file bad), a file vanished while read or an I/O error
  (not a decoding one) interrupted a Parquet footer read, the table is skipped with a
  :class:`TableReadError` and listed in :attr:`DirectoryUdb.unreadable`: the service's sync
  then keeps serving the table's last synced state (same id) and warns, instead of removing
  it; attach just skips it.
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
* **ragged CSV**: every record of the sample (header included, blank lines not; the last one
  of a cut sample not) must have as many fields as the sniffer found columns, counted with
  Python's ``csv`` reader and the sniffed delimiter/quote/escape; when the sniffer found one
  column and no ``csv.delimiter`` was given, the first line is also split on ``,``, ``;``,
  tab and ``|``: several fields there over rows that disagree is ragged too (not one column
  ``a,b,c``). A ragged sample skips the table with a problem naming the first bad line (Hive
  would pad short rows with NULLs and cut long ones: silently wrong).
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

import csv
import io
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
    DEFAULT_PARTITION_NAME,
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

#: Builds the error that skips one table, from a reason (``read=True``: a
#: :class:`TableReadError`).
_Fail = Callable[..., UdbError]


class TableReadError(UdbError):
    """A table whose data could not be read *now* (a file vanished while read, no Parquet file
    with a readable footer): not a verdict on the table, so a sync keeps serving its last synced
    state (:attr:`DirectoryUdb.unreadable`) instead of removing it."""

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

#: Hive's limit on database, table and column identifiers.
MAX_NAME_LENGTH = 128
#: The smallest Parquet file: magic, footer length, magic. Shorter files (0 bytes: a writer that
#: has not finished) cannot be Parquet.
_PARQUET_MIN_BYTES = 12
#: Parquet footers tried in place of sampled files whose footer is unreadable.
_SPARE_SAMPLES = 2 * _SAMPLE_FILES

# ``\Z`` anchors: ``$`` would let a trailing newline through.
_TABLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]*\Z")
_FIELD_NAME = re.compile(r"[A-Za-z0-9_]+\Z")
#: What a column or partition key name may not hold: control characters (C0, DEL, C1) and ','
#: (Hive joins column names with ',' in the serde's ``columns`` property).
_BAD_NAME_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f,]")
#: Delimiters looked for when the sniffer found a single column (a ragged file, see _ragged).
_COMMON_DELIMITERS = (",", ";", "\t", "|")
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


def _utf8(name: str) -> bool:
    """False for a name listed from bytes that are not UTF-8 (``os.scandir`` gives them as
    surrogate escapes, which neither JSON, SQLite nor pyarrow can encode)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(name: str) -> str:
    """A name fit for a message: undecodable bytes as ``\\xNN``, control characters escaped."""
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


def _name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a column / partition key name, None when it can."""
    if not name:
        return "empty"
    bad = _BAD_NAME_CHARS.search(name)
    if bad:
        return f"holds {_shown(bad.group())!r}" if bad.group() == "," else (
            f"holds the control character {_shown(bad.group())}")
    return None


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
    #: Data files left out of the schema and of numFiles/totalSize (unreadable; reported).
    bad_files: set[str] = field(default_factory=set)


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
            except TableReadError as e:
                self.unreadable[name.lower()] = str(e)
                self._problem(str(e))
                continue
            except UdbError as e:
                self._problem(str(e))
                continue
            self.unreadable.pop(name.lower(), None)
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
            if not _utf8(name):
                self._problem(f"folder {self.db_location}/{_shown(name)} skipped: its name is "
                              "not UTF-8")
                continue
            if len(name) > MAX_NAME_LENGTH:
                self._problem(f"folder {self.db_location}/{name[:64]}... skipped: a table name "
                              f"has at most {MAX_NAME_LENGTH} characters, this one {len(name)}")
                continue
            if not _TABLE_NAME.match(name):
                hint = (" (a partition folder: point the URI at the database folder)"
                        if "=" in name else "")
                self._problem(f"folder {self.db_location}/{_shown(name)} skipped: not a table "
                              f"name (letters, digits, '_', '-'){hint}")
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

    def _list(self, location: str, note: Callable[[str], None]
              ) -> tuple[list[_File], list[str]]:
        """Visible files and folders under ``location``, relative to it (a storage that
        cannot be listed raises ``UfsUnavailableError``: never taken for an empty table).
        Entries whose name is not UTF-8 are left out, each one told to ``note`` (a folder
        once, not every entry under it)."""
        infos: list[FileStatus] = self.ufs.list(location, recursive=True) or []
        files, dirs = [], []
        for info in infos:
            rel = info.rel
            segments = rel.split("/")
            if any(_hidden(p) for p in segments):
                continue
            if not _utf8(rel):
                if _utf8("/".join(segments[:-1])):
                    kind = "folder" if info.is_dir else "file"
                    note(f"{kind} '{_shown(rel)}' skipped: its name is not UTF-8")
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
        prefix = f"table '{self.db_name}.{name}' at {location}"

        def fail(reason: str, read: bool = False) -> UdbError:
            return (TableReadError if read else UdbError)(f"{prefix}: {reason}")

        def note(message: str) -> None:
            self._problem(f"{prefix}: {message}")

        files, dirs = self._list(location, note)
        if not files:
            self._problem(f"{prefix}: no data files, skipped until data appears")
            return None
        keys, parts = _layout(files, dirs, fail, note)
        fmt = self._format(name, location, files, keys, fail)
        # Files known bad (see _parquet_columns) are not counted; the fingerprint covers every
        # file (it is the digest of the data under the location, whatever its state).
        counted = [f for f in files if f.rel not in fmt.bad_files] if fmt.bad_files else files
        mtimes = [f.mtime_ns for f in files]
        create_time = min(mtimes) // 1_000_000_000
        key_columns = [Column(name=k, type=partition_key_type([p.values[i] for p in parts]))
                       for i, k in enumerate(keys)]
        sd = StorageDescriptor(columns=fmt.columns, location=location,
                               input_format=fmt.input_format, output_format=fmt.output_format,
                               serde=fmt.serde)
        params = {"EXTERNAL": "TRUE", **fmt.table_parameters}
        if not keys:
            params["numFiles"] = str(len(counted))
            params["totalSize"] = str(sum(f.size for f in counted))
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
            pcounted = ([f for f in p.files if f.rel not in fmt.bad_files] if fmt.bad_files
                        else p.files)
            partitions.append(Partition(
                values=p.values, db_name=self.db_name, table_name=name,
                create_time=(min(f.mtime_ns for f in p.files) // 1_000_000_000
                             if p.files else create_time),
                sd=sd.model_copy(update={"location": ploc}),
                parameters={"numFiles": str(len(pcounted)),
                            "totalSize": str(sum(f.size for f in pcounted))}))
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
        bad: set[str] = set()
        if kind == "parquet":
            columns = self._parquet_columns(name, files, keys, fail, location, bad)
            return _Format("parquet", columns,
                           SerDe(serialization_lib=PARQUET_SERDE,
                                 parameters={"serialization.format": "1"}),
                           PARQUET_INPUT, PARQUET_OUTPUT, {}, bad)
        return self._csv_format(name, location, data, keys, fail, bad)

    def _has_parquet_magic(self, uri: str) -> bool:
        try:
            with self.ufs.open_input(uri) as f:
                return bool(f.read(4) == b"PAR1")
        except NoSuchPathError:
            return False

    def _bad_file(self, name: str, location: str, rel: str, why: str, bad: set[str]) -> None:
        """One data file that cannot be read: left out of the schema sample and of
        numFiles/totalSize, reported; the table stays."""
        bad.add(rel)
        self._problem(f"table '{self.db_name}.{name}' at {location}: file '{_shown(rel)}' {why}; "
                      "left out of the schema and of numFiles/totalSize (engines reading the "
                      "table fail on it until it is fixed or removed)")

    def _parquet_columns(self, name: str, files: list[_File], keys: list[str],
                         fail: _Fail, location: str, bad: set[str]) -> list[Column]:
        usable = []
        for f in files:
            if f.size < _PARQUET_MIN_BYTES:
                self._bad_file(name, location, f.rel,
                               f"has {f.size} bytes, too few for a Parquet file", bad)
            else:
                usable.append(f)
        picked = _spread(usable, _SAMPLE_FILES)
        picked_rels = {f.rel for f in picked}
        spares = iter([f for f in usable if f.rel not in picked_rels][:_SPARE_SAMPLES])
        schemas = []
        pending = list(reversed(picked))
        while pending:
            f = pending.pop()
            try:
                with self.ufs.open_input(f"{location}/{f.rel}") as src:
                    schemas.append(pq.read_schema(src))
            except NoSuchPathError as e:
                raise fail(f"file '{f.rel}' vanished while reading: {e}", read=True) from e
            except OSError as e:  # I/O (pyarrow's IO errors too), not the file's content
                raise fail(f"cannot read file '{f.rel}': {e}", read=True) from e
            except pa.ArrowException as e:  # ArrowInvalid: no magic, short, bad thrift
                self._bad_file(name, location, f.rel,
                               f"has no readable Parquet footer ({e})", bad)
                spare = next(spares, None)
                if spare is not None:
                    pending.append(spare)
        if not schemas:
            raise fail("no Parquet file with a readable footer (the files are named above); "
                       "skipped until one is readable", read=True)
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
            problem = _name_problem(col)
            if problem is not None:
                self._problem(f"table '{self.db_name}.{name}' at {location}: column "
                              f"'{_shown(f.name)}' is not a valid column name ({problem}); "
                              "left out")
                continue
            columns.append(Column(name=col, type=htype))
        _check_columns(columns, fail)
        return columns

    def _csv_format(self, name: str, location: str, files: list[_File],
                    keys: list[str], fail: _Fail, bad: set[str]) -> _Format:
        sample, truncated = b"", False
        sample_file: _File | None = None
        for f in files[:1 + _SPARE_SAMPLES]:
            try:
                sample, truncated = self._csv_sample(f"{location}/{f.rel}")
            except NoSuchPathError as e:
                raise fail(f"file '{f.rel}' vanished while reading: {e}", read=True) from e
            except (OSError, pa.ArrowException) as e:
                self._bad_file(name, location, f.rel, f"cannot be read ({e})", bad)
                continue
            sample_file = f
            break
        if sample_file is None:
            raise fail("no readable CSV file (the files are named above); skipped until one is "
                       "readable", read=True)
        delim, quote, escape, names, types = self._sniff(sample, sample_file.rel, fail)
        ragged = _ragged(sample, truncated, delim, quote, escape, len(names),
                         guess_delimiter=self.csv_delimiter is None)
        if ragged is not None:
            raise fail(f"CSV file '{_shown(sample_file.rel)}': {ragged}")
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
        for i, (n, t) in enumerate(zip(names, types)):
            col = n.lower()
            problem = _name_problem(col)
            if problem is not None:  # CSV columns are positional: keep it, renamed
                col = f"c{i}"
                self._problem(f"table '{self.db_name}.{name}' at {location}: CSV column {i} "
                              f"'{_shown(n)}' is not a valid column name ({problem}); served "
                              f"as '{col}'")
            if col in keys:  # CSV columns are positional: keep it, renamed
                col = f"{col}_data"
                self._problem(f"table '{self.db_name}.{name}' at {location}: CSV column '{n}' "
                              f"clashes with a partition key; served as '{col}'")
            columns.append(Column(name=col, type=t))
        _check_columns(columns, fail)
        params = {"skip.header.line.count": "1"} if self.csv_header else {}
        return _Format("csv", columns, serde, TEXT_INPUT, TEXT_OUTPUT, params, bad)

    def _csv_sample(self, path: str) -> tuple[bytes, bool]:
        """The first (decompressed) bytes of a CSV file, cut after the last whole line, and
        whether the file goes on (raises ``NoSuchPathError``, ``OSError``, ``ArrowException``)."""
        ext = os.path.splitext(path)[1].lower()
        codec = _COMPRESSION.get(ext)
        with self.ufs.open_input(path) as raw:
            f = pa.CompressedInputStream(raw, codec) if codec else raw
            data = bytes(f.read(_CSV_SAMPLE_BYTES))
        truncated = len(data) == _CSV_SAMPLE_BYTES
        if truncated and b"\n" in data:
            data = data[:data.rindex(b"\n") + 1]
        return data, truncated

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


def _layout(files: list[_File], dirs: list[str], fail: _Fail,
            note: Callable[[str], None]) -> tuple[list[str], list[_PartDir]]:
    """Partition keys and partition folders of a table's listing; raises on a mixed layout."""
    layouts: dict[tuple[str, ...], str] = {}
    parts: dict[str, _PartDir] = {}
    checked: set[str] = set()
    for f in files:
        segments = f.rel.split("/")[:-1]
        pairs = [_kv(s) for s in segments]
        bad = next((s for s, kv in zip(segments, pairs) if kv is None), None)
        if bad is not None:
            raise fail(f"file '{_shown(f.rel)}' sits in sub-folder '{_shown(bad)}', which is "
                       "not a key=value partition folder")
        keys = tuple(kv[0] for kv in pairs if kv is not None)
        for key in keys:
            if key not in checked:
                _check_key(key, f.rel, fail)
                checked.add(key)
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
    empty = sorted({s for p in ordered for s in p.folder.split("/") if not s.partition("=")[2]})
    for segment in empty:
        note(f"partition folder '{_shown(segment)}' has an empty value: served as "
             f"{_shown(segment)}{DEFAULT_PARTITION_NAME} (Hive's partition of NULL values)")
    return list(keys), ordered


def _kv(segment: str) -> tuple[str, str] | None:
    """(lower-cased key, value) of a ``key=value`` folder name; an empty value is Hive's
    default partition (NULL), as Hive itself never writes ``k=``."""
    key, eq, value = segment.partition("=")
    if not eq or not key:
        return None
    if "%" in segment:
        key, value = unescape_partition_value(key), unescape_partition_value(value)
    return key.lower(), value or DEFAULT_PARTITION_NAME


def _check_key(key: str, rel: str, fail: _Fail) -> None:
    """A partition key must be a column name of at most :data:`MAX_NAME_LENGTH` characters."""
    if len(key) > MAX_NAME_LENGTH:
        raise fail(f"partition key '{_shown(key[:64])}...' of '{_shown(rel)}' is longer than "
                   f"{MAX_NAME_LENGTH} characters")
    problem = _name_problem(key)
    if problem is not None:
        raise fail(f"partition key '{_shown(key)}' of '{_shown(rel)}' is not a valid column "
                   f"name ({problem})")


def _ragged(sample: bytes, truncated: bool, delim: str, quote: str, escape: str, width: int,
            guess_delimiter: bool) -> str | None:
    """Why the records of a CSV sample disagree with the ``width`` columns the sniffer found
    (None when they all agree). Hive would pad short rows with NULLs and drop extra fields:
    served, such a table would be silently wrong. When the sniffer found a single column and
    ``guess_delimiter``, the first line is also split on the common delimiters: a header of
    several ``,``-separated fields over rows that do not agree is ragged, not one column
    ``a,b,c``."""
    text = sample.decode("utf-8", "replace")
    if width == 1 and guess_delimiter:
        first = next((line for line in text.splitlines() if line.strip()), "")
        for cand in _COMMON_DELIMITERS:
            if cand == delim:
                continue
            fields = _field_counts(first + "\n", cand, quote or '"', escape, False)
            if fields and fields[0][1] > 1:
                counts = _field_counts(text, cand, quote or '"', escape, truncated)
                wrong = [(line, n) for line, n in counts if n != fields[0][1]]
                if wrong:
                    return _disagree(f"the first line has {fields[0][1]} {cand!r}-separated "
                                     "fields", wrong, "no delimiter fits every row")
    counts = _field_counts(text, delim, quote, escape, truncated)
    wrong = [(line, n) for line, n in counts if n != width]
    if wrong:
        return _disagree(f"the sniffer found {width} {delim!r}-separated columns", wrong,
                         "rows disagree with the header")
    return None


def _disagree(found: str, wrong: list[tuple[int, int]], what: str) -> str:
    line, n = wrong[0]
    more = f" (and {len(wrong) - 1} more in the sample)" if len(wrong) > 1 else ""
    return (f"{what}: {found}, line {line} has {n}{more}; skipped (fix the file, or set "
            "csv.delimiter if the delimiter was guessed wrong)")


def _field_counts(text: str, delim: str, quote: str, escape: str,
                  truncated: bool) -> list[tuple[int, int]]:
    """(line number, field count) of every non-blank record of ``text``; the last one left
    out when the sample was cut (it may be cut inside a quoted field)."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim,
                        quotechar=quote or None,
                        quoting=csv.QUOTE_MINIMAL if quote else csv.QUOTE_NONE,
                        escapechar=(escape if escape and escape != quote else None),
                        doublequote=True, strict=False)
    out: list[tuple[int, int]] = []
    try:
        for row in reader:
            if row and any(row) or len(row) > 1:
                out.append((reader.line_num, len(row)))
    except csv.Error:
        return out  # what Python's reader cannot follow is the sniffer's call
    if truncated and out:
        out.pop()
    return out


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
