"""Reading a source table's data files exactly as Hive reads them, in bulk, into Arrow.

:func:`read_source` turns the data files of a table (or partition) into a ``pyarrow.Table`` whose
columns carry the Hive column types (:func:`hive_to_arrow_type`); :func:`iter_source_tables`
yields one table per file for streaming. No row is ever handled in Python: text is split into
lines by Arrow compute over large decoded chunks, and every field is split, NULL-mapped and typed
by one DuckDB SQL query per file.

Serdes
------
* ``LazySimpleSerDe`` (TEXTFILE; also the serde of a descriptor that names none):

  - lines end at ``\\n``, ``\\r\\n`` or a lone ``\\r`` (Hadoop's LineRecordReader); a UTF-8 byte
    order mark at the start of a file is dropped; text is decoded with ``serialization.encoding``
    (default UTF-8), undecodable bytes become U+FFFD as in Hive's ``Text``;
  - the field delimiter is ``field.delim``, else ``serialization.format``, else Ctrl-A; like
    Hive's ``LazyUtils.getByte`` a value that parses as a byte number names that byte (``'1'`` is
    Ctrl-A, ``'9'`` tab, ``'44'`` a comma), any other value its first character;
  - quotes are ordinary characters (no quoting at all);
  - ``escape.delim`` (same byte rule) makes ``<esc><c>`` the literal ``c``: an escaped delimiter
    does not split, and string columns are unescaped (``serialization.escape.crlf=true`` also maps
    ``<esc>r``/``<esc>n`` to CR/LF);
  - ``serialization.null.format`` (default ``\\N``, the two characters) compared with the raw
    field (before unescaping) means NULL, for every column type;
  - missing trailing fields are NULL, extra fields are ignored; with
    ``serialization.last.column.takes.rest=true`` the last column keeps the rest of the line;
  - a field that does not parse as its column's type is NULL (never an error), parsed like Hive's
    lazy objects: integers ``[+-]digits`` with an optional ``.digits`` tail that is truncated,
    out-of-range NULL, no blanks; float/double as Java's ``parseDouble`` (surrounding blanks,
    ``NaN``, ``Infinity``, ``f``/``d`` suffixes, overflow to infinity; hex floats are NULL here);
    decimal(p,s) rounded half-up to ``s``, NULL when it needs more than ``p - s`` integer digits;
    boolean ``true``/``false`` in any case, anything else NULL; date ``yyyy-M-d`` (blanks trimmed,
    anything after a space ignored), an impossible date NULL; timestamp ``yyyy-M-d[( |T)H:m[:s[.f]]]``
    (fraction truncated to microseconds); varchar(n) truncated to n characters, char(n) truncated
    and its trailing blanks stripped (what Hive's Parquet writer stores); binary is base64-decoded
    when every byte is in the base64 alphabet (Hive's ``LazyBinary.decodeIfNeeded``), else the raw
    UTF-8 bytes;
  - complex column types (array/map/struct/uniontype) raise :class:`InvalidInputError`.

* ``OpenCSVSerde``: ``separatorChar`` (default ``,``), ``quoteChar`` (``"``), ``escapeChar``
  (``\\``), each its first character. Every column is a string whatever its declared type; an
  empty field stays ``''``; a quoted field may hold separators, ``""`` inside quotes is one quote,
  ``<esc><c>`` is ``c`` and a lone trailing escape is dropped (opencsv 2.3); text after a closing
  quote is appended; missing fields are NULL, extra fields ignored. Lines are parsed one by one
  (Hive's record reader splits lines first, so a quoted newline is not supported, as in Hive).
  Not reproduced: opencsv's treatment of malformed quoting (a quote inside an unquoted field, an
  unterminated quote: opencsv drops that field, here it is read up to the next separator) and
  ``escapeChar`` equal to ``quoteChar`` (read as RFC 4180 doubling).

* ``ParquetHiveSerDe``: each file read with pyarrow (INT96 as microseconds); columns matched by
  name case-insensitively (Hive's default), a column the file lacks is NULL, others are cast to
  the Hive type (integer/float widening, decimal, timestamp units, varchar/char truncation);
  a conversion Arrow cannot do safely raises :class:`InvalidInputError`.

Both text serdes honour the table parameters ``skip.header.line.count`` and
``skip.footer.line.count`` per file. Compressed text by extension: ``.gz`` and ``.bz2`` (Python's
C ``gzip``/``bz2`` stream decoders, multi-member streams included), ``.deflate`` (zlib, Hadoop's
DefaultCodec) and ``.zst`` when the ``zstandard`` package is installed; ``.snappy``, ``.lz4``,
``.lzo`` raise :class:`InvalidInputError`.

Files: ``file:`` URIs and plain absolute paths are opened directly; any other URI (``s3://``,
``strata:///...``) is streamed through ``fs.location_of(uri)[0].open_input(uri)`` and needs
``fs`` (else :class:`InvalidInputError`). Row order: file order, then line order.

Why not DuckDB's ``read_csv`` for the lines: it takes ``\\r`` and ``\\n`` of a ``\\r\\n`` pair as
two line ends (an extra empty record per Windows line end) and cannot skip footers per file, so
the line layer is Arrow's and DuckDB does the rest.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import re
import zlib
from collections.abc import Iterator
from contextlib import ExitStack
from typing import IO, Any
from urllib.parse import unquote, urlsplit

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from catalog.exceptions import InvalidInputError
from catalog.fs.namespace import Namespace
from catalog.models import Column, StorageDescriptor

LAZY_SIMPLE_SERDE = "org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe"
OPEN_CSV_SERDE = "org.apache.hadoop.hive.serde2.OpenCSVSerde"
PARQUET_SERDE = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"

#: Decoded text handed to Arrow's line splitter at a time (a line is never cut).
_CHUNK_BYTES = 16 << 20
_MAX_DECIMAL_PRECISION = 38
#: Placeholders for escaped escapes / escaped delimiters while splitting (Unicode noncharacters).
_P_ESC = "\ufdd0"
_P_DELIM = "\ufdd1"

_PRIMITIVES: dict[str, pa.DataType] = {
    "tinyint": pa.int8(),
    "smallint": pa.int16(),
    "int": pa.int32(),
    "integer": pa.int32(),
    "bigint": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "double precision": pa.float64(),
    "boolean": pa.bool_(),
    "string": pa.string(),
    "binary": pa.binary(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us"),
}
_INT_SQL = {"tinyint": "TINYINT", "smallint": "SMALLINT", "int": "INTEGER", "integer": "INTEGER",
            "bigint": "BIGINT"}


# -- Hive types -----------------------------------------------------------------------------------

def _split_top(s: str, sep: str = ",") -> list[str]:
    """``s`` split at ``sep`` outside angle brackets and parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(s):
        if ch in "<(":
            depth += 1
        elif ch in ">)":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    parts.append(s[start:])
    return [p.strip() for p in parts]


