"""catalog.transform.source: reading source data files as Hive's serdes read them."""

from __future__ import annotations

import bz2
import datetime as dt
import gzip
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from catalog.exceptions import InvalidInputError
from catalog.models import Column, SerDe, StorageDescriptor
from catalog.transform.source import (LAZY_SIMPLE_SERDE, OPEN_CSV_SERDE, PARQUET_SERDE,
                                      hive_to_arrow_type, read_source)


def _sd(lib: str = LAZY_SIMPLE_SERDE, **params: str) -> StorageDescriptor:
    return StorageDescriptor(serde=SerDe(serialization_lib=lib, parameters=params))


def _cols(*spec: str) -> list[Column]:
    return [Column(name=s.split(":")[0], type=s.split(":", 1)[1]) for s in spec]


def _write(tmp: Path, name: str, data: bytes | str) -> str:
    p = tmp / name
    p.write_bytes(data.encode() if isinstance(data, str) else data)
    return p.as_uri()


def _rows(t: pa.Table) -> list[tuple]:
    return [tuple(r.values()) for r in t.to_pylist()]


def test_hive_to_arrow_type() -> None:
    assert hive_to_arrow_type("tinyint") == pa.int8()
    assert hive_to_arrow_type("SMALLINT") == pa.int16()
    assert hive_to_arrow_type("int") == pa.int32()
    assert hive_to_arrow_type("bigint") == pa.int64()
    assert hive_to_arrow_type("float") == pa.float32()
    assert hive_to_arrow_type("double") == pa.float64()
    assert hive_to_arrow_type("decimal(12, 3)") == pa.decimal128(12, 3)
    assert hive_to_arrow_type("decimal") == pa.decimal128(10, 0)
    assert hive_to_arrow_type("date") == pa.date32()
    assert hive_to_arrow_type("timestamp") == pa.timestamp("us")
    for t in ("string", "char(3)", "varchar(10)"):
        assert hive_to_arrow_type(t) == pa.string()
    assert hive_to_arrow_type("boolean") == pa.bool_()
    assert hive_to_arrow_type("binary") == pa.binary()
    assert hive_to_arrow_type("array<map<string,struct<a:int,b:decimal(5,2)>>>") == pa.list_(
        pa.map_(pa.string(), pa.struct([("a", pa.int32()), ("b", pa.decimal128(5, 2))])))
    with pytest.raises(InvalidInputError):
        hive_to_arrow_type("uniontype<int,string>")
    with pytest.raises(InvalidInputError):
        hive_to_arrow_type("decimal(50,2)")


def test_pipe_delimiter(tmp_path: Path) -> None:
    f = _write(tmp_path, "a.txt", "1|x\n2|y\n")
    t = read_source([f], _sd(**{"field.delim": "|"}), _cols("id:int", "s:string"), {})
    assert t.schema == pa.schema([("id", pa.int32()), ("s", pa.string())])
    assert _rows(t) == [(1, "x"), (2, "y")]


def test_default_ctrl_a_and_numeric_serialization_format(tmp_path: Path) -> None:
    f = _write(tmp_path, "a", "1\x01x|y\n2\x01z\n")
    cols = _cols("id:bigint", "s:string")
    assert _rows(read_source([f], _sd(), cols, {})) == [(1, "x|y"), (2, "z")]
    # serialization.format=1 is byte 1 (Ctrl-A), as Hive's getByte reads it
    assert _rows(read_source([f], _sd(**{"serialization.format": "1"}), cols, {})) == \
        [(1, "x|y"), (2, "z")]
    g = _write(tmp_path, "b", "1\t2\n")
    assert _rows(read_source([g], _sd(**{"serialization.format": "9"}),
                             _cols("a:int", "b:int"), {})) == [(1, 2)]


def test_null_formats(tmp_path: Path) -> None:
    f = _write(tmp_path, "a.txt", "\\N|\\N|\n|NULL|x\n")
    cols = _cols("a:int", "b:string", "c:string")
    # default \N; an empty string field is '' (not NULL), 'NULL' is a string
    assert _rows(read_source([f], _sd(**{"field.delim": "|"}), cols, {})) == \
        [(None, None, ""), (None, "NULL", "x")]
    custom = _sd(**{"field.delim": "|", "serialization.null.format": "NULL"})
    assert _rows(read_source([f], custom, cols, {})) == [(None, "\\N", ""), (None, None, "x")]
    empty = _sd(**{"field.delim": "|", "serialization.null.format": ""})
    assert _rows(read_source([f], empty, cols, {})) == [(None, "\\N", None), (None, "NULL", "x")]


def test_header_and_footer_skip_per_file(tmp_path: Path) -> None:
    files = [_write(tmp_path, f"p{i}.csv", f"h{i}\n{i}1\n{i}2\nfooter{i}\n") for i in range(3)]
    params = {"skip.header.line.count": "1", "skip.footer.line.count": "1"}
    t = read_source(files, _sd(**{"field.delim": ","}), _cols("v:string"), params)
    assert t.column("v").to_pylist() == ["01", "02", "11", "12", "21", "22"]
    t = read_source(files, _sd(**{"field.delim": ","}), _cols("v:string"),
                    {"skip.header.line.count": "2"})
    assert t.column("v").to_pylist() == ["02", "footer0", "12", "footer1", "22", "footer2"]


def test_unparseable_missing_and_extra_fields(tmp_path: Path) -> None:
    f = _write(tmp_path, "a.txt", "abc,1,2,3,4\n5\n 7,8\n1.9,-3.\n99999999999,+4\n")
    t = read_source([f], _sd(**{"field.delim": ","}), _cols("a:int", "b:int"), {})
    # 'abc' and ' 7' are NULL, '1.9' truncates to 1, out-of-range NULL, missing NULL
    assert _rows(t) == [(None, 1), (5, None), (None, 8), (1, -3), (None, 4)]


