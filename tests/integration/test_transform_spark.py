"""catalog.transform.spark_executor: the Spark executor makes what the embedded one makes.

One SparkSession (``local[2]``) for the module. Each case plans a partition into two or more
output files, runs :class:`EmbeddedExecutor` and :class:`SparkExecutor` into different output
dirs and compares files (byte for byte), rows, layout parameters and column statistics.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from catalog.config import Settings
from catalog.exceptions import CatalogError, InvalidInputError, InvalidOptionError
from catalog.fs.namespace import Namespace
from catalog.models import Column, Layout, Partition, SerDe, StorageDescriptor, Table
from catalog.store import StateStore
from catalog.transform import executor as executor_module
from catalog.transform.definition import TransformDefinition
from catalog.transform.executor import TransformCancelled, _ColumnStats, _PartitionStats
from catalog.transform.executors import EmbeddedExecutor, PartitionTask, load_executor
from catalog.transform.planner import PartitionInput, PartitionPlan, plan
from catalog.transform.source import LAZY_SIMPLE_SERDE, OPEN_CSV_SERDE, arrow_schema
from catalog.transform.spark_executor import (
    SparkExecutor,
    _package_zip_of,
    _spark_error_line,
    merge_column_stats,
    merge_partition_stats,
)
from catalog.udb.directory import PARQUET_SERDE
from tests.support.s3 import MotoS3Server

pytestmark = pytest.mark.integration

TEXT_COLUMNS = [Column(name="id", type="int"), Column(name="name", type="string"),
                Column(name="amount", type="double"), Column(name="d", type="date"),
                Column(name="price", type="decimal(10,2)"), Column(name="flag", type="boolean"),
                Column(name="ts", type="timestamp")]
TEXT_SD = StorageDescriptor(columns=TEXT_COLUMNS, serde=SerDe(
    serialization_lib=LAZY_SIMPLE_SERDE, parameters={"field.delim": "|"}))
HEADER = "id|name|amount|d|price|flag|ts\n"


def _text_file(k: int) -> str:
    lines = [HEADER]
    for j in range(40):
        n = k * 100 + j
        name = "\\N" if j % 7 == 0 else f"n{n % 13}" + "x" * (j % 5)
        amount = "\\N" if j % 5 == 0 else f"{(n % 17) - 8}.25"
        d = "\\N" if j % 6 == 0 else f"2024-0{1 + j % 9}-{1 + j % 28:02d}"
        price = "\\N" if j % 8 == 0 else f"{n % 31}.{j % 100:02d}"
        flag = "\\N" if j % 9 == 0 else ("true" if n % 3 else "false")
        ts = "\\N" if j % 4 == 0 else f"2024-01-{1 + j % 28:02d} 10:{j % 60:02d}:00"
        lines.append(f"{n}|{name}|{amount}|{d}|{price}|{flag}|{ts}\n")
    return "".join(lines)


@pytest.fixture(scope="module")
def ns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Namespace]:
    namespace = Namespace(StateStore(tmp_path_factory.mktemp("spark-exec") / "state"))
    yield namespace
    namespace.close()


@pytest.fixture(scope="module")
def spark(ns: Namespace) -> Iterator[SparkExecutor]:
    """The module's Spark executor, built as the job runner builds it (database options)."""
    from pyspark import SparkContext

    options = {"spark.master": "local[2]", "spark.ui.enabled": "false",
               "spark.driver.memory": "1g", "transform.executor": "spark",
               "include.tables": ".*"}
    ex = load_executor("spark", ns, options, Settings())
    assert isinstance(ex, SparkExecutor)
    yield ex
    ex.close()
    assert SparkContext._active_spark_context is None  # close() stopped the session


@pytest.fixture(scope="module")
def embedded(ns: Namespace) -> EmbeddedExecutor:
    return EmbeddedExecutor(ns, {}, Settings())


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    return d


def _out() -> str:
    return f"/catalog/db/tables/t/_transformed/dt=1/{uuid.uuid4().hex[:8]}"