def _base_name(hive_type: str) -> str:
    return re.split(r"[<(]", hive_type.strip().lower(), maxsplit=1)[0].strip()


def _params(hive_type: str) -> list[int]:
    m = re.fullmatch(r"[a-z ]+\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)", hive_type.strip().lower())
    if not m:
        raise InvalidInputError(f"malformed Hive type '{hive_type}'")
    return [int(g) for g in m.groups() if g is not None]


def _decimal_ps(hive_type: str) -> tuple[int, int]:
    t = hive_type.strip().lower()
    if t == "decimal":
        return 10, 0  # Hive's default
    ps = _params(t)
    p, s = ps[0], (ps[1] if len(ps) > 1 else 0)
    if not 1 <= p <= _MAX_DECIMAL_PRECISION or not 0 <= s <= p:
        raise InvalidInputError(f"invalid decimal type '{hive_type}'")
    return p, s


def _length(hive_type: str) -> int:
    ps = _params(hive_type)
    if len(ps) != 1 or ps[0] < 1:
        raise InvalidInputError(f"invalid length in Hive type '{hive_type}'")
    return ps[0]


def hive_to_arrow_type(hive_type: str) -> pa.DataType:
    """The Arrow type of a Hive column type: integers by width, float32/float64,
    decimal128(p, s) (``decimal`` alone is decimal(10,0)), date32, timestamp[us] (Hive has
    nanoseconds; microseconds cover Hive's whole 0001-9999 range), string for
    string/char(n)/varchar(n), bool, binary; array/map/struct recursively. ``uniontype``
    and anything unknown raise :class:`InvalidInputError`."""
    t = hive_type.strip().lower()
    base = _base_name(t)
    if t in _PRIMITIVES:
        return _PRIMITIVES[t]
    if base == "decimal" or base == "numeric":
        return pa.decimal128(*_decimal_ps(t.replace("numeric", "decimal", 1)))
    if base in ("char", "varchar"):
        _length(t)
        return pa.string()
    if base in ("array", "map", "struct") and t.endswith(">") and "<" in t:
        inner = hive_type.strip()[hive_type.index("<") + 1:-1]
        if base == "array":
            return pa.list_(hive_to_arrow_type(inner))
        if base == "map":
            kv = _split_top(inner)
            if len(kv) != 2:
                raise InvalidInputError(f"malformed Hive type '{hive_type}'")
            return pa.map_(hive_to_arrow_type(kv[0]), hive_to_arrow_type(kv[1]))
        fields = []
        for part in _split_top(inner):
            name, sep, ftype = part.partition(":")
            if not sep or not name.strip():
                raise InvalidInputError(f"malformed Hive type '{hive_type}'")
            fields.append(pa.field(name.strip(), hive_to_arrow_type(ftype)))
        return pa.struct(fields)
    raise InvalidInputError(f"unsupported Hive type '{hive_type}'")


