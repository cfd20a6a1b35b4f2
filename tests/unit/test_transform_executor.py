"""catalog.transform.executor: a partition plan made into Parquet files with statistics."""

from __future__ import annotations

import base64
import datetime as dt
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from catalog.exceptions import InvalidInputError
from catalog.fs.namespace import Namespace
from catalog.models import Column, Layout, Partition, SerDe, StorageDescriptor, Table
from catalog.store import StateStore
from catalog.transform.definition import TransformDefinition
from catalog.transform.executor import TransformCancelled, execute_partition
from catalog.transform.planner import PartitionInput, PartitionPlan, plan
from catalog.transform.source import LAZY_SIMPLE_SERDE, hive_to_arrow_type, read_source
from catalog.udb.directory import PARQUET_INPUT, PARQUET_OUTPUT, PARQUET_SERDE
from tests.support.source_tables import write_text_files

COLUMNS = [Column(name="id", type="int"), Column(name="name", type="string"),
           Column(name="amount", type="double"), Column(name="d", type="date"),
           Column(name="price", type="decimal(10,2)"), Column(name="flag", type="boolean"),
           Column(name="ts", type="timestamp")]
TEXT_SD = StorageDescriptor(columns=COLUMNS, serde=SerDe(serialization_lib=LAZY_SIMPLE_SERDE,
                                                         parameters={"field.delim": "|"}))
HEADER = "id|name|amount|d|price|flag|ts\n"
FILES = {
    "a.txt": HEADER + "3|cc|1.5|2024-01-03|10.25|true|2024-01-03 10:00:00\n"
                      "1|a|\\N|2024-01-01|-3.10|false|\\N\n",
    "b.txt": HEADER + "2|bbbb|-2.0|\\N|\\N|\\N|2024-01-02 00:00:01\n"
                      "5|a|7.25|2023-12-31|0.00|true|2024-01-05 00:00:00\n",
    "c.txt": HEADER + "4|\\N|0.0|2024-02-01|99.99|true|2024-01-04 12:30:00\n",
}
OUT = "/catalog/db/tables/t/_transformed/dt=1/3"


@pytest.fixture
def ns(tmp_path: Path) -> Namespace:
    return Namespace(StateStore(tmp_path / "state"))


@pytest.fixture
def src(tmp_path: Path) -> dict[str, str]:
    return write_text_files(tmp_path / "src", FILES)


def _table(sd: StorageDescriptor = TEXT_SD, **params: str) -> Table:
    return Table(db_name="db", name="t", sd=sd, parameters={"skip.header.line.count": "1",
                                                            **params},
                 partition_keys=[Column(name="dt", type="string")])


def _partition(sd: StorageDescriptor = TEXT_SD) -> Partition:
    return Partition(values=["1"], db_name="db", table_name="t", sd=sd)


def _plan(groups: list[list[str]], name: str = "dt=1") -> PartitionPlan:
    return PartitionPlan(name=name, location="file:///src", output_files=groups,
                         estimated_bytes=[100 * len(g) for g in groups])


def _run(ns: Namespace, p: PartitionPlan, definition: TransformDefinition | None = None,
         **kw: object) -> Layout:
    args: dict[str, object] = dict(table=_table(), partition=_partition(),
                                   definition=definition or TransformDefinition(), fs=ns,
                                   output_dir=OUT, version=3, source_fingerprint="fp1")
    args.update(kw)
    return execute_partition(p, **args)  # type: ignore[arg-type]


def _data_dir(tmp_path: Path) -> Path:
    return tmp_path / "state" / "catalog" / "db" / "tables" / "t" / "_transformed" / "dt=1" / "3"


def _read(path: Path) -> pa.Table:
    return pq.read_table(path, coerce_int96_timestamp_unit="us")


