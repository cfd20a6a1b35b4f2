"""UDB ``directory``: folder layout -> Hive tables, partitions, formats, types, problems, sync."""

from __future__ import annotations

import gzip
import os
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from catalog.config import Settings
from catalog.exceptions import InvalidInputError, InvalidOptionError, NoSuchDatabaseError
from catalog.fs.namespace import Namespace
from catalog.models import Table
from catalog.udb import load_udb
from catalog.udb.directory import (
    LAZY_SIMPLE_SERDE,
    OPEN_CSV_SERDE,
    PARQUET_INPUT,
    PARQUET_OUTPUT,
    PARQUET_SERDE,
    TEXT_INPUT,
    TEXT_OUTPUT,
    DirectoryUdb,
    hive_type,
    partition_key_type,
)

ROWS = pa.table({
    "id": pa.array([1, 2, 3], pa.int64()),
    "Name": ["a", "b", None],
    "price": pa.array([1.5, 2.5, 3.5]),
})


def write_parquet(path: Path, table: pa.Table = ROWS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def udb(root: Path, source_db: str = "db1", **options: str) -> DirectoryUdb:
    return DirectoryUdb(str(root), source_db, options, Settings(data_dir=root / "_state"))


def one(u: DirectoryUdb, name: str) -> Table:
    tables = u.get_tables([name])
    assert [t.name for t in tables] == [name], u.problems
    return tables[0]


def cols(t: Table) -> list[tuple[str, str]]:
    return [(c.name, c.type) for c in t.sd.columns]


# -- parquet ---------------------------------------------------------------------------------------


def test_parquet_table(tmp_path: Path) -> None:
    f = write_parquet(tmp_path / "db1" / "items" / "part-0.parquet")
    u = udb(tmp_path)
    assert u.list_tables() == ["items"]
    t = one(u, "items")
    assert t.db_name == "db1" and t.table_type == "EXTERNAL_TABLE"
    assert cols(t) == [("id", "bigint"), ("name", "string"), ("price", "double")]
    assert t.partition_keys == []
    assert t.sd.location == f"file://{tmp_path}/db1/items"
    assert (t.sd.input_format, t.sd.output_format) == (PARQUET_INPUT, PARQUET_OUTPUT)
    assert t.sd.serde.serialization_lib == PARQUET_SERDE
    assert t.parameters == {"EXTERNAL": "TRUE", "numFiles": "1",
                            "totalSize": str(f.stat().st_size)}
    assert u.list_partitions(t) == []
    assert u.fingerprint(t.sd.location) == Namespace().fingerprint(t.sd.location)


def test_duckdb_parquet_and_unified_schema(tmp_path: Path) -> None:
    d = tmp_path / "db1" / "evolving"
    d.mkdir(parents=True)
    duckdb.sql(f"COPY (SELECT 1::INTEGER AS a, DATE '2020-01-01' AS d) TO '{d}/f1.parquet'")
    write_parquet(d / "f2.parquet", pa.table({"a": pa.array([2], pa.int64()), "extra": ["x"]}))
    t = one(udb(tmp_path), "evolving")
    assert cols(t) == [("a", "bigint"), ("d", "date"), ("extra", "string")]


def test_parquet_conflicting_schemas_are_a_problem(tmp_path: Path) -> None:
    d = tmp_path / "db1" / "clash"
    write_parquet(d / "f1.parquet", pa.table({"a": [1]}))
    write_parquet(d / "f2.parquet", pa.table({"a": ["x"]}))
    u = udb(tmp_path)
    assert u.get_tables(["clash"]) == []
    assert "clash" in u.problems[0] and "schema" in u.problems[0]


def test_nested_and_unsupported_columns(tmp_path: Path) -> None:
    table = pa.table({
        "tags": pa.array([["x", "y"]]),
        "attrs": pa.array([[("k", 1)]], pa.map_(pa.string(), pa.int32())),
        "s": pa.array([{"a": 1, "b": "x"}]),
        "t": pa.array([1], pa.time64("us")),
        "amount": pa.array([1], pa.decimal128(12, 2)),
        "ts": pa.array([1], pa.timestamp("us", tz="UTC")),
    })
    write_parquet(tmp_path / "db1" / "nested" / "f.parquet", table)
    u = udb(tmp_path)
    t = one(u, "nested")
    assert cols(t) == [("tags", "array<string>"), ("attrs", "map<string,int>"),
                       ("s", "struct<a:bigint,b:string>"), ("amount", "decimal(12,2)"),
                       ("ts", "timestamp")]
    assert any("'t'" in p and "left out" in p for p in u.problems)


@pytest.mark.parametrize(("arrow", "hive"), [
    (pa.int8(), "tinyint"), (pa.int16(), "smallint"), (pa.int32(), "int"),
    (pa.int64(), "bigint"), (pa.uint8(), "smallint"), (pa.uint32(), "bigint"),
    (pa.uint64(), "decimal(20,0)"), (pa.float32(), "float"), (pa.float64(), "double"),
    (pa.bool_(), "boolean"), (pa.large_string(), "string"), (pa.binary(), "binary"),
    (pa.date32(), "date"), (pa.timestamp("ns"), "timestamp"), (pa.decimal128(38, 10),
                                                              "decimal(38,10)"),
    (pa.dictionary(pa.int32(), pa.string()), "string"),
    (pa.list_(pa.struct([("x", pa.int32())])), "array<struct<x:int>>"),
    (pa.decimal256(50, 2), None), (pa.time32("s"), None), (pa.null(), None),
    (pa.struct([("bad name", pa.int32())]), None),
])
def test_hive_type(arrow: pa.DataType, hive: str | None) -> None:
    assert hive_type(arrow) == hive


def test_extensionless_parquet_by_magic_and_forced_format(tmp_path: Path) -> None:
    write_parquet(tmp_path / "db1" / "hive_written" / "000000_0")
    write_text(tmp_path / "db1" / "raw" / "data.dat", "a|b\n1|x\n")
    u = udb(tmp_path)
    assert cols(one(u, "hive_written"))[0] == ("id", "bigint")
    assert u.get_tables(["raw"]) == []
    assert any("format=csv" in p for p in u.problems)
    forced = udb(tmp_path, format="csv")
    t = one(forced, "raw")
    assert cols(t) == [("a", "bigint"), ("b", "string")]
    assert t.sd.serde.parameters["field.delim"] == "|"


# -- csv -------------------------------------------------------------------------------------------


def test_csv_plain_is_lazy_simple_with_types(tmp_path: Path) -> None:
    d = tmp_path / "db1" / "orders"
    d.mkdir(parents=True)
    duckdb.sql(f"""COPY (SELECT 1 AS id, 'x' AS code, 2.5 AS amount, DATE '2020-01-02' AS day,
                        TIMESTAMP '2020-01-02 03:04:05' AS ts, true AS ok)
                   TO '{d}/orders.csv' (HEADER)""")
    t = one(udb(tmp_path), "orders")
    assert cols(t) == [("id", "bigint"), ("code", "string"), ("amount", "double"),
                       ("day", "date"), ("ts", "timestamp"), ("ok", "boolean")]
    assert (t.sd.input_format, t.sd.output_format) == (TEXT_INPUT, TEXT_OUTPUT)
    assert t.sd.serde.serialization_lib == LAZY_SIMPLE_SERDE
    assert t.sd.serde.parameters == {"field.delim": ",", "serialization.format": ",",
                                     "serialization.null.format": ""}
    assert t.parameters["skip.header.line.count"] == "1"
    assert t.parameters["EXTERNAL"] == "TRUE"


def test_csv_quoted_fields_use_open_csv_serde_all_strings(tmp_path: Path) -> None:
    write_text(tmp_path / "db1" / "people" / "p.csv",
               'id,name,age\n1,"Smith, John",42\n2,Bob,7\n')
    t = one(udb(tmp_path), "people")
    assert cols(t) == [("id", "string"), ("name", "string"), ("age", "string")]
    assert t.sd.serde.serialization_lib == OPEN_CSV_SERDE
    assert t.sd.serde.parameters["separatorChar"] == ","
    assert t.sd.serde.parameters["quoteChar"] == '"'
    assert t.parameters["skip.header.line.count"] == "1"
    # quotes in the header only do not need OpenCSVSerde; csv.quoted forces either way
    write_text(tmp_path / "db1" / "hq" / "h.csv", '"a","b"\n1,x\n')
    assert one(udb(tmp_path), "hq").sd.serde.serialization_lib == LAZY_SIMPLE_SERDE
    assert one(udb(tmp_path, **{"csv.quoted": "true"}), "hq").sd.serde.serialization_lib \
        == OPEN_CSV_SERDE
    assert one(udb(tmp_path, **{"csv.quoted": "false"}), "people").sd.serde.serialization_lib \
        == LAZY_SIMPLE_SERDE


def test_csv_delimiters_header_and_compression(tmp_path: Path) -> None:
    write_text(tmp_path / "db1" / "semi" / "s.txt", "a;b\n1;x\n2;y\n")
    write_text(tmp_path / "db1" / "tabs" / "t.tsv", "a\tb\n1\tx\n")
    gz = tmp_path / "db1" / "zipped" / "z.csv.gz"
    gz.parent.mkdir(parents=True)
    with gzip.open(gz, "wt") as f:
        f.write("k,v\n1,2.5\n")
    write_text(tmp_path / "db1" / "nohead" / "n.csv", "1|x\n2|y\n")
    u = udb(tmp_path)
    assert one(u, "semi").sd.serde.parameters["field.delim"] == ";"
    assert one(u, "tabs").sd.serde.parameters["field.delim"] == "\t"
    assert cols(one(u, "zipped")) == [("k", "bigint"), ("v", "double")]
    h = udb(tmp_path, **{"csv.header": "false", "csv.delimiter": "|"})
    t = one(h, "nohead")
    assert cols(t) == [("c0", "bigint"), ("c1", "string")]
    assert "skip.header.line.count" not in t.parameters


# -- partitions ------------------------------------------------------------------------------------


def test_partitioned_table(tmp_path: Path) -> None:
    base = tmp_path / "db1" / "sales"
    write_parquet(base / "year=2020" / "region=eu" / "a.parquet")
    write_parquet(base / "year=2020" / "region=us" / "a.parquet")
    write_parquet(base / "year=2021" / "region=eu" / "a.parquet")
    write_parquet(base / "year=2021" / "region=eu" / "b.parquet")
    (base / "year=2022" / "region=ap").mkdir(parents=True)  # an empty partition
    (base / "year=2023").mkdir()  # incomplete: not a partition
    u = udb(tmp_path)
    t = one(u, "sales")
    assert [(k.name, k.type) for k in t.partition_keys] == [("year", "int"), ("region", "string")]
    assert "numFiles" not in t.parameters
    parts = u.list_partitions(t)
    assert [p.values for p in parts] == [["2020", "eu"], ["2020", "us"], ["2021", "eu"],
                                         ["2022", "ap"]]
    p = parts[2]
    assert p.sd.location == f"file://{tmp_path}/db1/sales/year=2021/region=eu"
    assert p.parameters["numFiles"] == "2"
    assert (p.sd.columns, p.sd.serde, p.sd.input_format) == (
        t.sd.columns, t.sd.serde, t.sd.input_format)
    assert parts[3].parameters["numFiles"] == "0"
    for part in parts:
        assert u.fingerprint(part.sd.location) == Namespace().fingerprint(part.sd.location)


def test_partition_values_escaping_and_key_types(tmp_path: Path) -> None:
    base = tmp_path / "db1" / "events"
    data = pa.table({"x": [1], "city": ["ignored: the folder wins"]})
    write_parquet(base / "ds=2020-01-01" / "city=a%2Fb%3Ac" / "n=5000000000" / "f.parquet", data)
    write_parquet(base / "ds=2020-01-02" / "city=__HIVE_DEFAULT_PARTITION__" / "n=1"
                  / "f.parquet", data)
    u = udb(tmp_path)
    t = one(u, "events")
    assert cols(t) == [("x", "bigint")]
    assert [(k.name, k.type) for k in t.partition_keys] == [
        ("ds", "date"), ("city", "string"), ("n", "bigint")]
    parts = u.list_partitions(t)
    assert [p.values for p in parts] == [["2020-01-01", "a/b:c", "5000000000"],
                                         ["2020-01-02", "__HIVE_DEFAULT_PARTITION__", "1"]]
    assert parts[0].sd.location == (
        f"file://{tmp_path}/db1/events/ds=2020-01-01/city=a%2Fb%3Ac/n=5000000000")


def test_partition_key_type() -> None:
    assert partition_key_type(["1", "-2", "007"]) == "int"
    assert partition_key_type(["1", "3000000000"]) == "bigint"
    assert partition_key_type(["2020-01-01", "__HIVE_DEFAULT_PARTITION__"]) == "date"
    assert partition_key_type(["2020-02-30"]) == "string"
    assert partition_key_type(["1", "x"]) == "string"
    assert partition_key_type(["__HIVE_DEFAULT_PARTITION__"]) == "string"
    assert partition_key_type(["99999999999999999999"]) == "string"


def test_csv_partitioned_column_clash_is_renamed(tmp_path: Path) -> None:
    write_text(tmp_path / "db1" / "logs" / "day=1" / "l.csv", "day,msg\n1,hello\n")
    u = udb(tmp_path)
    t = one(u, "logs")
    assert cols(t) == [("day_data", "bigint"), ("msg", "string")]
    assert [k.name for k in t.partition_keys] == ["day"]


# -- layout problems, hidden entries, empty folders ------------------------------------------------


def test_bad_layouts_are_reported_other_tables_load(tmp_path: Path) -> None:
    db = tmp_path / "db1"
    write_parquet(db / "good" / "f.parquet")
    write_parquet(db / "mixed" / "f.parquet")
    write_parquet(db / "mixed" / "year=2020" / "f.parquet")
    write_parquet(db / "keys" / "a=1" / "b=2" / "f.parquet")
    write_parquet(db / "keys" / "b=2" / "a=1" / "f.parquet")
    write_parquet(db / "nested" / "sub" / "f.parquet")
    write_parquet(db / "formats" / "f.parquet")
    write_text(db / "formats" / "g.csv", "a\n1\n")
    u = udb(tmp_path)
    assert u.list_tables() == ["formats", "good", "keys", "mixed", "nested"]
    assert [t.name for t in u.get_tables(u.list_tables())] == ["good"]
    text = "\n".join(u.problems)
    assert f"'db1.mixed' at file://{db}/mixed: mixed layouts" in text
    assert "'db1.keys'" in text and "partitioned by a, b" in text
    assert "'db1.nested'" in text and "'sub'" in text
    assert "'db1.formats'" in text and "mixes Parquet and CSV" in text


def test_hidden_entries_and_empty_folders(tmp_path: Path) -> None:
    db = tmp_path / "db1"
    write_parquet(db / "t" / "f.parquet")
    write_text(db / "t" / "_SUCCESS", "")
    write_text(db / "t" / ".f.parquet.crc", "junk")
    write_text(db / "t" / "_temporary" / "0" / "x.csv", "junk")
    write_parquet(db / ".hidden" / "f.parquet")
    write_parquet(db / "_staging" / "f.parquet")
    write_text(db / "README.md", "loose files in the database folder are ignored")
    (db / "empty").mkdir()
    (db / "only_dirs" / "year=2020").mkdir(parents=True)
    write_parquet(db / "year=2020" / "f.parquet")
    u = udb(tmp_path)
    assert u.list_tables() == ["empty", "only_dirs", "t"]
    tables = u.get_tables(u.list_tables())
    assert [t.name for t in tables] == ["t"]
    assert tables[0].parameters["numFiles"] == "1"
    text = "\n".join(u.problems)
    assert "'db1.empty'" in text and "no data files" in text
    assert "'db1.only_dirs'" in text
    assert "year=2020" in text and "partition folder" in text


def test_get_tables_only_existing_and_case(tmp_path: Path) -> None:
    write_parquet(tmp_path / "db1" / "MixedCase" / "f.parquet")
    u = udb(tmp_path)
    assert u.list_tables() == ["mixedcase"]
    t = one(u, "mixedcase")
    assert t.sd.location == f"file://{tmp_path}/db1/MixedCase"
    assert [x.name for x in u.get_tables(["MIXEDCASE", "nope"])] == ["mixedcase"]


# -- database folder, URI, options -----------------------------------------------------------------


def test_database_folder_rules(tmp_path: Path) -> None:
    write_parquet(tmp_path / "db1" / "t" / "f.parquet")
    sub = udb(tmp_path, "db1")
    assert sub.get_database().location == f"file://{tmp_path}/db1"
    own = DirectoryUdb(f"file://{tmp_path}/db1/", "db1", {}, None)
    assert own.get_database().location == f"file://{tmp_path}/db1"
    assert own.list_tables() == ["t"]
    dot = DirectoryUdb(str(tmp_path / "db1"), ".", {}, None)
    assert dot.get_database().name == "db1" and dot.list_tables() == ["t"]
    missing = udb(tmp_path, "nope")
    with pytest.raises(NoSuchDatabaseError, match=f"{tmp_path}/nope"):
        missing.get_database()
    with pytest.raises(NoSuchDatabaseError):
        missing.list_tables()


def test_bad_uri_and_options(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="absolute"):
        DirectoryUdb("relative/path", "db1", {}, None)
    with pytest.raises(InvalidInputError):
        DirectoryUdb(str(tmp_path), "a/b", {}, None)
    with pytest.raises(InvalidOptionError, match="format"):
        udb(tmp_path, format="orc")
    with pytest.raises(InvalidOptionError, match="csv.delimiter"):
        udb(tmp_path, **{"csv.delimiter": ";;"})
    with pytest.raises(InvalidOptionError, match="csv.header"):
        udb(tmp_path, **{"csv.header": "maybe"})
    assert udb(tmp_path, **{"csv.delimiter": "tab"}).csv_delimiter == "\t"
    u = load_udb("directory", str(tmp_path), "db1", {}, Settings(data_dir=tmp_path / "_s"))
    assert isinstance(u, DirectoryUdb)
    u.close()


# -- end to end through the service ----------------------------------------------------------------


def test_attach_and_sync_through_service(tmp_path: Path) -> None:
    from catalog.service import CatalogService

    root = tmp_path / "data"
    db = root / "db1"
    write_parquet(db / "items" / "f.parquet")
    write_parquet(db / "sales" / "year=2020" / "region=eu" / "f.parquet")
    write_parquet(db / "sales" / "year=2020" / "region=us" / "f.parquet")
    write_text(db / "people" / "p.csv", 'id,name\n1,"Smith, J"\n')
    write_parquet(db / "broken" / "f.parquet")
    write_parquet(db / "broken" / "x=1" / "f.parquet")
    (db / "empty").mkdir()

    service = CatalogService(Settings(data_dir=tmp_path / "state"))
    try:
        report = service.attach_database("directory", str(root), "db1")
        assert report.errors == []
        assert service.list_tables("db1") == ["items", "people", "sales"]
        assert report.tables.added == 3 and report.partitions.added == 2
        # the skipped folders are reported to the user, not failures
        assert any("broken" in w for w in report.warnings), report.warnings
        assert any("empty" in w for w in report.warnings), report.warnings
        assert service.partition_names("db1", "sales") == [
            "year=2020/region=eu", "year=2020/region=us"]
        assert service.get_table("db1", "people").sd.serde.serialization_lib == OPEN_CSV_SERDE
        assert service.select_partition_names("db1", "sales", filter_text="region = 'us'") == [
            "year=2020/region=us"]

        unchanged = service.sync("db1")
        assert unchanged.errors == []
        assert (unchanged.tables.updated, unchanged.partitions.updated,
                unchanged.partitions.added) == (0, 0, 0)

        write_parquet(db / "sales" / "year=2021" / "region=eu" / "f.parquet")
        changed = db / "sales" / "year=2020" / "region=eu" / "f.parquet"
        write_parquet(changed, pa.table({"id": [9, 9, 9, 9], "Name": ["z"] * 4,
                                         "price": [0.5] * 4}))
        stat = changed.stat()
        os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        write_parquet(db / "items" / "g.parquet")
        time.sleep(0.01)
        report = service.sync("db1")
        assert report.errors == []
        assert report.partitions.added == 1 and report.partitions.updated == 1
        assert report.partitions.unchanged == 1
        assert report.tables.updated == 2  # sales (partitions) and items (a new file)
        assert service.partition_names("db1", "sales") == [
            "year=2020/region=eu", "year=2020/region=us", "year=2021/region=eu"]
        assert service.get_table("db1", "items").parameters["numFiles"] == "2"
    finally:
        service.close()