def arrow_schema(columns: list[Column]) -> pa.Schema:
    return pa.schema([pa.field(c.name, hive_to_arrow_type(c.type)) for c in columns])


# -- opening files --------------------------------------------------------------------------------

def _local_path(uri: str) -> str | None:
    if uri.startswith("/"):
        return uri
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return unquote(parts.path)
    return None


def _open_raw(uri: str, fs: Namespace | None) -> Any:
    path = _local_path(uri)
    if path is not None:
        try:
            return open(path, "rb")
        except OSError as e:
            raise InvalidInputError(f"cannot read source file {uri}: {e}") from e
    if fs is None:
        raise InvalidInputError(f"source file {uri} is not local and no namespace was given")
    ufs, ufs_uri = fs.location_of(uri)
    return ufs.open_input(ufs_uri)


class _ZlibReader:
    """A read()-able zlib (Hadoop DefaultCodec, ``.deflate``) decompressing stream."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.d = zlib.decompressobj()

    def read(self, n: int) -> bytes:
        while True:
            block = self.raw.read(n)
            if not block:
                return self.d.flush()
            out = self.d.decompress(block)
            if out:
                return out


def _decompressed(uri: str, raw: Any) -> Any:
    name = urlsplit(uri).path.lower() if "://" in uri else uri.lower()
    if name.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if name.endswith(".bz2"):
        return bz2.BZ2File(raw, mode="rb")
    if name.endswith(".deflate"):
        return _ZlibReader(raw)
    if name.endswith(".zst"):
        try:
            import zstandard  # type: ignore[import-not-found]
        except ImportError as e:
            raise InvalidInputError(f"{uri}: zstd text needs the zstandard package") from e
        return zstandard.ZstdDecompressor().stream_reader(raw)
    for ext in (".snappy", ".lz4", ".lzo", ".lzo_deflate", ".br"):
        if name.endswith(ext):
            raise InvalidInputError(f"{uri}: {ext[1:]} compressed text is not supported yet")
    return raw


# -- text lines -----------------------------------------------------------------------------------

_LINE_END = r"\r\n|\r|\n"


def _split_lines(text: str, final: bool) -> pa.Array:
    """The lines of ``text`` (which ends with a line end unless ``final``)."""
    if not text:
        return pa.array([], pa.large_string())
    parts = pc.split_pattern_regex(pa.array([text], pa.large_string()), _LINE_END)
    lines = pc.list_flatten(parts)
    if not final or text[-1] in "\r\n":
        lines = lines.slice(0, len(lines) - 1)  # the empty piece after the last line end
    return lines


def _file_lines(uri: str, fs: Namespace | None, encoding: str) -> pa.ChunkedArray:
    """All lines of one text file, as Hadoop's LineRecordReader cuts them."""
    try:
        codec = codecs.lookup(encoding)
    except LookupError as e:
        raise InvalidInputError(f"unknown serialization.encoding '{encoding}'") from e
    if codec.name == "utf-8":
        codec = codecs.lookup("utf-8-sig")  # drop a byte order mark, as Hadoop does
    decoder = codec.incrementaldecoder(errors="replace")
    chunks: list[pa.Array] = []
    with ExitStack() as stack:
        raw = stack.enter_context(_open_raw(uri, fs))
        stream: IO[bytes] = _decompressed(uri, raw)
        if stream is not raw and hasattr(stream, "close"):
            stack.callback(stream.close)
        pending = ""
        while True:
            try:
                block = stream.read(_CHUNK_BYTES)
            except (OSError, EOFError, zlib.error) as e:
                raise InvalidInputError(f"cannot read source file {uri}: {e}") from e
            if not block:
                pending += decoder.decode(b"", final=True)
                chunks.append(_split_lines(pending, final=True))
                break
            pending += decoder.decode(block)
            cut = pending.rfind("\n")
            if cut < 0:
                cr = pending.rfind("\r")
                cut = cr if 0 <= cr < len(pending) - 1 else -1
            if cut >= 0:
                chunks.append(_split_lines(pending[:cut + 1], final=False))
                pending = pending[cut + 1:]
    return pa.chunked_array(chunks, pa.large_string())


