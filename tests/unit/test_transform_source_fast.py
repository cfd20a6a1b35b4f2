"""The LazySimpleSerDe fast path (DuckDB's CSV reader over normalized text) against the line
layer (Arrow lines + one SQL query): same rows, same types, for every text shape that matters."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

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
    runs = {"fast": 0}
    real_fast = source._BatchReader._fast

    def counting(self: source._BatchReader, pieces: list[bytes]) -> pa.Table | None:
        got = real_fast(self, pieces)
        runs["fast"] += got is not None
        return got

    monkeypatch.setattr(source._BatchReader, "_fast", counting)
    fast = read_source(files, sd, cols, tparams)
    monkeypatch.setattr(source, "_fast_lazy_simple", lambda params: None)
    slow = read_source(files, sd, cols, tparams)
    monkeypatch.undo()
    return fast, slow, runs["fast"]


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