def test_round_trip_layout_and_files_on_disk(ns: Namespace, src: dict[str, str],
                                             tmp_path: Path) -> None:
    groups = [[src["a.txt"], src["b.txt"]], [src["c.txt"]]]
    calls: list[tuple[int, int, int, int]] = []
    layout = _run(ns, _plan(groups), progress=lambda *a: calls.append(a))
    out = _data_dir(tmp_path)
    files = sorted(p.name for p in out.iterdir())
    assert files == ["part-0.parquet", "part-1.parquet"]
    for i, g in enumerate(groups):
        got = _read(out / f"part-{i}.parquet")
        want = read_source(g, TEXT_SD, COLUMNS, _table().parameters)
        assert got.schema.types == [hive_to_arrow_type(c.type) for c in COLUMNS]
        assert got.column_names == [c.name for c in COLUMNS]
        assert got.equals(want)
    assert layout.partition == "dt=1" and layout.version == 3
    assert layout.location == ns.resolve(OUT)[1]
    assert layout.location.startswith((tmp_path / "state" / "catalog").as_uri() + "/")
    assert (layout.input_format, layout.output_format) == (PARQUET_INPUT, PARQUET_OUTPUT)
    assert layout.serde == SerDe(serialization_lib=PARQUET_SERDE,
                                 parameters={"serialization.format": "1"})
    total = sum((out / f).stat().st_size for f in files)
    assert layout.parameters == {"numRows": "5", "numFiles": "2", "totalSize": str(total)}
    assert layout.source_fingerprint == "fp1"
    size0 = (out / "part-0.parquet").stat().st_size
    # After each output file: the planned bytes and what was written so far.
    ends = [c for prev, c in zip([(0, 0, 0, 0)] + calls, calls) if c[2] != prev[2]]
    assert ends == [(200, 4, size0, 4), (300, 5, total, 5)]
    # Within a file, live: bytes and rows read grow, never past the file's plan.
    live = [c for c in calls if c not in ends]
    assert live and all(c[0] <= (200 if c[3] == 0 else 300) for c in live)
    assert [c[:2] for c in calls] == sorted(c[:2] for c in calls)


def test_with_the_planner_file_count_matches_groups(ns: Namespace, src: dict[str, str],
                                                    tmp_path: Path) -> None:
    d = TransformDefinition(file_size_min=1, file_count_max=2)
    files = [(u, Path(u.removeprefix("file://")).stat().st_size) for u in src.values()]
    (p,) = plan([PartitionInput("dt=1", "file:///src", files)], d)
    layout = _run(ns, p, d)
    assert len(list(_data_dir(tmp_path).iterdir())) == len(p.output_files) == 2
    assert layout.parameters["numFiles"] == "2" and layout.parameters["numRows"] == "5"


def test_unpartitioned_and_parquet_source(ns: Namespace, tmp_path: Path) -> None:
    cols = [Column(name="k", type="bigint"), Column(name="v", type="string")]
    pq.write_table(pa.table({"k": pa.array([1, 2], pa.int32()), "v": ["x", None]}),
                   tmp_path / "p.parquet")
    sd = StorageDescriptor(columns=cols, serde=SerDe(serialization_lib=PARQUET_SERDE))
    t = Table(db_name="db", name="u", sd=sd)
    out = "/catalog/db/tables/u/_transformed/1"
    layout = execute_partition(_plan([[(tmp_path / "p.parquet").as_uri()]], name=""), table=t,
                               partition=None, definition=TransformDefinition(), fs=ns,
                               output_dir=out, version=1, source_fingerprint=None)
    assert layout.partition == ""
    got = _read(tmp_path / "state" / "catalog" / "db" / "tables" / "u" / "_transformed" / "1"
                / "part-0.parquet")
    assert got.to_pydict() == {"k": [1, 2], "v": ["x", None]}
    assert got.schema.field("k").type == pa.int64()


@pytest.mark.parametrize("codec,expected", [("none", "UNCOMPRESSED"), ("zstd", "ZSTD"),
                                            ("gzip", "GZIP"), ("snappy", "SNAPPY")])
def test_compression_honoured(ns: Namespace, src: dict[str, str], tmp_path: Path,
                              codec: str, expected: str) -> None:
    _run(ns, _plan([[src["a.txt"]]]), TransformDefinition(compression=codec))
    md = pq.ParquetFile(_data_dir(tmp_path) / "part-0.parquet").metadata
    rg = md.row_group(0)
    assert {rg.column(j).compression for j in range(rg.num_columns)} == {expected}


def test_row_group_size(ns: Namespace, tmp_path: Path) -> None:
    cols = [Column(name="k", type="bigint")]
    p = tmp_path / "big.txt"
    p.write_text("".join(f"{i}\n" for i in range(10_000)))
    sd = StorageDescriptor(columns=cols, serde=SerDe(serialization_lib=LAZY_SIMPLE_SERDE))
    t = Table(db_name="db", name="t", sd=sd)
    _run(ns, _plan([[p.as_uri()]]), TransformDefinition(row_group_size=8 * 1000), table=t,
         partition=None)
    md = pq.ParquetFile(_data_dir(tmp_path) / "part-0.parquet").metadata
    assert md.num_rows == 10_000
    # rows per group = row.group.size / (nbytes / num_rows) of the Arrow data (~8 bytes a row)
    sizes = [md.row_group(j).num_rows for j in range(md.num_row_groups)]
    assert 10 <= len(sizes) <= 11 and len(set(sizes[:-1])) == 1 and sizes[-1] <= sizes[0]
    assert 900 <= sizes[0] <= 1000