def _skip_count(table_parameters: dict[str, str], key: str) -> int:
    value = table_parameters.get(key)
    if value is None or not value.strip():
        return 0
    try:
        return max(0, int(value.strip()))
    except ValueError as e:
        raise InvalidInputError(f"table parameter {key}='{value}' is not a number") from e


def _skip(lines: pa.ChunkedArray, header: int, footer: int) -> pa.ChunkedArray:
    n = len(lines)
    start = min(header, n)
    stop = max(start, n - footer)
    return lines.slice(start, stop - start)


# -- SQL building ---------------------------------------------------------------------------------

def _re_char(ch: str) -> str:
    """``ch`` as an RE2 literal."""
    return "\\x{%x}" % ord(ch)


def _sql_str(s: str) -> str:
    """A SQL string literal of ``s`` (control characters included verbatim)."""
    return "'" + s.replace("'", "''") + "'"


def _serde_byte(value: str | None, default: str) -> str:
    """Hive's ``LazyUtils.getByte``: a byte number names that byte, else the first character."""
    if value is None or value == "":
        return default
    try:
        b = int(value)
    except ValueError:
        return value[0]
    if -128 <= b <= 127:
        return chr(b & 0xFF)
    return value[0]


_JAVA_BLANKS = r"^[\x{0}-\x{20}]+|[\x{0}-\x{20}]+$"


