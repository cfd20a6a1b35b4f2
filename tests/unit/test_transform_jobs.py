"""Transformation jobs (catalog/transform/jobs.py) over a real directory lake of CSV files:
submit, run, switch, cancel, fail and clean up, resume after a restart, policy, garbage, and the
REST / CLI front ends."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from api.cli import main
from api.rest.app import create_app
from catalog.config import Settings
from catalog.exceptions import (
    InUseError,
    InvalidInputError,
    InvalidOptionError,
    NoSuchPartitionError,
    NotFoundError,
)
from catalog.service import CatalogService
from tests.support.s3_gateway import GatewayServer

TOKEN = "jobs-test-token-0123456789"
PARQUET_SERDE = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"


def _write_lake(root: Path, files_per_partition: int = 4, rows: int = 50) -> None:
    for region in ("east", "west"):
        d = root / "sales" / f"region={region}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(files_per_partition):
            lines = ["id,amount,day"] + [
                f"{i * rows + j},{(i * rows + j) % 97 / 4},2024-01-{1 + j % 28:02d}"
                for j in range(rows)]
            (d / f"part{i}.csv").write_text("\n".join(lines) + "\n")
    items = root / "items"
    items.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        (items / f"i{i}.csv").write_text(
            "item,price\n" + "".join(f"{i * 10 + j},{j * 1.5}\n" for j in range(10)))


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    root = tmp_path / "lake"
    _write_lake(root)
    return root


def _service(tmp_path: Path, **settings: object) -> CatalogService:
    return CatalogService(Settings(data_dir=tmp_path / "state", sync_interval_s=0,
                                   **settings))  # type: ignore[arg-type]


@pytest.fixture
def svc(tmp_path: Path, lake: Path) -> Iterator[CatalogService]:
    service = _service(tmp_path)
    service.attach_database("directory", lake.as_uri(), "lake")
    service.transforms.start()
    yield service
    service.close()


def _csv_rows(lake: Path, table: str) -> list[tuple[object, ...]]:
    con = duckdb.connect()
    return sorted(con.execute(
        f"SELECT * EXCLUDE (filename) FROM read_csv('{lake}/{table}/**/*.csv', header=true, "
        "filename=true, hive_partitioning=false)").fetchall())


def _parquet_rows(location: str) -> list[tuple[object, ...]]:
    path = location.removeprefix("file://")
    table = pq.read_table(path)
    return sorted(tuple(r.values()) for r in table.to_pylist())


def _files(location: str) -> list[str]:
    return sorted(p.name for p in Path(location.removeprefix("file://")).iterdir())


def test_job_transforms_switches_and_serves_parquet(svc: CatalogService, lake: Path) -> None:
    before = svc.table_record("lake", "sales").version
    job = svc.transforms.submit("lake", "sales", "file.size.min=1KB")
    assert job.state in ("queued", "running") and job.partitions_total == 2
    done = svc.transforms.wait(job.id, 60)
    assert done.state == "succeeded", done.error
    assert done.partitions_done == 2 and done.rows_written == 400
    assert done.started_at is not None and done.finished_at is not None
    assert done.duration_s is not None and done.duration_s >= 0
    assert done.table_version == svc.table_record("lake", "sales").version == before + 1
    names = svc.partition_names("lake", "sales")
    served = svc.served_partitions("lake", "sales", names)
    layouts = svc.current_layouts("lake", "sales")
    source_rows = []
    for name, (_, part) in zip(names, served):
        layout = layouts[name]
        assert layout.version == job.id
        assert part.sd.serde.serialization_lib == PARQUET_SERDE
        assert part.sd.location == layout.location
        assert f"/_transformed/{name}/{job.id}" in part.sd.location
        assert part.parameters["numRows"] == "200"
        assert int(part.parameters["numFiles"]) == len(_files(part.sd.location)) >= 2
        source_rows += _parquet_rows(part.sd.location)
    con = duckdb.connect()
    expected = sorted(con.execute(
        f"SELECT id, amount, day FROM read_csv('{lake}/sales/*/*.csv', header=true)").fetchall())
    got = sorted((r[0], r[1], r[2]) for r in source_rows)
    assert got == expected
    outs = svc.partition_outs("lake", "sales", names)
    assert [o.layout_version for o in outs] == [job.id, job.id]
    assert not any(o.stale for o in outs)


def test_unpartitioned_table_and_statistics(svc: CatalogService) -> None:
    job = svc.transforms.wait(svc.transforms.submit("lake", "items").id, 60)
    assert job.state == "succeeded", job.error
    table = svc.served_table("lake", "items")
    assert table.sd.serde.serialization_lib == PARQUET_SERDE
    assert table.parameters["numRows"] == "30"
    stats = {s.column: s for s in svc.current_layouts("lake", "items")[""].column_stats}
    assert stats["item"].data["lowValue"] == 0 and stats["item"].data["highValue"] == 29
    assert stats["item"].data["numDVs"] == 30


def test_one_active_job_per_table(tmp_path: Path, lake: Path) -> None:
    service = _service(tmp_path)  # not started: jobs stay queued
    try:
        service.attach_database("directory", lake.as_uri(), "lake")
        first = service.transforms.submit("lake", "sales")
        with pytest.raises(InUseError, match=f"job {first.id}"):
            service.transforms.submit("lake", "sales")
        other = service.transforms.submit("lake", "items")  # another table is fine
        assert other.state == "queued"
        cancelled = service.transforms.cancel(first.id)
        assert cancelled.state == "cancelled"
        with pytest.raises(InUseError, match="already cancelled"):
            service.transforms.cancel(first.id)
        service.transforms.submit("lake", "sales")  # free again
    finally:
        service.close()


@pytest.mark.parametrize("definition, message", [
    ("file.count.max=0", "file.count.max"),
    ("colour=blue", "unknown transform definition key 'colour'"),
    ("file.size.min=12 parsecs", "file.size.min"),
    ("file.parquet.compression=brotli9", "file.parquet.compression"),
])
def test_bad_definitions_name_the_key(svc: CatalogService, definition: str,
                                      message: str) -> None:
    with pytest.raises(InvalidOptionError, match=message):
        svc.transforms.submit("lake", "sales", definition)
    assert svc.transforms.jobs(db="lake") == []


def test_bad_requests(svc: CatalogService) -> None:
    with pytest.raises(InvalidInputError, match="sort.by names column 'nope'"):
        svc.transforms.submit("lake", "sales", "sort.by=nope")
    with pytest.raises(NoSuchPartitionError):
        svc.transforms.submit("lake", "sales", partitions=["region=north"])
    with pytest.raises(InvalidInputError, match="not partitioned"):
        svc.transforms.submit("lake", "items", partitions=["x=1"])
    with pytest.raises(NotFoundError):
        svc.transforms.submit("lake", "nothing")
    with pytest.raises(NotFoundError, match="job 999"):
        svc.transforms.get(999)


def test_attach_validates_transform_options(tmp_path: Path, lake: Path) -> None:
    service = _service(tmp_path)
    try:
        for options, message in [
            ({"transform.policy": "sometimes"}, "transform.policy"),
            ({"transform.policy": "cron:61 * * * *"}, "cron expression"),
            ({"transform.definition": "file.count.max=-1"}, "file.count.max"),
            ({"transform.executor": "pandas"}, "transform.executor"),
        ]:
            with pytest.raises(InvalidOptionError, match=message):
                service.attach_database("directory", lake.as_uri(), "lake", options=options)
        assert service.list_databases() == ["default"] or "lake" not in service.list_databases()
    finally:
        service.close()


def test_failed_job_switches_nothing_and_removes_its_output(svc: CatalogService,
                                                            lake: Path) -> None:
    import pyarrow as pa

    bad = lake / "pq"
    bad.mkdir()
    for i in range(3):
        pq.write_table(pa.table({"x": list(range(i * 5, i * 5 + 5))}), bad / f"f{i}.parquet")
    svc.sync("lake")
    assert "pq" in svc.list_tables("lake")
    # Corrupted after the sync: the job reads it and must fail, naming the file.
    (bad / "f1.parquet").write_bytes(b"PAR1 this is not a parquet file PAR1")
    job = svc.transforms.wait(svc.transforms.submit("lake", "pq", "file.size.min=1").id, 60)
    assert job.state == "failed" and "f1.parquet" in (job.error or "")
    assert svc.current_layouts("lake", "pq") == {}
    assert svc.served_table("lake", "pq").sd.location == bad.as_uri()
    out = Path(str(svc.settings.data_dir)) / "catalog" / "lake" / "tables" / "pq"
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))


def test_failure_in_one_partition_removes_the_others(svc: CatalogService, lake: Path) -> None:
    job = svc.transforms.submit("lake", "sales", "sort.by=amount")
    done = svc.transforms.wait(job.id, 60)
    assert done.state == "succeeded"
    # Now a partition whose file vanishes between planning and reading fails the job.
    victim = lake / "sales" / "region=west" / "part0.csv"
    original = svc.transforms._data_files

    def vanishing(location: str) -> list[tuple[str, int]]:
        files = original(location)
        if "region=west" in location:
            victim.unlink(missing_ok=True)
        return files

    svc.transforms._data_files = vanishing  # type: ignore[method-assign]
    try:
        again = svc.transforms.wait(svc.transforms.submit("lake", "sales").id, 60)
    finally:
        svc.transforms._data_files = original  # type: ignore[method-assign]
    assert again.state == "failed" and "region=west" in (again.error or "")
    # The first job's layouts are still served; the failed job left no directory behind.
    assert {lay.version for lay in svc.current_layouts("lake", "sales").values()} == {job.id}
    root = Path(str(svc.settings.data_dir)) / "catalog" / "lake" / "tables" / "sales"
    assert not list(root.rglob(f"_transformed/*/{again.id}"))


def test_cancel_running_job(tmp_path: Path, lake: Path) -> None:
    _write_lake(lake, files_per_partition=40, rows=200)
    service = _service(tmp_path, transform_parallelism=1)
    try:
        service.attach_database("directory", lake.as_uri(), "lake")
        service.transforms.start()
        job = service.transforms.submit("lake", "sales", "file.size.min=1KB; file.count.max=40")
        deadline = time.monotonic() + 30
        while service.transforms.get(job.id).state == "queued" and time.monotonic() < deadline:
            time.sleep(0.01)
        service.transforms.cancel(job.id)
        done = service.transforms.wait(job.id, 60)
        assert done.state in ("cancelled", "succeeded")
        if done.state == "cancelled":
            assert service.current_layouts("lake", "sales") == {}
            root = Path(str(service.settings.data_dir)) / "catalog"
            assert not [p for p in root.rglob("*.parquet")]
    finally:
        service.close()


def test_stale_source_refuses_the_switch(tmp_path: Path, lake: Path) -> None:
    service = _service(tmp_path)
    try:
        service.attach_database("directory", lake.as_uri(), "lake")
        job = service.transforms.submit("lake", "items")  # queued: not started yet
        (lake / "items" / "i9.csv").write_text("item,price\n99,1.0\n")
        assert service.sync("lake").tables.updated == 1
        service.transforms.start()
        done = service.transforms.wait(job.id, 60)
        assert done.state == "failed" and "changed" in (done.error or "")
        assert service.current_layouts("lake", "items") == {}
        root = Path(str(service.settings.data_dir)) / "catalog"
        assert not list(root.rglob("*.parquet"))
    finally:
        service.close()


def test_jobs_resume_after_restart(tmp_path: Path, lake: Path) -> None:
    service = _service(tmp_path)
    service.attach_database("directory", lake.as_uri(), "lake")
    job = service.transforms.submit("lake", "sales", "file.size.min=1KB")
    # As a killed process leaves it: the job running, one task running with partial output.
    store = service.store
    with store.transaction() as conn:
        store.update_job(conn, job.id, state="running", started_at=time.time())
        store.update_task(conn, job.id, "region=east", state="running")
    partial = (Path(str(service.settings.data_dir)) / "catalog" / "lake" / "tables" / "sales"
               / "_transformed" / "region=east" / str(job.id))
    partial.mkdir(parents=True)
    (partial / "part-0.parquet").write_bytes(b"half a file")
    service.close()

    again = _service(tmp_path)
    try:
        again.transforms.start()
        done = again.transforms.wait(job.id, 60)
        assert done.state == "succeeded", done.error
        lay = again.current_layouts("lake", "sales")["region=east"]
        assert _parquet_rows(lay.location)  # the half file was replaced by a real one
        assert all(pq.read_metadata(Path(lay.location.removeprefix("file://")) / f)
                   for f in _files(lay.location))
    finally:
        again.close()


def test_on_change_policy_reverts_then_retransforms(tmp_path: Path, lake: Path) -> None:
    service = _service(tmp_path)
    try:
        service.attach_database("directory", lake.as_uri(), "lake",
                                options={"transform.policy": "on-change",
                                         "transform.definition": "file.size.min=1KB"})
        service.transforms.start()
        first = service.transforms.wait(service.transforms.submit("lake", "sales").id, 60)
        assert first.state == "succeeded" and first.definition.startswith("file.count.max")
        assert "file.size.min=1KiB" in first.definition
        (lake / "sales" / "region=east" / "part9.csv").write_text("id,amount,day\n9999,1.5,"
                                                                  "2024-02-01\n")
        report = service.sync("lake")
        assert report.layouts_reverted == 1
        outs = {o.name: o for o in service.partition_outs(
            "lake", "sales", service.partition_names("lake", "sales"))}
        assert outs["region=east"].layout == "source"
        assert outs["region=west"].layout_version == first.id
        jobs = service.transforms.jobs(db="lake", table="sales")
        assert jobs[0].id != first.id and jobs[0].trigger == "on-change"
        second = service.transforms.wait(jobs[0].id, 60)
        assert second.state == "succeeded", second.error
        assert [p.partition for p in second.partitions] == ["region=east"]
        lay = service.current_layouts("lake", "sales")["region=east"]
        assert lay.version == second.id and lay.parameters["numRows"] == "201"
        assert (9999, 1.5) in {(r[0], r[1]) for r in _parquet_rows(lay.location)}
    finally:
        service.close()


def test_stale_partitions_are_shown(svc: CatalogService, lake: Path) -> None:
    job = svc.transforms.wait(svc.transforms.submit("lake", "sales").id, 60)
    (lake / "sales" / "region=west" / "part0.csv").write_text("id,amount,day\n1,2.0,2024-01-01\n")
    svc.sync("lake")
    outs = {o.name: o for o in svc.partition_outs("lake", "sales",
                                                  svc.partition_names("lake", "sales"))}
    assert outs["region=west"].stale and outs["region=west"].layout == "source"
    assert not outs["region=east"].stale and outs["region=east"].layout_version == job.id


def test_cron_policy_submits_untransformed_tables(tmp_path: Path, lake: Path) -> None:
    service = _service(tmp_path)
    try:
        service.attach_database("directory", lake.as_uri(), "lake",
                                options={"transform.policy": "cron:0 3 * * *"})
        service.transforms.start()
        assert service.transforms._cron_jobs == {"lake": "0 3 * * *"}
        ids = service.transforms.run_cron("lake")
        assert len(ids) == 2
        for job_id in ids:
            assert service.transforms.wait(job_id, 60).state == "succeeded"
        assert service.transforms.run_cron("lake") == []  # nothing left to do
    finally:
        service.close()


def test_garbage_collection_keeps_current_layouts(svc: CatalogService, lake: Path) -> None:
    first = svc.transforms.wait(svc.transforms.submit("lake", "items").id, 60)
    old = svc.current_layouts("lake", "items")[""].location
    (lake / "items" / "i0.csv").write_text("item,price\n1,1.0\n")
    svc.sync("lake")
    second = svc.transforms.wait(svc.transforms.submit("lake", "items").id, 60)
    assert second.state == "succeeded" and first.id != second.id
    current = svc.current_layouts("lake", "items")[""].location
    stray = (Path(str(svc.settings.data_dir)) / "catalog" / "lake" / "tables" / "items"
             / "_transformed" / "424242")
    stray.mkdir(parents=True)
    (stray / "part-0.parquet").write_bytes(b"orphan")
    # Within the grace period the old layout stays; the orphan goes.
    assert svc.transforms.collect_garbage() == {"layouts": 0, "orphans": 1}
    assert Path(old.removeprefix("file://")).exists() and not stray.exists()
    later = time.time() + svc.settings.transform_gc_grace_s + 1
    assert svc.transforms.collect_garbage(now=later) == {"layouts": 1, "orphans": 0}
    assert not Path(old.removeprefix("file://")).exists()
    assert Path(current.removeprefix("file://")).exists()
    assert _parquet_rows(current) == [(1, 1.0)] + sorted(
        (i * 10 + j, j * 1.5) for i in (1, 2) for j in range(10))


# -- REST and CLI ---------------------------------------------------------------------------------


def test_rest_transforms(svc: CatalogService) -> None:
    client = TestClient(create_app(svc, token=TOKEN))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.post("/api/v1/transforms", json={"db": "lake", "table": "items"}
                       ).status_code == 401
    r = client.post("/api/v1/transforms", json={"db": "lake", "table": "items",
                                                "definition": "file.count.max=0"}, headers=auth)
    assert r.status_code == 422 and "file.count.max" in r.json()["error"]["message"]
    r = client.post("/api/v1/transforms", json={"db": "lake", "table": "items"}, headers=auth)
    assert r.status_code == 202
    job_id = r.json()["id"]
    svc.transforms.wait(job_id, 60)
    got = client.get(f"/api/v1/transforms/{job_id}").json()
    assert got["state"] == "succeeded" and got["partitions"][0]["rows_written"] == 30
    for key in ("started_at", "finished_at", "duration_s"):
        assert got[key] is not None
    listed = client.get("/api/v1/transforms", params={"db": "lake", "state": "succeeded"}).json()
    assert [j["id"] for j in listed] == [job_id] and listed[0]["partitions"] == []
    assert client.get("/api/v1/transforms", params={"state": "bogus"}).status_code == 422
    assert client.get("/api/v1/transforms/77777").status_code == 404
    r = client.post(f"/api/v1/transforms/{job_id}/cancel", headers=auth)
    assert r.status_code == 409


@pytest.fixture
def rest_url(svc: CatalogService, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with GatewayServer(create_app(svc, token=TOKEN)) as rest:
        monkeypatch.setenv("CATALOG_SERVER", rest.endpoint)
        monkeypatch.setenv("CATALOG_API_TOKEN", TOKEN)
        yield rest.endpoint


def test_cli_transform_wait_status_and_ls(svc: CatalogService, rest_url: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["transform", "lake", "sales", "-d", "file.size.min=1KB", "--partition",
                 "region=east", "--wait"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "succeeded" in out and "200 rows" in out
    job_id = svc.transforms.jobs(db="lake")[0].id
    assert main(["transform-status", str(job_id)]) == 0
    out, _ = capsys.readouterr()
    assert "region=east" in out and "succeeded" in out
    assert main(["transform-status", "--json"]) == 0
    out, _ = capsys.readouterr()
    assert f'"id": {job_id}' in out
    assert main(["ls", "lake", "sales"]) == 0
    out, _ = capsys.readouterr()
    assert f"transformed v{job_id}" in out and "STALE" in out
    assert main(["transform-cancel", str(job_id)]) == 1  # already finished
    _, err = capsys.readouterr()
    assert "already succeeded" in err
    assert main(["transform-status", "abc"]) == 2
    assert main(["transform", "lake", "sales", "-d", "nope=1"]) == 2
    _, err = capsys.readouterr()
    assert "unknown transform definition key 'nope'" in err
    assert "UNPARSEABLE" not in out  # a job without side files shows no such column
    assert main(["transform", "lake", "sales", "-d", "unparseable=side-file", "--partition",
                 "region=east", "--wait"]) == 0
    side_job = svc.transforms.jobs(db="lake")[0].id
    capsys.readouterr()
    assert main(["transform-status", str(side_job)]) == 0
    out, _ = capsys.readouterr()
    header = next(line for line in out.splitlines() if "PARTITION" in line)
    row = next(line for line in out.splitlines() if "region=east" in line)
    assert "UNPARSEABLE" in header and row.split()[-2:] == ["0", "-"]  # a clean source: none


def test_cli_transform_without_wait_prints_the_job(svc: CatalogService, rest_url: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["transform", "lake", "items"]) == 0
    out, _ = capsys.readouterr()
    job_id = svc.transforms.jobs(db="lake")[0].id
    assert out.startswith(f"job {job_id} ")
    assert svc.transforms.wait(job_id, 60).state == "succeeded"
