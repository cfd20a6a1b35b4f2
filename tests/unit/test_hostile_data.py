"""UDB ``directory`` against hostile lakes: names that are not UTF-8, broken Parquet files, ragged
CSV, control characters in headers, empty partition values, over-long and newline names."""

from __future__ import annotations

import gzip
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from catalog.config import Settings
from catalog.exceptions import InvalidInputError
from catalog.service import CatalogService
from catalog.udb.directory import DirectoryUdb

ROWS = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "name": ["a", "b", None]})


def parquet_bytes(table: pa.Table = ROWS) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def write(path: bytes | Path, data: bytes) -> None:
    """Write ``data`` at ``path`` (bytes paths may hold bytes that are not UTF-8)."""
    raw = os.fsencode(path)
    os.makedirs(os.path.dirname(raw), exist_ok=True)
    with open(raw, "wb") as f:
        f.write(data)


def udb(root: Path, **options: str) -> DirectoryUdb:
    return DirectoryUdb(str(root), "db1", options, Settings(data_dir=root / "_state"))


def names(u: DirectoryUdb) -> list[str]:
    return [t.name for t in u.get_tables(u.list_tables())]


@pytest.fixture
def service(tmp_path: Path) -> Iterator[CatalogService]:
    s = CatalogService(Settings(data_dir=tmp_path / "state"))
    try:
        yield s
    finally:
        s.close()


# -- names that are not UTF-8 ----------------------------------------------------------------------


def test_non_utf8_names_are_skipped_and_named_escaped(tmp_path: Path) -> None:
    db = os.fsencode(tmp_path / "db1")
    write(db + b"/good/f.parquet", parquet_bytes())
    write(db + b"/caf\xe9/f.parquet", parquet_bytes())  # a table folder
    write(db + b"/files/f.parquet", parquet_bytes())
    write(db + b"/files/g\xe9.parquet", parquet_bytes())  # a file of a table
    write(db + b"/parts/k=1/f.parquet", parquet_bytes())
    write(db + b"/parts/k=\xff/f.parquet", parquet_bytes())  # a partition folder
    u = udb(tmp_path)
    assert u.list_tables() == ["files", "good", "parts"]
    tables = {t.name: t for t in u.get_tables(u.list_tables())}
    assert sorted(tables) == ["files", "good", "parts"]  # no table vanishes
    assert tables["files"].parameters["numFiles"] == "1"
    assert [p.values for p in u.list_partitions(tables["parts"])] == [["1"]]
    text = "\n".join(u.problems)
    assert "caf\\xe9" in text and "g\\xe9.parquet" in text and "k=\\xff" in text
    assert len([p for p in u.problems if "not UTF-8" in p]) == 3  # the folder once, not its files
    json.dumps(u.problems)  # every problem is valid text
    for p in u.problems:
        p.encode("utf-8")


def test_non_utf8_names_attach_and_sync_through_service(tmp_path: Path,
                                                        service: CatalogService) -> None:
    root = tmp_path / "data"
    db = os.fsencode(root / "db1")
    write(db + b"/t/f.parquet", parquet_bytes())
    write(db + b"/t/\xe9\xe9.parquet", parquet_bytes())
    write(db + b"/p/k=1/f.parquet", parquet_bytes())
    write(db + b"/p/k=\xe9/f.parquet", parquet_bytes())
    write(db + b"/\xe9/f.parquet", parquet_bytes())
    report = service.attach_database("directory", str(root), "db1")
    assert report.errors == []
    assert service.list_tables("db1") == ["p", "t"]
    assert service.partition_names("db1", "p") == ["k=1"]
    assert sum("not UTF-8" in w for w in report.warnings) == 3
    json.loads(report.model_dump_json())
    again = service.sync("db1")
    assert again.errors == [] and again.tables.unchanged == 2 and again.tables.removed == 0
    json.loads(again.model_dump_json())


# -- broken Parquet files --------------------------------------------------------------------------