def _typed(f: str, unescaped: str, hive_type: str, name: str) -> str:
    """SQL converting the raw field ``f`` (VARCHAR, NULL when missing) to ``hive_type`` as
    Hive's lazy objects parse it; ``unescaped`` is the field with escapes resolved."""
    t = hive_type.strip().lower()
    base = _base_name(t)
    if t in _INT_SQL:
        return (f"CASE WHEN regexp_full_match({f}, '[+-]?[0-9]+(\\.[0-9]*)?') THEN "
                f"TRY_CAST(regexp_extract({f}, '^[+-]?[0-9]+') AS {_INT_SQL[t]}) END")
    if t in ("float", "double", "double precision"):
        v = f"regexp_replace({f}, '{_JAVA_BLANKS}', '', 'g')"
        num = r"[+-]?(NaN|Infinity|([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?[fFdD]?)"
        sql_t = "FLOAT" if t == "float" else "DOUBLE"
        return (f"CASE WHEN regexp_full_match({v}, '{num}') THEN "
                f"TRY_CAST(regexp_replace({v}, '[fFdD]$', '') AS {sql_t}) END")
    if base in ("decimal", "numeric"):
        p, s = _decimal_ps(t.replace("numeric", "decimal", 1))
        v = f"trim({f}, ' ')"
        num = r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?"
        return (f"CASE WHEN regexp_full_match({v}, '{num}') THEN "
                f"TRY_CAST({v} AS DECIMAL({p},{s})) END")
    if t == "boolean":
        return (f"CASE lower({f}) WHEN 'true' THEN true WHEN 'false' THEN false END")
    if t == "date":
        v = f"split_part(trim({f}), ' ', 1)"
        return (f"CASE WHEN regexp_full_match({v}, '[0-9]{{4}}-[0-9]{{1,2}}-[0-9]{{1,2}}') "
                f"THEN TRY_CAST({v} AS DATE) END")
    if t == "timestamp":
        v = f"trim({f})"
        ts = (r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}"
              r"([ T][0-9]{1,2}:[0-9]{1,2}(:[0-9]{1,2}(\.[0-9]{1,9})?)?)?")
        return (f"CASE WHEN regexp_full_match({v}, '{ts}') "
                f"THEN TRY_CAST({v} AS TIMESTAMP) END")
    if t == "string":
        return unescaped
    if base == "varchar":
        return f"left({unescaped}, {_length(t)})"
    if base == "char":
        return f"rtrim(left({unescaped}, {_length(t)}), ' ')"
    if t == "binary":
        b64 = f"regexp_replace(translate({f}, '-_', '+/'), '[=\\s]', '', 'g')"
        trimmed = f"left({b64}, length({b64}) - (CASE WHEN length({b64}) % 4 = 1 THEN 1 ELSE 0 END))"
        padded = f"({trimmed} || repeat('=', (4 - length({trimmed}) % 4) % 4))"
        return (f"CASE WHEN regexp_full_match({f}, '[A-Za-z0-9+/=_\\-\\s]*') "
                f"THEN from_base64({padded}) ELSE encode({unescaped}) END")
    hive_to_arrow_type(hive_type)  # raises for unknown types
    raise InvalidInputError(
        f"column '{name}' of type '{hive_type}': complex types in text files are not supported yet")


def _lazy_simple_sql(columns: list[Column], params: dict[str, str]) -> str:
    delim = _serde_byte(params.get("field.delim", params.get("serialization.format")), "\x01")
    null_format = params.get("serialization.null.format", "\\N")
    esc_param = params.get("escape.delim")
    esc = _serde_byte(esc_param, "\\") if esc_param is not None else None
    rest = params.get("serialization.last.column.takes.rest", "").strip().lower() == "true"
    crlf = params.get("serialization.escape.crlf", "").strip().lower() == "true"
    n = len(columns)

    line = "coalesce(line, '')"
    if esc is not None and esc != delim:
        protected = (f"replace(replace({line}, {_sql_str(esc + esc)}, '{_P_ESC}'), "
                     f"{_sql_str(esc + delim)}, '{_P_DELIM}')")
    else:
        protected = line
    fields = f"string_split({protected}, {_sql_str(delim)})"
    selects = []
    for i, col in enumerate(columns):
        if rest and i == n - 1:
            part = (f"CASE WHEN len(fields) >= {n} THEN "
                    f"array_to_string(fields[{n}:], {_sql_str(delim)}) END")
        else:
            part = f"fields[{i + 1}]"
        if esc is not None and esc != delim:
            raw = (f"replace(replace({part}, '{_P_ESC}', {_sql_str(esc + esc)}), "
                   f"'{_P_DELIM}', {_sql_str(esc + delim)})")
            u = f"replace({part}, '{_P_DELIM}', {_sql_str(delim)})"
            if crlf:
                u = (f"replace(replace({u}, {_sql_str(esc + 'r')}, chr(13)), "
                     f"{_sql_str(esc + 'n')}, chr(10))")
            u = f"regexp_replace({u}, '{_re_char(esc)}(.)', '\\1', 'g')"
            unescaped = f"replace({u}, '{_P_ESC}', {_sql_str(esc)})"
        else:
            raw = part
            unescaped = part
        selects.append(f"CASE WHEN {raw} = {_sql_str(null_format)} THEN NULL ELSE "
                       f"{_typed(raw, unescaped, col.type, col.name)} END AS c{i}")
    return (f"SELECT {', '.join(selects) or 'NULL AS c0'} "
            f"FROM (SELECT {fields} AS fields FROM lines)")