def test_sort_by_honoured(ns: Namespace, src: dict[str, str], tmp_path: Path) -> None:
    groups = [[src["a.txt"], src["b.txt"], src["c.txt"]]]
    _run(ns, _plan(groups), TransformDefinition(sort_by=("NAME", "id")))
    got = _read(_data_dir(tmp_path) / "part-0.parquet")
    # Hive's ASC puts NULLs first.
    assert got.column("name").to_pylist() == [None, "a", "a", "bbbb", "cc"]
    assert got.column("id").to_pylist() == [4, 1, 5, 2, 3]


def test_sort_by_unknown_column_is_refused(ns: Namespace, src: dict[str, str]) -> None:
    with pytest.raises(InvalidInputError, match="nope"):
        _run(ns, _plan([[src["a.txt"]]]), TransformDefinition(sort_by=("nope",)))


def test_statistics_on_known_data(ns: Namespace, src: dict[str, str]) -> None:
    layout = _run(ns, _plan([[src["a.txt"], src["b.txt"]], [src["c.txt"]]]))
    stats = {s.column: s for s in layout.column_stats}
    assert "ts" not in stats  # no stats kind for timestamps
    assert (stats["id"].kind, stats["id"].type) == ("long", "int")
    assert stats["id"].data == {"numNulls": 0, "numDVs": 5, "lowValue": 1, "highValue": 5}
    assert stats["amount"].kind == "double"
    # numDVs counts NULL as one more value (Hive's convention; Trino subtracts it).
    assert stats["amount"].data == {"numNulls": 1, "numDVs": 5, "lowValue": -2.0,
                                    "highValue": 7.25}
    assert stats["name"].kind == "string"
    # a, cc, bbbb, a over 4 non-NULL values; distinct merged across files.
    assert stats["name"].data == {"numNulls": 1, "numDVs": 4, "maxColLen": 4,
                                  "avgColLen": 2.0}
    assert stats["d"].kind == "date"
    assert stats["d"].data == {
        "numNulls": 1, "numDVs": 5,
        "lowValue": {"daysSinceEpoch": (dt.date(2023, 12, 31) - dt.date(1970, 1, 1)).days},
        "highValue": {"daysSinceEpoch": (dt.date(2024, 2, 1) - dt.date(1970, 1, 1)).days}}
    price = stats["price"]
    assert price.kind == "decimal" and price.data["numNulls"] == 1 and price.data["numDVs"] == 5

    def dec(b: dict[str, object]) -> Decimal:
        raw = base64.b64decode(str(b["unscaled"]))
        return Decimal(int.from_bytes(raw, "big", signed=True)).scaleb(-int(str(b["scale"])))

    assert dec(price.data["lowValue"]) == Decimal("-3.10")
    assert dec(price.data["highValue"]) == Decimal("99.99")
    assert stats["flag"].data == {"numNulls": 1, "numTrues": 3, "numFalses": 1}


def test_cancellation_after_first_file_removes_output(ns: Namespace, src: dict[str, str],
                                                      tmp_path: Path) -> None:
    checks: list[int] = []

    def cancelled() -> bool:
        checks.append(1)
        return len(checks) > 1

    with pytest.raises(TransformCancelled, match="cancelled"):
        _run(ns, _plan([[src["a.txt"]], [src["b.txt"]], [src["c.txt"]]]), cancelled=cancelled)
    assert len(checks) == 2
    assert not _data_dir(tmp_path).exists()


def test_failure_on_corrupt_parquet_removes_output(ns: Namespace, tmp_path: Path) -> None:
    cols = [Column(name="k", type="bigint")]
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"k": [1, 2]}), good)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not parquet at all PAR1")
    sd = StorageDescriptor(columns=cols, serde=SerDe(serialization_lib=PARQUET_SERDE))
    t = Table(db_name="db", name="t", sd=sd)
    with pytest.raises(InvalidInputError):
        _run(ns, _plan([[good.as_uri()], [bad.as_uri()]]), table=t, partition=Partition(
            values=["1"], db_name="db", table_name="t", sd=sd))
    assert not _data_dir(tmp_path).exists()


def test_empty_partition(ns: Namespace, tmp_path: Path) -> None:
    (p,) = plan([PartitionInput("dt=1", "file:///src", [])], TransformDefinition())
    assert p.output_files == []
    layout = _run(ns, p)
    assert layout.parameters == {"numRows": "0", "numFiles": "0", "totalSize": "0"}
    out = _data_dir(tmp_path)
    assert out.is_dir() and list(out.iterdir()) == []
    stats = {s.column: s.data for s in layout.column_stats}
    assert stats["id"] == {"numNulls": 0, "numDVs": 0}