def test_decimal_date_timestamp_boolean_double(tmp_path: Path) -> None:
    f = _write(tmp_path, "a.txt",
               "12.345|2024-02-29|2024-02-29 10:11:12.123456789|TRUE|1.5\n"
               "123456.7|2024-02-30|2024-01-05|false|Infinity\n"
               "x|nope|2024-01-05T01:02:03|yes| 2e3d \n"
               "-0.005|2024-1-5 tail|bad|False|1e400\n")
    cols = _cols("d:decimal(7,2)", "dt:date", "ts:timestamp", "b:boolean", "x:double")
    t = read_source([f], _sd(**{"field.delim": "|"}), cols, {})
    assert t.schema.field("d").type == pa.decimal128(7, 2)
    assert _rows(t) == [
        (Decimal("12.35"), dt.date(2024, 2, 29), dt.datetime(2024, 2, 29, 10, 11, 12, 123456),
         True, 1.5),
        (None, None, dt.datetime(2024, 1, 5), False, float("inf")),
        (None, None, dt.datetime(2024, 1, 5, 1, 2, 3), None, 2000.0),
        (Decimal("-0.01"), dt.date(2024, 1, 5), None, False, float("inf")),
    ]


def test_compressed_text(tmp_path: Path) -> None:
    data = b"1|a\n2|b\n"
    gz = tmp_path / "part.txt.gz"
    gz.write_bytes(gzip.compress(data) + gzip.compress(b"3|c\n"))  # two gzip members
    bz = tmp_path / "part.txt.bz2"
    bz.write_bytes(bz2.compress(data))
    cols = _cols("id:int", "s:string")
    sd = _sd(**{"field.delim": "|"})
    assert _rows(read_source([gz.as_uri()], sd, cols, {})) == [(1, "a"), (2, "b"), (3, "c")]
    assert _rows(read_source([bz.as_uri()], sd, cols, {"skip.header.line.count": "1"})) == \
        [(2, "b")]
    with pytest.raises(InvalidInputError):
        read_source([_write(tmp_path, "x.snappy", b"zz")], sd, cols, {})


def test_lazy_simple_quotes_are_literal_and_line_ends(tmp_path: Path) -> None:
    f = _write(tmp_path, "a.txt", '"a,b",c\r\n\r\n"q"\rlast')
    t = read_source([f], _sd(**{"field.delim": ","}), _cols("x:string", "y:string"), {})
    assert _rows(t) == [('"a', 'b"'), ("", None), ('"q"', None), ("last", None)]


def test_escape_delim(tmp_path: Path) -> None:
    f = _write(tmp_path, "a.txt", "a\\|b|c\\\\|d\n\\N|x\\y\n")
    sd = _sd(**{"field.delim": "|", "escape.delim": "\\"})
    t = read_source([f], sd, _cols("a:string", "b:string", "c:string"), {})
    assert _rows(t) == [("a|b", "c\\", "d"), (None, "xy", None)]


def test_open_csv_serde(tmp_path: Path) -> None:
    f = _write(tmp_path, "a.csv",
               'id,name,note\n1,"Smith, J","said ""hi"""\n2,,"a\\"b"\n3,"",x,extra\n4\n')
    cols = _cols("id:int", "name:string", "note:string")
    t = read_source([f], _sd(OPEN_CSV_SERDE), cols, {"skip.header.line.count": "1"})
    assert t.schema == pa.schema([(c, pa.string()) for c in ("id", "name", "note")])
    assert _rows(t) == [("1", "Smith, J", 'said "hi"'), ("2", "", 'a"b'), ("3", "", "x"),
                        ("4", None, None)]
    g = _write(tmp_path, "b.csv", "'a;b';c\n")
    sd = _sd(OPEN_CSV_SERDE, separatorChar=";", quoteChar="'")
    assert _rows(read_source([g], sd, _cols("a:string", "b:string"), {})) == [("a;b", "c")]


def test_parquet_missing_column_and_widening(tmp_path: Path) -> None:
    p1 = tmp_path / "f1.parquet"
    pq.write_table(pa.table({"ID": pa.array([1, 2], pa.int32()),
                             "amount": pa.array([1.5, 2.5], pa.float32())}), p1)
    p2 = tmp_path / "f2.parquet"
    pq.write_table(pa.table({"id": pa.array([3], pa.int64()),
                             "amount": pa.array([4.0], pa.float64()),
                             "label": ["abcdef"]}), p2)
    cols = _cols("id:bigint", "amount:double", "label:varchar(3)")
    t = read_source([p1.as_uri(), p2.as_uri()], _sd(PARQUET_SERDE), cols, {})
    assert t.schema == pa.schema([("id", pa.int64()), ("amount", pa.float64()),
                                  ("label", pa.string())])
    assert _rows(t) == [(1, 1.5, None), (2, 2.5, None), (3, 4.0, "abc")]


def test_remote_without_namespace_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError):
        read_source(["s3://bucket/key.txt"], _sd(), _cols("a:string"), {})


def test_binary_and_char(tmp_path: Path) -> None:
    f = _write(tmp_path, "a.txt", "aGk=|abcdef\nnot base64!|ab\n")
    t = read_source([f], _sd(**{"field.delim": "|"}), _cols("b:binary", "c:char(4)"), {})
    assert _rows(t) == [(b"hi", "abcd"), (b"not base64!", "ab")]