def _plan_files(uris: list[str], groups: int) -> PartitionPlan:
    files = [(u, Path(u.removeprefix("file://")).stat().st_size) for u in uris]
    d = TransformDefinition(file_size_min=1, file_count_max=groups)
    (p,) = plan([PartitionInput("dt=1", "file:///src", files)], d)
    assert len(p.output_files) == groups
    return p


def _task(p: PartitionPlan, table: Table, partition: Partition | None,
          definition: TransformDefinition | None = None, out: str | None = None) -> PartitionTask:
    return PartitionTask(plan=p, table=table, partition=partition,
                         definition=definition or TransformDefinition(),
                         output_dir=out or _out(), version=7, source_fingerprint="fp")


def _files(ns: Namespace, out: str) -> dict[str, bytes]:
    return {e.name: ns.read(e.path) for e in ns.ls(out)}


def _rows(data: dict[str, bytes]) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for blob in data.values():
        t = pq.read_table(pa.BufferReader(blob), coerce_int96_timestamp_unit="us")
        rows.extend(zip(*(c.to_pylist() for c in t.columns)))
    return sorted(rows, key=repr)


def _compare(ns: Namespace, embedded: EmbeddedExecutor, spark: SparkExecutor,
             task: PartitionTask) -> tuple[Layout, list[tuple[Any, ...]]]:
    """Run ``task`` with both executors (different output dirs), assert the same result; the
    Spark layout and its rows."""
    spark_task = _task(task.plan, task.table, task.partition, task.definition)
    want = embedded.run(task)
    got = spark.run(spark_task)
    assert got.parameters == want.parameters
    assert got.column_stats == want.column_stats
    assert (got.input_format, got.output_format, got.serde) == (
        want.input_format, want.output_format, want.serde)
    assert (got.partition, got.version, got.source_fingerprint) == ("dt=1", 7, "fp")
    assert got.location == ns.resolve(spark_task.output_dir)[1] != want.location
    want_files, got_files = _files(ns, task.output_dir), _files(ns, spark_task.output_dir)
    n = len(task.plan.output_files)
    assert n >= 2 and sorted(got_files) == [f"part-{i}.parquet" for i in range(n)]
    assert sorted(want_files) == sorted(got_files)
    assert got.parameters["numFiles"] == str(n)
    assert _rows(got_files) == _rows(want_files)
    assert int(got.parameters["numRows"]) == len(_rows(got_files)) > 0
    assert got.parameters["totalSize"] == str(sum(len(b) for b in got_files.values()))
    for name, blob in want_files.items():  # the same writer code: the same bytes
        assert got_files[name] == blob, name
    return got, _rows(got_files)


# -- same output ----------------------------------------------------------------------------------

@pytest.mark.parametrize("definition,memory", [
    (TransformDefinition(), None),
    (TransformDefinition(sort_by=("NAME", "id"), compression="zstd", row_group_size=4096), None),
    (TransformDefinition(), 64 << 20),
], ids=["default", "sorted-zstd", "memory-64m"])
def test_lazy_simple_text_with_header_and_nulls(ns: Namespace, embedded: EmbeddedExecutor,
                                               spark: SparkExecutor, src: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               definition: TransformDefinition,
                                               memory: int | None) -> None:
    if memory is not None:  # both executors bound to the same memory
        embedded = EmbeddedExecutor(ns, {}, Settings(), memory_limit_bytes=memory)
        monkeypatch.setattr(spark, "memory_limit_bytes", memory)
    uris = []
    for k in range(6):
        (src / f"f{k}.txt").write_text(_text_file(k))
        uris.append((src / f"f{k}.txt").as_uri())
    table = Table(db_name="db", name="t", sd=TEXT_SD,
                  parameters={"skip.header.line.count": "1"},
                  partition_keys=[Column(name="dt", type="string")])
    part = Partition(values=["1"], db_name="db", table_name="t", sd=TEXT_SD)
    got, rows = _compare(ns, embedded, spark, _task(_plan_files(uris, 3), table, part,
                                                    definition))
    assert got.parameters["numRows"] == "240"  # 6 files x 40 rows, headers skipped
    stats = {s.column: s.data for s in got.column_stats}
    assert "ts" not in stats
    assert stats["name"]["numNulls"] == 6 * 6  # NULL in 6 of the 40 rows of each file
    assert stats["id"]["numDVs"] == 240 and stats["id"]["lowValue"] == 0
    assert sum(1 for r in rows if r[6] is None) == 6 * 10


