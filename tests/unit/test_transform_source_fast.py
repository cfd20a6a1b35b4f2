"""The LazySimpleSerDe fast paths (DuckDB's CSV reader over normalized text: the typed route,
where DuckDB parses the numbers, dates and booleans itself, and the VARCHAR route, where SQL
types every field as Hive does) against the line layer (Arrow lines + one SQL query): same
rows, same types, for every text shape that matters, and for every field value where DuckDB's
typed reader and Hive's LazySimpleSerDe could disagree."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from catalog.models import Column, SerDe, StorageDescriptor
from catalog.transform import source
from catalog.transform.source import LAZY_SIMPLE_SERDE, iter_source_batches, read_source

COLS = [Column(name="i", type="int"), Column(name="s", type="string"),
        Column(name="d", type="decimal(7,2)"), Column(name="b", type="bigint")]


def _sd(**params: str) -> StorageDescriptor:
    return StorageDescriptor(serde=SerDe(serialization_lib=LAZY_SIMPLE_SERDE, parameters=params))


def _write(tmp_path: Path, name: str, data: bytes) -> str:
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def _both(monkeypatch: pytest.MonkeyPatch, files: list[str], sd: StorageDescriptor,
          cols: list[Column], tparams: dict[str, str]) -> tuple[pa.Table, pa.Table, int]:
    """(fast path result, line-layer result, fast batches run)."""
    fast, varchar, slow, routes = _routes(monkeypatch, files, sd, cols, tparams)
    assert fast.schema == varchar.schema
    assert fast.to_pylist() == varchar.to_pylist()
    return fast, slow, routes["typed"] + routes["varchar"]


def _routes(monkeypatch: pytest.MonkeyPatch, files: list[str], sd: StorageDescriptor,
            cols: list[Column], tparams: dict[str, str]
            ) -> tuple[pa.Table, pa.Table, pa.Table, dict[str, int]]:
    """(typed route allowed, VARCHAR route only, line layer only, routes of the first read)."""
    readers: list[source._BatchReader] = []
    real_init = source._BatchReader.__init__

    def recording(self: source._BatchReader, *args: object, **kwargs: object) -> None:
        real_init(self, *args, **kwargs)  # type: ignore[arg-type]
        readers.append(self)

    monkeypatch.setattr(source._BatchReader, "__init__", recording)
    fast = read_source(files, sd, cols, tparams)
    routes = {k: sum(r.routes[k] for r in readers) for k in ("typed", "varchar", "lines")}
    monkeypatch.setattr(source, "_typed_columns", lambda columns, delim, null_format: None)
    varchar = read_source(files, sd, cols, tparams)
    monkeypatch.setattr(source, "_fast_lazy_simple", lambda params: None)
    slow = read_source(files, sd, cols, tparams)
    monkeypatch.undo()
    return fast, varchar, slow, routes


SHAPES: dict[str, bytes] = {
    "plain_trailing_delim": b"1|a|1.50|10|\n2|b|-2.25|20|\n",
    "crlf_and_lone_cr": b"1|a|1.5|1\r\n2|b|2|2\r3|c|3|3\r\n",
    "empty_lines": b"\n1|a|1|1\n\n\n2||2|2\n\n",
    "no_final_newline": b"1|a|1|1\n2|b|2|2",
    "missing_and_extra": b"1\n2|x\n3|y|3.333|3|extra|more\n",
    "null_format": b"\\N|\\N|\\N|\\N\n|||\n",
    "hive_numbers": b"+7|q| 1.005 |007\n7.9|q|1e2|-0\n 7|q|123456.7|9223372036854775808\n"
                    b"0x1F|q|.5|1.\nabc|q|-.|+\n",
    "quotes_backslashes": b'1|"a|b"|2|3\n4|\\x\\|5|6\n',
    "bom_and_utf8": "\ufeff1|é ü|1|1\n2|\ufeffx|2|2\n".encode(),
    "invalid_utf8": b"1|a\xffb|1|1\n2|\xc3|2|2\n",
    "nul_bytes": b"1|a\x00b|1|1\n",
    "empty": b"",
    "only_newline": b"\n",
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_fast_path_matches_line_layer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      shape: str) -> None:
    f = _write(tmp_path, "a.txt", SHAPES[shape])
    fast, slow, runs = _both(monkeypatch, [f], _sd(**{"field.delim": "|"}), COLS, {})
    assert fast.schema == slow.schema
    assert fast.to_pylist() == slow.to_pylist()
    if SHAPES[shape].strip(b"\n"):
        assert runs == 1  # the fast path did read it


def test_fast_path_values(tmp_path: Path) -> None:
    f = _write(tmp_path, "a.txt", SHAPES["hive_numbers"] + SHAPES["empty_lines"])
    rows = read_source([f], _sd(**{"field.delim": "|"}), COLS, {}).to_pylist()
    assert rows[0] == {"i": 7, "s": "q", "d": Decimal("1.01"), "b": 7}  # half-up, trimmed
    assert rows[1] == {"i": 7, "s": "q", "d": Decimal("100.00"), "b": 0}  # 7.9 truncated
    assert rows[2] == {"i": None, "s": "q", "d": None, "b": None}  # blank int, too wide, range
    assert rows[3]["i"] is None and rows[3]["d"] == Decimal("0.50") and rows[3]["b"] == 1
    assert rows[5] == {"i": None, "s": None, "d": None, "b": None}  # empty line: i is ''
    empty_string_first = read_source([f], _sd(**{"field.delim": "|"}),
                                     [Column(name="s", type="string")], {}).to_pylist()
    assert empty_string_first[5] == {"s": ""}


def test_header_footer_and_many_files_in_one_batch(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    files = [_write(tmp_path, f"f{i}.txt", f"h{i}\r\n{i}|a|1|1\r\n{i}|b|2|2\nfooter".encode())
             for i in range(5)]
    params = {"skip.header.line.count": "1", "skip.footer.line.count": "1"}
    fast, slow, runs = _both(monkeypatch, files, _sd(**{"field.delim": "|"}), COLS, params)
    assert fast.to_pylist() == slow.to_pylist()
    assert [r["i"] for r in fast.to_pylist()] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert runs == 1  # five files, one DuckDB query


def test_big_file_is_streamed_in_pieces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = b"".join(b"%d|s%d|%d.25|%d\r\n" % (i, i, i % 1000, i) for i in range(60_000))
    f = _write(tmp_path, "big.txt", b"head\n" + lines + b"foot1\nfoot2\n")
    monkeypatch.setattr(source, "batch_bytes_for", lambda limit: 256 << 10)
    params = {"skip.header.line.count": "1", "skip.footer.line.count": "2"}
    tables = list(iter_source_batches([f], _sd(**{"field.delim": "|"}), COLS, params))
    assert len(tables) > 3  # several batches, not one file-sized table
    got = pa.concat_tables(tables)
    assert got.num_rows == 60_000
    assert got.column("i").to_pylist() == list(range(60_000))
    assert got.column("d")[59_999].as_py() == Decimal("999.25")


def test_escape_and_rest_take_the_line_layer(tmp_path: Path) -> None:
    assert source._fast_lazy_simple({"field.delim": "|", "escape.delim": "\\"}) is None
    assert source._fast_lazy_simple({"serialization.last.column.takes.rest": "true"}) is None
    assert source._fast_lazy_simple({"field.delim": "|"}) == ("|", "\\N")
    f = _write(tmp_path, "a.txt", b"1|a\\|b|2|3\n")
    t = read_source([f], _sd(**{"field.delim": "|", "escape.delim": "\\"}), COLS, {})
    assert t.to_pylist() == [{"i": 1, "s": "a|b", "d": Decimal("2.00"), "b": 3}]


def test_marker_in_data_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = _write(tmp_path, "a.txt", ("\ufdd2|x|1|1\n\n").encode())
    fast, slow, runs = _both(monkeypatch, [f], _sd(**{"field.delim": "|"}),
                             [Column(name="s", type="string")], {})
    assert runs == 0
    assert fast.to_pylist() == slow.to_pylist() == [{"s": "\ufdd2"}, {"s": ""}]


# -- the typed route ------------------------------------------------------------------------------

#: Route each shape takes with COLS (int, string, decimal(7,2), bigint).
SHAPE_ROUTES = {
    "plain_trailing_delim": "typed", "crlf_and_lone_cr": "typed", "no_final_newline": "typed",
    "missing_and_extra": "typed", "bom_and_utf8": "typed", "invalid_utf8": "typed",
    "nul_bytes": "typed",
    "empty_lines": "varchar",  # DuckDB would skip the empty lines
    "null_format": "varchar",  # an empty string field is '' for Hive, NULL for the typed route
    "hive_numbers": "varchar",  # blanks, '+', exponents, fractions in integer columns, hex
    "quotes_backslashes": "varchar",  # '"a' is not a decimal
}


@pytest.mark.parametrize("shape", sorted(SHAPE_ROUTES))
def test_shapes_take_the_expected_route(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        shape: str) -> None:
    f = _write(tmp_path, "a.txt", SHAPES[shape])
    fast, varchar, slow, routes = _routes(monkeypatch, [f], _sd(**{"field.delim": "|"}), COLS, {})
    assert fast.schema == varchar.schema == slow.schema
    assert fast.to_pylist() == varchar.to_pylist() == slow.to_pylist()
    want = SHAPE_ROUTES[shape]
    assert routes[want] == 1, routes
    if want == "varchar":
        assert routes["typed"] == 0


class _Readers:
    """One batch reader per route over one DuckDB connection, for many small reads."""

    def __init__(self, tmp_path: Path, cols: list[Column], params: dict[str, str]) -> None:
        self.con = duckdb.connect()
        schema = source._source_schema("lazy", cols)
        self.typed = source._BatchReader("lazy", cols, params, schema, self.con, str(tmp_path))
        self.varchar = source._BatchReader("lazy", cols, params, schema, self.con, str(tmp_path))
        self.varchar.typed_check = ""
        self.lines = source._BatchReader("lazy", cols, params, schema, self.con, str(tmp_path))
        self.lines.fast = None

    def read(self, text: bytes) -> tuple[list[dict[str, object]], str]:
        """The rows of ``text`` (all three routes agree) and how the typed reader read it:
        'typed', 'refused' (DuckDB failed, the VARCHAR route read it) or 'varchar' (the
        pattern check sent it there)."""
        before = dict(self.typed.routes)
        got = self.typed.tables([text]).to_pylist()
        assert got == self.varchar.tables([text]).to_pylist() == \
            self.lines.tables([text]).to_pylist(), text
        after = self.typed.routes
        route = next(k for k in ("typed", "refused", "varchar", "lines") if after[k] > before[k])
        return got, route


D = Decimal
#: (Hive type, field, Hive's value, how the typed route handles it): 'same' (DuckDB reads
#: Hive's value), 'pattern' (the batch check refuses the field: DuckDB would read something
#: else or something Hive does not), 'duckdb' (DuckDB refuses it; Hive reads NULL).
FIELDS: list[tuple[str, str, object, str]] = [
    ("int", "7", 7, "same"), ("int", "-7", -7, "same"), ("int", "-0", 0, "same"),
    ("int", "007", 7, "same"),  # leading zeros
    ("int", "", None, "same"), ("int", "\\N", None, "same"),
    ("int", " 7", None, "pattern"), ("int", "7 ", None, "pattern"),  # blanks: Hive NULL
    ("int", "\t7", None, "pattern"), ("int", "+7", 7, "pattern"),
    ("int", "7.9", 7, "pattern"),  # Hive truncates, DuckDB rounds to 8
    ("int", "-7.5", -7, "pattern"), ("int", "7.", 7, "pattern"),
    ("int", ".5", None, "pattern"),  # DuckDB: 1
    ("int", "1e2", None, "pattern"),  # DuckDB: 100
    ("int", "0x1F", None, "pattern"), ("int", "0b11", None, "pattern"),  # DuckDB: 31, 3
    ("int", "1_000", None, "pattern"),  # DuckDB: 1000
    ("int", "2147483647", 2147483647, "same"), ("int", "-2147483648", -2147483648, "same"),
    ("int", "2147483648", None, "duckdb"), ("int", "-2147483649", None, "duckdb"),  # range
    ("int", "-", None, "pattern"), ("int", "--1", None, "pattern"), ("int", "1-2", None, "pattern"),
    ("tinyint", "127", 127, "same"), ("tinyint", "128", None, "duckdb"),
    ("tinyint", "-128", -128, "same"), ("tinyint", "-129", None, "duckdb"),
    ("smallint", "32767", 32767, "same"), ("smallint", "32768", None, "duckdb"),
    ("bigint", "9223372036854775807", 9223372036854775807, "same"),
    ("bigint", "-9223372036854775808", -9223372036854775808, "same"),
    ("bigint", "9223372036854775808", None, "duckdb"),
    ("bigint", "0000000000000000000000000000007", 7, "same"),
    ("decimal(7,2)", "1.5", D("1.50"), "same"), ("decimal(7,2)", "-2.25", D("-2.25"), "same"),
    ("decimal(7,2)", "5.", D("5.00"), "same"), ("decimal(7,2)", ".5", D("0.50"), "same"),
    ("decimal(7,2)", "-.5", D("-0.50"), "same"), ("decimal(7,2)", "007.50", D("7.50"), "same"),
    ("decimal(7,2)", "-0.00", D("0.00"), "same"),
    ("decimal(7,2)", "", None, "same"), ("decimal(7,2)", "\\N", None, "same"),
    ("decimal(7,2)", "1.005", D("1.01"), "same"),  # rounded half-up
    ("decimal(7,2)", "-1.005", D("-1.01"), "same"), ("decimal(7,2)", "1.0049", D("1.00"), "same"),
    ("decimal(7,2)", "0.0000000001", D("0.00"), "same"),
    ("decimal(7,2)", "99999.994", D("99999.99"), "same"),
    ("decimal(7,2)", "99999.995", None, "duckdb"),  # rounds to 6 integer digits: Hive NULL
    ("decimal(7,2)", "123456.7", None, "duckdb"),  # too many integer digits
    ("decimal(7,2)", "1e2", D("100.00"), "pattern"), ("decimal(7,2)", "+1.5", D("1.50"), "pattern"),
    ("decimal(7,2)", " 1.5", D("1.50"), "pattern"), ("decimal(7,2)", "1.5 ", D("1.50"), "pattern"),
    ("decimal(7,2)", "\t1.5", None, "pattern"),  # Hive trims spaces only, DuckDB tabs too
    ("decimal(7,2)", "1_000", None, "pattern"), ("decimal(7,2)", "1.2.3", None, "pattern"),
    ("decimal(7,2)", "-", None, "duckdb"), ("decimal(7,2)", ".", None, "duckdb"),
    ("decimal(7,2)", "-.", None, "duckdb"),
    ("decimal(38,10)", "1234567890123456789012345678.1234567890",
     D("1234567890123456789012345678.1234567890"), "same"),
    ("decimal(38,10)", "12345678901234567890123456789.1", None, "duckdb"),
    ("decimal", "12.5", D("13"), "same"), ("decimal", "-12.5", D("-13"), "same"),
    ("decimal(18,18)", "0.1234567890123456789", D("0.123456789012345679"), "same"),
    ("date", "2024-01-05", dt.date(2024, 1, 5), "same"),
    ("date", "2024-02-29", dt.date(2024, 2, 29), "same"),
    ("date", "0001-01-01", dt.date(1, 1, 1), "same"),
    ("date", "9999-12-31", dt.date(9999, 12, 31), "same"),
    ("date", "", None, "same"), ("date", "\\N", None, "same"),
    ("date", "2024-1-5", dt.date(2024, 1, 5), "pattern"),
    ("date", " 2024-01-05", dt.date(2024, 1, 5), "pattern"),
    ("date", "2024-01-05 12:00:00", dt.date(2024, 1, 5), "pattern"),
    ("date", "2024/01/05", None, "pattern"), ("date", "20240105", None, "pattern"),
    ("date", "2023-02-29", None, "duckdb"), ("date", "2024-02-30", None, "duckdb"),  # impossible
    ("date", "2024-13-01", None, "duckdb"), ("date", "2024-00-10", None, "duckdb"),
    ("boolean", "true", True, "same"), ("boolean", "false", False, "same"),
    ("boolean", "TRUE", True, "same"), ("boolean", "False", False, "same"),
    ("boolean", "tRuE", True, "same"), ("boolean", "", None, "same"),
    ("boolean", "t", None, "pattern"), ("boolean", "1", None, "pattern"),  # DuckDB: true
    ("boolean", "yes", None, "pattern"), ("boolean", " true", None, "pattern"),
    # VARCHAR columns next to typed ones: '' is a value for strings and binary, not NULL.
    ("string", "", "", "pattern"), ("string", "\\N", None, "same"), ("string", "a", "a", "same"),
    ("varchar(3)", "", "", "pattern"), ("char(3)", "", "", "pattern"),
    ("binary", "", b"", "pattern"),
    ("double", "", None, "same"), ("double", " 1.5 ", 1.5, "same"), ("double", "1e2", 100.0, "same"),
    ("timestamp", "", None, "same"),
]


@pytest.mark.parametrize("first", [True, False], ids=["first", "second"])
def test_every_divergent_field_is_read_as_hive_reads_it(tmp_path: Path, first: bool) -> None:
    """Each field alone in a batch, as the first column (whose empty field is also an empty
    line's) or the second, next to an int column that always takes the typed route."""
    for hive_type in dict.fromkeys(t for t, _, _, _ in FIELDS):
        cols = [Column(name="v", type=hive_type), Column(name="k", type="int")]
        if not first:
            cols.reverse()
        readers = _Readers(tmp_path, cols, {"field.delim": "|"})
        for t, field, want, how in FIELDS:
            if t != hive_type:
                continue
            line = f"{field}|1\n" if first else f"1|{field}\n"
            rows, route = readers.read(line.encode())
            assert rows == [{"v": want, "k": 1}], (hive_type, field, rows)
            expect = {"same": "typed", "pattern": "varchar", "duckdb": "refused"}[how]
            if first and field in ("-", ".", "-.") and t.startswith("decimal"):
                expect = "varchar"  # the first field's pattern (not empty) is narrower
            assert route == expect, (hive_type, field, route)


def test_null_formats_on_the_typed_route(tmp_path: Path) -> None:
    cols = [Column(name="s", type="string"), Column(name="i", type="int"),
            Column(name="d", type="date")]
    empty = _Readers(tmp_path, cols, {"field.delim": "|", "serialization.null.format": ""})
    rows, route = empty.read(b"||\n\\N|\\N|\\N\n")  # '' is NULL for every type, \N is a string
    assert route == "varchar"  # '\N' is no int: the VARCHAR route's NULL
    assert rows == [{"s": None, "i": None, "d": None}, {"s": "\\N", "i": None, "d": None}]
    rows, route = empty.read(b"||\nx|3|2024-01-05\n")
    assert route == "typed"
    assert rows == [{"s": None, "i": None, "d": None}, {"s": "x", "i": 3, "d": dt.date(2024, 1, 5)}]
    word = _Readers(tmp_path, cols, {"field.delim": "|", "serialization.null.format": "NULL"})
    rows, route = word.read(b"NULL|NULL|NULL\nx||\n")
    assert route == "typed"
    assert rows == [{"s": None, "i": None, "d": None}, {"s": "x", "i": None, "d": None}]
    rows, route = word.read(b"|1|\n")  # '' is a string here
    assert route == "varchar" and rows == [{"s": "", "i": 1, "d": None}]


def test_missing_and_extra_fields_and_empty_lines(tmp_path: Path) -> None:
    cols = [Column(name="i", type="int"), Column(name="d", type="decimal(5,1)"),
            Column(name="s", type="string")]
    readers = _Readers(tmp_path, cols, {"field.delim": "|"})
    rows, route = readers.read(b"1\n2|2.5\n3|3.5|x|extra|more\n4|4|y|\n|\n||z\n")
    assert route == "typed"
    assert rows == [{"i": 1, "d": None, "s": None}, {"i": 2, "d": D("2.5"), "s": None},
                    {"i": 3, "d": D("3.5"), "s": "x"}, {"i": 4, "d": D("4.0"), "s": "y"},
                    {"i": None, "d": None, "s": None}, {"i": None, "d": None, "s": "z"}]
    rows, route = readers.read(b"1\n\n2\n")  # an empty line: DuckDB would skip it
    assert route == "varchar" and [r["i"] for r in rows] == [1, None, 2]
    rows, route = readers.read(b"1|2||\n")  # an empty string field: '' for Hive
    assert route == "varchar" and rows == [{"i": 1, "d": D("2.0"), "s": ""}]


@pytest.mark.parametrize("hive_type, alphabet", [
    ("int", "0123456789-.+e x"), ("tinyint", "0123456789-"), ("decimal(5,2)", "0123456789-.+e "),
    ("decimal(20,0)", "0123456789-."), ("date", "0123456789- :"), ("boolean", "trueTRUEfalsFALS1 "),
])
def test_random_fields_read_as_the_varchar_route(tmp_path: Path, hive_type: str,
                                                 alphabet: str) -> None:
    rnd = random.Random(hive_type)
    cols = [Column(name="v", type=hive_type), Column(name="k", type="int")]
    readers = _Readers(tmp_path, cols, {"field.delim": "|"})
    typed = 0
    for _ in range(150):
        n = rnd.randint(0, 12)
        if hive_type == "date" and rnd.random() < 0.5:
            field = f"{rnd.randint(0, 10000):04d}-{rnd.randint(0, 13):02d}-{rnd.randint(0, 32):02d}"
        else:
            field = "".join(rnd.choice(alphabet) for _ in range(n))
        _, route = readers.read(f"{field}|1\n".encode())
        typed += route == "typed"
    assert typed > 0


def test_wide_table_takes_the_typed_route(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cols = [Column(name=f"c{i}", type=("bigint", "decimal(9,3)", "string", "date")[i % 4])
            for i in range(400)]
    vals = ("123", "-4.125", "text", "2024-12-31")
    line = "|".join(vals[i % 4] for i in range(400)) + "|\n"
    f = _write(tmp_path, "w.txt", (line * 300).encode())
    fast, varchar, slow, routes = _routes(monkeypatch, [f], _sd(**{"field.delim": "|"}), cols, {})
    assert routes["typed"] == 1
    assert fast.to_pylist() == varchar.to_pylist() == slow.to_pylist()
    assert fast.num_rows == 300 and fast.column("c1")[0].as_py() == D("-4.125")


def test_dsdgen_style_lines_take_the_typed_route(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The benchmark's shape: NULL as an empty field, a trailing '|' on every line."""
    cols = [Column(name="a", type="bigint"), Column(name="b", type="int"),
            Column(name="c", type="decimal(7,2)"), Column(name="d", type="decimal(7,2)")]
    f = _write(tmp_path, "s.dat", b"2451813|65495|11.41|-779.73|\n|79||0.00|\n2451814|1|2.80||\n")
    fast, varchar, slow, routes = _routes(monkeypatch, [f], _sd(**{"field.delim": "|"}), cols, {})
    assert routes["typed"] == 1
    assert fast.to_pylist() == varchar.to_pylist() == slow.to_pylist()
    assert fast.to_pylist()[1] == {"a": None, "b": 79, "c": None, "d": D("0.00")}


def test_delimiters_inside_typed_patterns_keep_the_varchar_route() -> None:
    cols = [Column(name="b", type="boolean"), Column(name="i", type="int")]
    for delim in ("r", "5", "-", ".", "E"):
        assert source._typed_columns(cols, delim, "\\N") is None
    assert source._typed_columns(cols, ",", "\\N") is not None
    assert source._typed_columns([Column(name="s", type="string")], "|", "\\N") is None


def test_null_format_that_looks_like_a_number(tmp_path: Path) -> None:
    cols = [Column(name="i", type="int"), Column(name="s", type="string")]
    readers = _Readers(tmp_path, cols, {"field.delim": ",", "serialization.null.format": "0"})
    rows, route = readers.read(b"0,0\n00,x\n,y\n")
    assert route == "typed"
    assert rows == [{"i": None, "s": None}, {"i": 0, "s": "x"}, {"i": None, "s": "y"}]


def test_groups_are_read_in_order_and_never_share_a_batch(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    files = [_write(tmp_path, f"g{i}.txt", b"".join(b"%d|s|%d.5|%d\n" % (i, j, j)
                                                     for j in range(i * 700)))
             for i in range(4)]  # g0 is empty
    groups = [[files[1], files[0]], [files[0]], [files[2], files[3]], []]
    monkeypatch.setattr(source, "batch_bytes_for", lambda limit: 4 << 10)
    sd = _sd(**{"field.delim": "|"})
    told: list[tuple[int, int]] = []
    got = list(source.iter_source_groups(groups, sd, COLS, {},
                                         on_bytes=lambda g, n: told.append((g, n))))
    indices = [g for g, _ in got]
    assert indices == sorted(indices) and set(indices) == {0, 2}  # empty groups: no table
    assert indices.count(2) == 2  # a batch per file here (pieces of whole files)
    for g, files_of in enumerate(groups):
        want = read_source(files_of, sd, COLS, {}) if files_of else None
        mine = [t for i, t in got if i == g]
        if want is None or want.num_rows == 0:
            assert not mine
        else:
            assert pa.concat_tables(mine).to_pylist() == want.to_pylist()
    assert [g for g, _ in told] == sorted(g for g, _ in told)
    sizes = {g: sum(n for h, n in told if h == g) for g in (0, 2)}
    assert sizes == {0: Path(files[1]).stat().st_size,
                     2: sum(Path(f).stat().st_size for f in files[2:])}