def test_zero_byte_and_truncated_parquet_are_left_out_and_reported(tmp_path: Path) -> None:
    base = tmp_path / "db1"
    good = parquet_bytes()
    write(base / "t" / "a.parquet", good)
    write(base / "t" / "b.parquet", good[: len(good) // 2])  # truncated: no footer
    write(base / "t" / "c.parquet", b"")  # 0 bytes
    write(base / "p" / "k=1" / "a.parquet", good)
    write(base / "p" / "k=2" / "a.parquet", good[:-3])
    u = udb(tmp_path)
    tables = {t.name: t for t in u.get_tables(["t", "p"])}
    assert sorted(tables) == ["p", "t"]
    assert [c.name for c in tables["t"].sd.columns] == ["id", "name"]
    assert tables["t"].parameters["numFiles"] == "1"
    assert tables["t"].parameters["totalSize"] == str(len(good))
    parts = {p.values[0]: p.parameters for p in u.list_partitions(tables["p"])}
    assert parts == {"1": {"numFiles": "1", "totalSize": str(len(good))},
                     "2": {"numFiles": "0", "totalSize": "0"}}
    text = "\n".join(u.problems)
    assert "'b.parquet' has no readable Parquet footer" in text
    assert "'c.parquet' has 0 bytes" in text
    assert "'k=2/a.parquet' has no readable Parquet footer" in text
    assert u.unreadable == {}


def test_only_unreadable_files_is_a_read_failure(tmp_path: Path) -> None:
    good = parquet_bytes()
    write(tmp_path / "db1" / "t" / "a.parquet", good[:100])
    write(tmp_path / "db1" / "z" / "a.parquet", b"")
    u = udb(tmp_path)
    assert u.get_tables(["t", "z"]) == []
    assert sorted(u.unreadable) == ["t", "z"]
    assert "no Parquet file with a readable footer" in u.unreadable["t"]


def test_sync_keeps_a_table_over_one_truncated_file(tmp_path: Path,
                                                    service: CatalogService) -> None:
    root = tmp_path / "data"
    d = root / "db1" / "items"
    good = parquet_bytes()
    write(d / "a.parquet", good)
    write(d / "b.parquet", good)
    assert service.attach_database("directory", str(root), "db1").warnings == []
    table_id = service.table_record("db1", "items").id

    write(d / "b.parquet", good[: len(good) - 10])  # truncated
    report = service.sync("db1")
    assert report.errors == [] and report.tables.removed == 0
    assert any("'b.parquet'" in w and "footer" in w for w in report.warnings), report.warnings
    rec = service.table_record("db1", "items")
    assert rec.id == table_id
    assert rec.table.parameters["numFiles"] == "1"

    write(d / "b.parquet", good)  # fixed
    clean = service.sync("db1")
    assert clean.errors == [] and clean.warnings == []
    rec = service.table_record("db1", "items")
    assert rec.id == table_id and rec.table.parameters["numFiles"] == "2"


def test_sync_keeps_the_last_state_of_a_table_it_cannot_read(tmp_path: Path,
                                                            service: CatalogService) -> None:
    root = tmp_path / "data"
    good = parquet_bytes()
    write(root / "db1" / "items" / "a.parquet", good)
    write(root / "db1" / "gone" / "a.parquet", good)
    service.attach_database("directory", str(root), "db1")
    table_id = service.table_record("db1", "items").id
    before = service.get_table("db1", "items")

    write(root / "db1" / "items" / "a.parquet", good[:50])  # its only file is now truncated
    os.remove(root / "db1" / "gone" / "a.parquet")
    os.rmdir(root / "db1" / "gone")  # a table really removed is still removed
    report = service.sync("db1")
    assert report.errors == []
    assert report.tables.removed == 1
    assert service.list_tables("db1") == ["items"]
    assert service.table_record("db1", "items").id == table_id
    assert service.get_table("db1", "items") == before
    assert any("'a.parquet'" in w for w in report.warnings), report.warnings
    assert any("'db1.items' still served as last synced" in w for w in report.warnings)
    one = service.sync("db1", "items")  # one table only: the same rule
    assert one.tables.removed == 0 and service.table_record("db1", "items").id == table_id

    write(root / "db1" / "items" / "a.parquet", good)
    clean = service.sync("db1")
    assert clean.errors == [] and clean.warnings == []
    assert service.table_record("db1", "items").id == table_id


def test_attach_skips_a_table_it_cannot_read(tmp_path: Path, service: CatalogService) -> None:
    root = tmp_path / "data"
    write(root / "db1" / "items" / "a.parquet", parquet_bytes())
    write(root / "db1" / "broken" / "a.parquet", parquet_bytes()[:20])
    report = service.attach_database("directory", str(root), "db1")
    assert report.errors == [] and service.list_tables("db1") == ["items"]
    assert any("'db1.broken'" in w for w in report.warnings)


# -- CSV -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "a,b,c\n1,2\n3,4,5,6\n7\n",  # the sniffer gives up: one column 'a,b,c'
    "a,b,c\n1,2,3\n4,5\n",
    "a,b,c\n1,2,3\n4,5,6,7\n",  # the sniffer takes the widest row
    "a;b\n1;2\n3\n",
])
def test_ragged_csv_is_skipped_with_a_problem(tmp_path: Path, text: str) -> None:
    write(tmp_path / "db1" / "r" / "r.csv", text.encode())
    u = udb(tmp_path)
    assert u.get_tables(["r"]) == []
    assert any("'db1.r'" in p and "line" in p and ("disagree" in p or "no delimiter" in p)
               for p in u.problems), u.problems


def test_regular_csv_still_served(tmp_path: Path) -> None:
    write(tmp_path / "db1" / "one" / "o.csv", b"a\n1\n2\n")
    write(tmp_path / "db1" / "blank" / "b.csv", b"a,b\n1,2\n\n3,4\n")
    write(tmp_path / "db1" / "quoted" / "q.csv", b'id,name\n1,"x,y"\n2,"a\nb"\n')
    write(tmp_path / "db1" / "single" / "s.csv", b'name\n"Smith, J"\nBob\n')
    u = udb(tmp_path)
    assert names(u) == ["blank", "one", "quoted", "single"], u.problems