def test_open_csv_with_quotes(ns: Namespace, embedded: EmbeddedExecutor, spark: SparkExecutor,
                              src: Path) -> None:
    cols = [Column(name="k", type="int"), Column(name="a", type="string"),
            Column(name="b", type="string")]
    sd = StorageDescriptor(columns=cols, serde=SerDe(serialization_lib=OPEN_CSV_SERDE,
                                                     parameters={"separatorChar": ","}))
    uris = []
    for k in range(4):
        body = "k,a,b\n" + "".join(
            f'{k * 10 + j},"x, {j} ""q""",plain{j}\n{k * 10 + j + 5},,"\\"esc"\n'
            for j in range(3))
        (src / f"c{k}.csv").write_text(body)
        uris.append((src / f"c{k}.csv").as_uri())
    table = Table(db_name="db", name="t", sd=sd, parameters={"skip.header.line.count": "1"})
    _, rows = _compare(ns, embedded, spark, _task(_plan_files(uris, 2), table, None))
    assert (0, 'x, 0 "q"', "plain0") in rows and (5, "", '"esc') in rows


def test_parquet_source_decimals_dates_timestamps(ns: Namespace, embedded: EmbeddedExecutor,
                                                  spark: SparkExecutor, src: Path) -> None:
    cols = [Column(name="k", type="bigint"), Column(name="price", type="decimal(12,3)"),
            Column(name="d", type="date"), Column(name="ts", type="timestamp"),
            Column(name="missing", type="string"), Column(name="ok", type="boolean")]
    uris = []
    for k in range(5):
        n = 30
        t = pa.table({
            "K": pa.array(range(k * n, (k + 1) * n), pa.int32()),  # widened, matched by name
            "price": pa.array([None if i % 4 == 0 else Decimal(f"{k}{i}.125") for i in range(n)],
                              pa.decimal128(12, 3)),
            "d": pa.array([dt.date(2020, 1, 1) + dt.timedelta(days=k * 40 + i)
                           for i in range(n)], pa.date32()),
            "ts": pa.array([dt.datetime(2024, 3, 1, 12, i, k) for i in range(n)],
                           pa.timestamp("ms")),
            "ok": pa.array([None if i % 5 == 0 else i % 2 == 0 for i in range(n)]),
        })
        pq.write_table(t, src / f"p{k}.parquet")
        uris.append((src / f"p{k}.parquet").as_uri())
    sd = StorageDescriptor(columns=cols, serde=SerDe(serialization_lib=PARQUET_SERDE))
    table = Table(db_name="db", name="t", sd=sd)
    got, rows = _compare(ns, embedded, spark, _task(_plan_files(uris, 3), table, None))
    stats = {s.column: s for s in got.column_stats}
    assert stats["price"].kind == "decimal" and stats["price"].data["numNulls"] == 5 * 8
    assert (1, Decimal("1.125"), dt.date(2020, 1, 2), dt.datetime(2024, 3, 1, 12, 1, 0), None,
            False) in rows
    assert stats["d"].data["numDVs"] == 150 and stats["missing"].data["numNulls"] == 150
    assert stats["ok"].data == {"numNulls": 30, "numTrues": 60, "numFalses": 60}


# -- errors, cancellation, progress ---------------------------------------------------------------