def _open_csv_sql(columns: list[Column], params: dict[str, str]) -> str:
    def first(key: str, default: str) -> str:
        v = params.get(key)
        return v[0] if v else default

    sep, quote, esc = first("separatorChar", ","), first("quoteChar", '"'), first("escapeChar", "\\")
    S, Q, E = _re_char(sep), _re_char(quote), _re_char(esc)
    if esc == quote:
        quoted = f"{Q}(?:[^{Q}]|{Q}{Q})*{Q}"
        inner_re = f"{Q}({Q})"
    else:
        quoted = f"{Q}(?:[^{Q}{E}]|{E}.|{Q}{Q})*{Q}"
        inner_re = f"{Q}({Q})|{E}(.?)"
    token = f"{S}({quoted}[^{S}]*|[^{S}]*)"
    tokens = f"regexp_extract_all({_sql_str(sep)} || coalesce(line, ''), '{token}', 1)"
    full_q = f"^{Q}((?:[^{Q}{E}]|{E}.|{Q}{Q})*){Q}(.*)$" if esc != quote else \
        f"^{Q}((?:[^{Q}]|{Q}{Q})*){Q}(.*)$"
    plain_unesc = f"{E}(.?)" if esc != quote else "(?!)"
    selects = []
    for i in range(len(columns)):
        tok = f"toks[{i + 1}]"
        inner = f"regexp_replace(regexp_extract({tok}, '{full_q}', 1), '{inner_re}', '\\1\\2', 'g')"
        after = f"regexp_extract({tok}, '{full_q}', 2)"
        if esc != quote:
            after = f"regexp_replace({after}, '{plain_unesc}', '\\1', 'g')"
            plain = f"regexp_replace({tok}, '{plain_unesc}', '\\1', 'g')"
        else:
            plain = tok
        selects.append(f"CASE WHEN regexp_matches({tok}, '{full_q}') THEN {inner} || {after} "
                       f"ELSE {plain} END AS c{i}")
    return (f"SELECT {', '.join(selects) or 'NULL AS c0'} FROM (SELECT {tokens} AS toks FROM lines)")


# -- reading --------------------------------------------------------------------------------------

def _serde_kind(sd: StorageDescriptor) -> str:
    lib = (sd.serde.serialization_lib or "").strip()
    if not lib or lib == LAZY_SIMPLE_SERDE:
        if "parquet" in (sd.input_format or "").lower():
            return "parquet"
        return "lazy"
    if lib == OPEN_CSV_SERDE:
        return "csv"
    if lib == PARQUET_SERDE or lib.endswith(".ParquetHiveSerDe"):
        return "parquet"
    raise InvalidInputError(f"serde {lib} is not supported as a transformation source yet")


def _text_table(con: duckdb.DuckDBPyConnection, lines: pa.ChunkedArray, sql: str,
                schema: pa.Schema) -> pa.Table:
    con.register("lines", pa.table({"line": lines}))
    try:
        got = con.execute(sql).arrow().read_all()
    finally:
        con.unregister("lines")
    got = got.rename_columns([f.name for f in schema])
    return got.cast(schema)