def test_quoted_single_column_header_is_not_ragged(tmp_path: Path) -> None:
    write(tmp_path / "db1" / "q" / "q.csv", b'"a,b"\n1\n2\n')
    u = udb(tmp_path)
    assert names(u) == ["q"], u.problems


def test_unreadable_csv_file_is_left_out_and_the_next_one_sampled(tmp_path: Path) -> None:
    d = tmp_path / "db1" / "z"
    write(d / "a.csv.gz", gzip.compress(b"k,v\n" + b"1,x\n" * 1000)[:40])  # truncated
    write(d / "b.csv.gz", gzip.compress(b"k,v\n1,x\n"))
    u = udb(tmp_path)
    (t,) = u.get_tables(["z"])
    assert [(c.name, c.type) for c in t.sd.columns] == [("k", "bigint"), ("v", "string")]
    assert t.parameters["numFiles"] == "1"
    assert any("'a.csv.gz' cannot be read" in p for p in u.problems), u.problems
    write(d / "b.csv.gz", gzip.compress(b"k,v\n1,x\n")[:15])
    u = udb(tmp_path)
    assert u.get_tables(["z"]) == [] and "z" in u.unreadable


def test_control_characters_in_csv_header_are_renamed(tmp_path: Path) -> None:
    write(tmp_path / "db1" / "c" / "c.csv", b"a,b\x01x,c\n1,2,3\n")
    u = udb(tmp_path)
    (t,) = u.get_tables(["c"])
    assert [c.name for c in t.sd.columns] == ["a", "c1", "c"]
    assert any("'b\\x01x'" in p and "'c1'" in p for p in u.problems), u.problems


def test_control_characters_in_parquet_column_are_left_out(tmp_path: Path) -> None:
    write(tmp_path / "db1" / "p" / "f.parquet",
          parquet_bytes(pa.table({"ok": [1], "bad\x07": [2], "x,y": [3]})))
    u = udb(tmp_path)
    (t,) = u.get_tables(["p"])
    assert [c.name for c in t.sd.columns] == ["ok"]
    text = "\n".join(u.problems)
    assert "'bad\\x07'" in text and "'x,y'" in text


# -- partitions ------------------------------------------------------------------------------------


def test_empty_partition_value_is_the_default_partition(tmp_path: Path) -> None:
    base = tmp_path / "db1" / "e"
    write(base / "k=" / "f.parquet", parquet_bytes())
    write(base / "k=1" / "f.parquet", parquet_bytes())
    u = udb(tmp_path)
    (t,) = u.get_tables(["e"])
    assert t.partition_keys[0].type == "int"  # the default partition does not vote
    parts = u.list_partitions(t)
    assert sorted(p.values[0] for p in parts) == ["1", "__HIVE_DEFAULT_PARTITION__"]
    default = next(p for p in parts if p.values == ["__HIVE_DEFAULT_PARTITION__"])
    assert default.sd.location == f"file://{base}/k="
    assert any("'k='" in p and "__HIVE_DEFAULT_PARTITION__" in p for p in u.problems)


def test_empty_value_and_default_partition_are_the_same_partition(tmp_path: Path) -> None:
    base = tmp_path / "db1" / "e"
    write(base / "k=" / "f.parquet", parquet_bytes())
    write(base / "k=__HIVE_DEFAULT_PARTITION__" / "f.parquet", parquet_bytes())
    u = udb(tmp_path)
    assert u.get_tables(["e"]) == []
    assert any("same partition" in p for p in u.problems), u.problems


# -- names -----------------------------------------------------------------------------------------


def test_database_names_are_anchored_and_limited(tmp_path: Path,
                                                 service: CatalogService) -> None:
    root = tmp_path / "data"
    write(root / "db1" / "t" / "f.parquet", parquet_bytes())
    for bad in ("nl\n", "a" * 129, "x" * (1 << 20), "-x", "a b"):
        with pytest.raises(InvalidInputError, match="at most 128 characters"):
            service.attach_database("directory", str(root), "db1", name=bad)
    before = service.list_databases()
    assert service.attach_database("directory", str(root), "db1", name="a" * 128).errors == []
    assert sorted(service.list_databases()) == sorted([*before, "a" * 128])


def test_table_folder_and_partition_key_names_are_anchored_and_limited(tmp_path: Path) -> None:
    db = tmp_path / "db1"
    write(db / "good" / "f.parquet", parquet_bytes())
    write(db / "nl\n" / "f.parquet", parquet_bytes())
    write(db / ("t" * 129) / "f.parquet", parquet_bytes())
    write(db / ("u" * 128) / "f.parquet", parquet_bytes())
    write(db / "longkey" / (("k" * 129) + "=1") / "f.parquet", parquet_bytes())
    write(db / "ctrlkey" / "k\x01=1" / "f.parquet", parquet_bytes())
    u = udb(tmp_path)
    assert u.list_tables() == ["ctrlkey", "good", "longkey", "u" * 128]
    assert names(u) == ["good", "u" * 128]
    text = "\n".join(u.problems)
    assert "nl\\n skipped" in text
    assert "at most 128 characters" in text
    assert "longer than 128 characters" in text
    assert "'k\\x01'" in text