def test_bad_data_raises_the_same_error_and_removes_output(
        ns: Namespace, embedded: EmbeddedExecutor, spark: SparkExecutor, src: Path) -> None:
    cols = [Column(name="k", type="bigint")]
    pq.write_table(pa.table({"k": [1, 2]}), src / "good.parquet")
    (src / "bad.parquet").write_bytes(b"PAR1 this is not parquet at all PAR1")
    sd = StorageDescriptor(columns=cols, serde=SerDe(serialization_lib=PARQUET_SERDE))
    table = Table(db_name="db", name="t", sd=sd)
    p = PartitionPlan("dt=1", "file:///src", [[(src / "good.parquet").as_uri()],
                                              [(src / "bad.parquet").as_uri()]], [10, 10])
    errors = []
    for ex in (embedded, spark):
        task = _task(p, table, None)
        with pytest.raises(CatalogError) as info:
            ex.run(task)
        errors.append(info.value)
        with pytest.raises(CatalogError):
            ns.stat(task.output_dir)  # removed
    assert type(errors[1]) is type(errors[0])
    assert isinstance(errors[1], InvalidInputError)
    assert str(errors[1]) == str(errors[0]) and "bad.parquet" in str(errors[1])


def test_bad_sort_key_is_refused_before_spark(ns: Namespace, spark: SparkExecutor,
                                              src: Path) -> None:
    (src / "a.txt").write_text(_text_file(0))
    table = Table(db_name="db", name="t", sd=TEXT_SD)
    task = _task(PartitionPlan("dt=1", "file:///src", [[(src / "a.txt").as_uri()]], [1]),
                 table, None, TransformDefinition(sort_by=("nope",)))
    with pytest.raises(InvalidInputError, match="nope"):
        spark.run(task)


def _big_text(src: Path, k: int, rows: int) -> str:
    p = src / f"big{k}.txt"
    p.write_text("".join(f"{i}|name{i % 1000}|{i}.5|2024-01-01|1.00|true|\\N\n"
                         for i in range(rows)))
    return p.as_uri()


def test_cancellation_while_running_leaves_no_output(ns: Namespace, spark: SparkExecutor,
                                                     src: Path) -> None:
    uris = [_big_text(src, k, 200_000) for k in range(2)]
    # Each task reads its file 6 times: tasks of seconds, without writing more input.
    p = PartitionPlan("dt=1", "file:///src", [[u] * 6 for u in uris * 2], [1] * 4)
    table = Table(db_name="db", name="t", sd=TEXT_SD)
    sc = spark._context()  # the (lazily started) session's context
    seen_running: list[bool] = []

    def cancelled() -> bool:  # true once a task of the job is running
        tracker = sc.statusTracker()
        running = any((tracker.getStageInfo(s) or _NoStage).numActiveTasks > 0
                      for s in tracker.getActiveStageIds())
        if running:
            seen_running.append(True)
        return running

    task = _task(p, table, None)
    started = time.monotonic()
    with pytest.raises(TransformCancelled, match="cancelled"):
        spark.run(task, cancelled=cancelled)
    assert seen_running
    with pytest.raises(CatalogError):
        ns.stat(task.output_dir)
    tracker = sc.statusTracker()
    assert all((tracker.getStageInfo(s) or _NoStage).numActiveTasks == 0
               for s in tracker.getActiveStageIds())
    assert time.monotonic() - started < 120
    # The executor (and its Python workers) still work after a cancelled job.
    small = _task(PartitionPlan("dt=1", "file:///src", [[_big_text(src, 9, 10)]], [1]),
                  table, None)
    assert spark.run(small).parameters["numRows"] == "10"