def _cast_parquet_column(col: pa.ChunkedArray, hive_type: str, target: pa.DataType,
                         where: str) -> pa.ChunkedArray:
    t = hive_type.strip().lower()
    base = _base_name(t)
    try:
        if pa.types.is_timestamp(target) and pa.types.is_timestamp(col.type):
            return pc.cast(col, target, safe=False)
        out = pc.cast(col, target)
        if base == "varchar":
            out = pc.utf8_slice_codeunits(out, 0, _length(t))
        elif base == "char":
            out = pc.utf8_rtrim(pc.utf8_slice_codeunits(out, 0, _length(t)), characters=" ")
        return out
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
        raise InvalidInputError(
            f"{where}: cannot read Parquet {col.type} as Hive {hive_type}: {e}") from e


def _parquet_table(uri: str, fs: Namespace | None, columns: list[Column],
                   schema: pa.Schema) -> pa.Table:
    with _open_raw(uri, fs) as f:
        try:
            data = pq.read_table(f, coerce_int96_timestamp_unit="us")
        except (pa.ArrowException, OSError) as e:
            raise InvalidInputError(f"cannot read Parquet file {uri}: {e}") from e
    by_name = {name.lower(): i for i, name in enumerate(data.column_names)}
    arrays = []
    for col, field in zip(columns, schema):
        i = by_name.get(col.name.lower())
        if i is None:
            arrays.append(pa.nulls(data.num_rows, field.type))
        else:
            arrays.append(_cast_parquet_column(data.column(i), col.type, field.type,
                                               f"{uri} column '{col.name}'"))
    return pa.Table.from_arrays(arrays, schema=schema)


def iter_source_tables(files: list[str], sd: StorageDescriptor, columns: list[Column],
                       table_parameters: dict[str, str],
                       fs: Namespace | None = None) -> Iterator[pa.Table]:
    """One Arrow table per file of ``files`` (in order), typed as :func:`read_source`."""
    kind = _serde_kind(sd)
    if not columns:
        raise InvalidInputError("no columns to read")
    schema = arrow_schema(columns) if kind == "parquet" else pa.schema(
        [pa.field(c.name, pa.string() if kind == "csv" else hive_to_arrow_type(c.type))
         for c in columns])
    if kind == "parquet":
        for uri in files:
            yield _parquet_table(uri, fs, columns, schema)
        return
    params = sd.serde.parameters
    sql = _lazy_simple_sql(columns, params) if kind == "lazy" else _open_csv_sql(columns, params)
    header = _skip_count(table_parameters, "skip.header.line.count")
    footer = _skip_count(table_parameters, "skip.footer.line.count")
    encoding = params.get("serialization.encoding") or "utf-8"
    con = duckdb.connect()
    try:
        for uri in files:
            lines = _skip(_file_lines(uri, fs, encoding), header, footer)
            yield _text_table(con, lines, sql, schema)
    finally:
        con.close()


def read_source(files: list[str], sd: StorageDescriptor, columns: list[Column],
                table_parameters: dict[str, str], fs: Namespace | None = None) -> pa.Table:
    """The rows of ``files`` read as Hive reads them with ``sd``'s serde, typed by ``columns``
    (see the module docstring for the exact semantics). Raises :class:`InvalidInputError` for an
    unsupported serde, type or compression, and for an unreadable file."""
    tables = list(iter_source_tables(files, sd, columns, table_parameters, fs))
    if not tables:
        kind = _serde_kind(sd)
        return pa.Table.from_batches([], pa.schema(
            [pa.field(c.name, pa.string() if kind == "csv" else hive_to_arrow_type(c.type))
             for c in columns]))
    return pa.concat_tables(tables)


__all__ = ["hive_to_arrow_type", "arrow_schema", "read_source", "iter_source_tables",
           "LAZY_SIMPLE_SERDE", "OPEN_CSV_SERDE", "PARQUET_SERDE"]