def test_a_failing_spark_job_is_named_by_the_worker_error(spark: SparkExecutor) -> None:
    sc = spark._context()
    with pytest.raises(Exception) as info:
        sc.parallelize([0], 1).map(lambda x: 1 // x).collect()
    assert _spark_error_line(info.value) == "ZeroDivisionError: integer division or modulo by zero"


class _NoStage:
    numActiveTasks = 0


def test_cancelled_before_start(ns: Namespace, spark: SparkExecutor, src: Path) -> None:
    (src / "a.txt").write_text(_text_file(0))
    table = Table(db_name="db", name="t", sd=TEXT_SD)
    task = _task(PartitionPlan("dt=1", "file:///src", [[(src / "a.txt").as_uri()]], [1]),
                 table, None)
    with pytest.raises(TransformCancelled):
        spark.run(task, cancelled=lambda: True)
    with pytest.raises(CatalogError):
        ns.stat(task.output_dir)


def test_progress_and_empty_plan(ns: Namespace, spark: SparkExecutor, src: Path) -> None:
    uris = []
    for k in range(4):
        (src / f"f{k}.txt").write_text(_text_file(k))
        uris.append((src / f"f{k}.txt").as_uri())
    table = Table(db_name="db", name="t", sd=TEXT_SD,
                  parameters={"skip.header.line.count": "1"})
    p = _plan_files(uris, 4)
    calls: list[tuple[int, int, int, int]] = []
    layout = spark.run(_task(p, table, None), progress=lambda *a: calls.append(a))
    assert calls and calls[-1] == (p.input_bytes, 160, int(layout.parameters["totalSize"]), 160)
    for a, b in zip(calls, calls[1:]):
        assert all(x <= y for x, y in zip(a, b))
    empty = _task(PartitionPlan("dt=1", "file:///src", [], []), table, None)
    layout = spark.run(empty, progress=lambda *a: calls.append(a))
    assert layout.parameters == {"numRows": "0", "numFiles": "0", "totalSize": "0"}
    assert ns.ls(empty.output_dir) == [] and ns.stat(empty.output_dir).is_dir


def test_concurrent_runs_from_threads(ns: Namespace, embedded: EmbeddedExecutor,
                                      spark: SparkExecutor, src: Path) -> None:
    table = Table(db_name="db", name="t", sd=TEXT_SD,
                  parameters={"skip.header.line.count": "1"})
    tasks = []
    for t in range(3):
        uris = []
        for k in range(2):
            (src / f"t{t}-{k}.txt").write_text(_text_file(t * 10 + k))
            uris.append((src / f"t{t}-{k}.txt").as_uri())
        tasks.append(_task(_plan_files(uris, 2), table, None))
    got: dict[int, Layout | BaseException] = {}

    def run(i: int) -> None:
        try:
            got[i] = spark.run(tasks[i])
        except BaseException as e:  # noqa: BLE001 - asserted below
            got[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    for i, task in enumerate(tasks):
        want = embedded.run(_task(task.plan, table, None))
        layout = got[i]
        assert isinstance(layout, Layout), layout
        assert layout.parameters == want.parameters
        assert layout.column_stats == want.column_stats


# -- S3 ------------------------------------------------------------------------------------------

def test_s3_source_and_target_through_mounts(ns: Namespace, embedded: EmbeddedExecutor,
                                             spark: SparkExecutor, s3_server: MotoS3Server,
                                             s3_bucket: str) -> None:
    client = s3_server.client()
    for k in range(4):
        client.put_object(Bucket=s3_bucket, Key=f"lake/t/dt=1/f{k}.txt",
                          Body=_text_file(k).encode())
    tag = uuid.uuid4().hex[:8]
    lake, out = f"/lake-{tag}", f"/out-{tag}"
    ns.mount(lake, f"s3://{s3_bucket}/lake", s3_server.options())
    ns.mount(out, f"s3://{s3_bucket}/out", s3_server.options())
    try:
        # Inputs by namespace path (strata:///) and by S3 URI: both resolved on the driver.
        uris = [f"strata://{lake}/t/dt=1/f0.txt", f"strata://{lake}/t/dt=1/f1.txt",
                f"s3://{s3_bucket}/lake/t/dt=1/f2.txt", f"s3://{s3_bucket}/lake/t/dt=1/f3.txt"]
        p = PartitionPlan("dt=1", f"s3://{s3_bucket}/lake/t/dt=1",
                          [uris[:2], uris[2:3], uris[3:]], [1, 1, 1])
        table = Table(db_name="db", name="t", sd=TEXT_SD,
                      parameters={"skip.header.line.count": "1"})
        want = embedded.run(_task(p, table, None, out=f"{out}/emb/7"))
        got = spark.run(_task(p, table, None, out=f"{out}/spark/7"))
        assert got.location == f"s3://{s3_bucket}/out/spark/7"
        assert got.parameters == want.parameters and got.parameters["numRows"] == "160"
        assert got.column_stats == want.column_stats
        want_files, got_files = _files(ns, f"{out}/emb/7"), _files(ns, f"{out}/spark/7")
        assert sorted(got_files) == ["part-0.parquet", "part-1.parquet", "part-2.parquet"]
        assert got_files == want_files
    finally:
        ns.unmount(out)
        ns.unmount(lake)


# -- statistics merge -----------------------------------------------------------------------------

def _stats_of(values: list[Any], hive_type: str = "int", name: str = "c") -> _PartitionStats:
    cols = [Column(name=name, type=hive_type)]
    s = _PartitionStats(cols, arrow_schema(cols))
    s.add(pa.table({name: pa.array(values, arrow_schema(cols).field(name).type)}))
    return s


def test_merge_matches_one_pass_and_switches_to_estimate_past_the_cap(
        monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = [1, 2, 2, None, 5], [5, 6, None, None, -1]
    merged = merge_partition_stats(_stats_of(a), _stats_of(b)).result()
    assert merged == _stats_of(a + b).result()
    # 5 distinct values plus NULL, counted as Hive counts it.
    assert merged[0].data == {"numNulls": 3, "numDVs": 6, "lowValue": -1, "highValue": 6}
    strings = merge_partition_stats(_stats_of(["ab", None], "string"),
                                    _stats_of(["ab", "cdef"], "string")).result()
    assert strings == _stats_of(["ab", None, "ab", "cdef"], "string").result()

    monkeypatch.setattr(executor_module, "DISTINCT_CAP", 4)
    x, y = _stats_of([1, 2, 3]), _stats_of([3, 4, 5])
    col: _ColumnStats = merge_column_stats(x.columns[0], y.columns[0])
    assert not col.exact and col.uniques is None and col.dv_estimate == 5
    # Inexact on one side: the distinct counts are summed (an upper bound), capped at non-NULLs.
    more = merge_column_stats(col, _stats_of([1, 9]).columns[0])
    assert not more.exact and more.dv_estimate == 7
    assert more.result().data["numDVs"] == 7 and more.rows == 8
    with pytest.raises(ValueError):
        merge_partition_stats(_stats_of([1]), _stats_of([1], name="other"))


def test_shipped_package_zip_imports_the_worker_code(tmp_path: Path) -> None:
    zip_path = _package_zip_of(tmp_path)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "import catalog.transform.spark_executor as m; print(m.__file__)")
    out = subprocess.run([sys.executable, "-c", code, zip_path], cwd=tmp_path, check=True,
                         capture_output=True, text=True, timeout=120).stdout.strip()
    assert out == f"{zip_path}/catalog/transform/spark_executor.py"


def test_executor_options(tmp_path: Path) -> None:
    ex = SparkExecutor(Namespace(root_ufs=tmp_path.as_uri()),
                       {"spark.executor.memory": "2g", "sync.interval": "0",
                        "spark.app.name": "x"}, Settings())
    assert ex.master == "local[*]" and ex.app_name == "x"
    assert ex.conf["spark.executor.memory"] == "2g" and "sync.interval" not in ex.conf
    assert ex.memory_limit_bytes == Settings().transform_memory_limit_bytes
    sized = SparkExecutor(Namespace(), {"spark.executor.pyspark.memory": "1536m"}, Settings())
    assert sized.memory_limit_bytes == 1536 << 20
    assert SparkExecutor(Namespace(), {}, Settings(), memory_limit_bytes=7).memory_limit_bytes == 7
    with pytest.raises(InvalidOptionError, match="pyspark.memory"):
        SparkExecutor(Namespace(), {"spark.executor.pyspark.memory": "lots"}, Settings())
    with pytest.raises(InvalidOptionError, match="speculation"):
        SparkExecutor(Namespace(), {"spark.speculation": "true"}, Settings())
    ex.close()
    with pytest.raises(CatalogError, match="closed"):
        ex.run(_task(PartitionPlan("", "file:///x", [["file:///x/a"]], [1]),
                     Table(db_name="db", name="t", sd=TEXT_SD), None,
                     out="/catalog/x"))  # refused before any Spark session exists
    assert not (tmp_path / "x").exists()
