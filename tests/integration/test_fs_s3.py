"""catalog/fs on a real S3 server (moto on loopback): the under-storage contract over local and S3,
S3 mounts, the directory UDB on S3, and S3 outages (through the fault-injecting proxy)."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from api.rest.app import create_app
from catalog.config import Settings
from catalog.exceptions import (
    InvalidInputError,
    NoSuchPathError,
    UfsUnavailableError,
)
from catalog.fs.fingerprint import ABSENT
from catalog.fs.namespace import Namespace
from catalog.fs.ufs import UnderFileSystem, load_ufs
from catalog.service import CatalogService
from tests.support.fault_proxy import FaultProxy
from tests.support.s3 import MotoS3Server, s3_options

pytestmark = pytest.mark.integration


def _parquet(rows: int) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table({"id": list(range(rows)), "name": [f"n{i}" for i in range(rows)]}),
                   buf)
    return buf.getvalue()


def _put(server: MotoS3Server, bucket: str, files: dict[str, bytes]) -> None:
    client = server.client()
    for key, data in files.items():
        client.put_object(Bucket=bucket, Key=key, Body=data)


# -- the under-storage contract, over every implementation ----------------------------------------


@pytest.fixture(params=["local", "s3"])
def ufs_root(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[UnderFileSystem,
                                                                               str]]:
    if request.param == "local":
        yield load_ufs("file:///", {}), (tmp_path / "root").as_uri()
        return
    server: MotoS3Server = request.getfixturevalue("s3_server")
    bucket: str = request.getfixturevalue("s3_bucket")
    ufs = load_ufs(f"s3://{bucket}", server.options())
    yield ufs, f"s3://{bucket}/root"
    ufs.close()


def test_ufs_contract(ufs_root: tuple[UnderFileSystem, str]) -> None:
    ufs, root = ufs_root
    assert ufs.info(f"{root}/nothing") is None
    assert ufs.list(f"{root}/nothing") is None
    assert not ufs.exists(f"{root}/nothing")
    with pytest.raises(NoSuchPathError):
        ufs.open_input(f"{root}/nothing")
    ufs.write_bytes(f"{root}/a/one.bin", b"0123456789")
    ufs.write_bytes(f"{root}/a/b/two.bin", b"xy")
    ufs.mkdirs(f"{root}/a/b")  # existing: no error
    st = ufs.info(f"{root}/a/one.bin")
    assert st is not None and (st.is_dir, st.size, st.name) == (False, 10, "one.bin")
    assert st.mtime_ns > 0 and st.uri == f"{root}/a/one.bin"
    d = ufs.info(f"{root}/a")
    assert d is not None and d.is_dir
    flat = ufs.list(f"{root}/a")
    assert flat is not None
    assert sorted((s.rel, s.is_dir) for s in flat) == [("b", True), ("one.bin", False)]
    deep = ufs.list(f"{root}/a", recursive=True)
    assert deep is not None
    assert sorted(s.rel for s in deep if not s.is_dir) == ["b/two.bin", "one.bin"]
    assert ufs.read_bytes(f"{root}/a/one.bin") == b"0123456789"
    assert ufs.read_range(f"{root}/a/one.bin", 3, 6) == b"345"
    assert ufs.read_range(f"{root}/a/one.bin", 8, 100) == b"89"
    ufs.write_bytes(f"{root}/a/one.bin", b"new")  # replaces
    assert ufs.read_bytes(f"{root}/a/one.bin") == b"new"
    with pytest.raises(InvalidInputError, match="directory"):
        ufs.delete(f"{root}/a")
    ufs.delete(f"{root}/a/one.bin")
    ufs.delete(f"{root}/a/one.bin")  # absent: no error
    assert ufs.info(f"{root}/a/one.bin") is None
    ufs.delete(f"{root}/a", recursive=True)
    assert ufs.list(f"{root}/a", recursive=True) in (None, [])


# -- S3 mounts -------------------------------------------------------------------------------------


def test_s3_mount_ls_stat_cat_and_secrets(tmp_path: Path, s3_server: MotoS3Server,
                                          s3_bucket: str) -> None:
    _put(s3_server, s3_bucket, {"lake/t/a.csv": b"id\n1\n", "lake/t/b.csv": b"id\n2\n3\n"})
    service = CatalogService(Settings(data_dir=tmp_path / "state", sync_interval_s=0))
    try:
        rest = TestClient(create_app(service, token="s3-test-token"),
                          headers={"Authorization": "Bearer s3-test-token"})
        answer = rest.post("/api/v1/fs/mounts", json={
            "path": "/s3lake", "ufs_uri": f"s3a://{s3_bucket}/lake",
            "options": s3_server.options()})
        assert answer.status_code == 201, answer.text
        assert s3_server.secret_key not in answer.text
        assert answer.json()["options"]["s3.aws-secret-key"] == "****"
        listing = rest.get("/api/v1/fs/mounts").text
        assert s3_server.secret_key not in listing and "/s3lake" in listing
        names = [e["name"] for e in rest.get("/api/v1/fs/ls", params={"path": "/s3lake/t"}).json()]
        assert names == ["a.csv", "b.csv"]
        st = rest.get("/api/v1/fs/stat", params={"path": "/s3lake/t/b.csv"}).json()
        assert (st["size"], st["is_dir"], st["ufs_uri"]) == (
            7, False, f"s3a://{s3_bucket}/lake/t/b.csv")
        cat = rest.get("/api/v1/fs/cat", params={"path": "/s3lake/t/b.csv"})
        assert cat.status_code == 200 and cat.content == b"id\n2\n3\n"
        missing = rest.get("/api/v1/fs/stat", params={"path": "/s3lake/t/zzz"})
        assert missing.status_code == 404 and missing.json()["error"]["type"] == "NoSuchPathError"
        # The mount survives a restart, credentials included (never shown).
        service.close()
        service = CatalogService(Settings(data_dir=tmp_path / "state", sync_interval_s=0))
        assert service.fs.read("/s3lake/t/a.csv") == b"id\n1\n"
    finally:
        service.close()


def test_mount_of_a_missing_bucket_is_refused(tmp_path: Path, s3_server: MotoS3Server) -> None:
    ns = Namespace()
    with pytest.raises(NoSuchPathError, match="no such directory or bucket"):
        ns.mount("/x", "s3://strata-no-such-bucket/prefix", s3_server.options())
    assert ns.mounts() == []


def test_unreachable_endpoint_is_unavailable_not_absent(s3_proxy: FaultProxy,
                                                        s3_bucket: str) -> None:
    opts = {**s3_options(s3_proxy.endpoint, "k", "s", "us-east-1"),
            "s3.max-error-retries": "0", "s3.request-timeout": "2", "s3.connect-timeout": "2"}
    ufs = load_ufs(f"s3://{s3_bucket}", opts)
    for mode in ("http_503", "reset", "hang"):
        s3_proxy.mode = mode
        started = time.monotonic()
        with pytest.raises(UfsUnavailableError, match=f"s3://{s3_bucket}/t"):
            ufs.list(f"s3://{s3_bucket}/t", recursive=True)
        assert time.monotonic() - started < 15, mode
    s3_proxy.mode = "pass"
    assert ufs.list(f"s3://{s3_bucket}/t", recursive=True) is None  # reachable again: absent


# -- the directory UDB on S3, and outages during sync ----------------------------------------------


@pytest.fixture
def s3_lake(s3_server: MotoS3Server, s3_bucket: str) -> str:
    files = {"lake/sales/items/part-0.parquet": _parquet(5),
             "lake/sales/orders/dt=2024-01-01/o.csv": b"id,amount\n1,2.5\n",
             "lake/sales/orders/dt=2024-01-02/o.csv": b"id,amount\n2,3.5\n3,4.0\n"}
    _put(s3_server, s3_bucket, files)
    return f"s3://{s3_bucket}/lake"


def test_directory_udb_on_s3_through_a_mount(tmp_path: Path, s3_server: MotoS3Server,
                                             s3_bucket: str, s3_lake: str) -> None:
    service = CatalogService(Settings(data_dir=tmp_path / "state", sync_interval_s=0))
    try:
        service.mount("/lake", s3_lake, s3_server.options())
        report = service.attach_database("directory", "strata:///lake", "sales")
        assert (report.tables.added, report.partitions.added) == (2, 2)
        items = service.get_table("sales", "items")
        assert items.sd.location == f"{s3_lake}/sales/items"
        assert [c.name for c in items.sd.columns] == ["id", "name"]
        orders = service.get_table("sales", "orders")
        assert [k.name for k in orders.partition_keys] == ["dt"]
        # The same lake by its s3:// URI: credentials come from the mount that serves it.
        report = service.attach_database("directory", s3_lake, "sales", name="sales2")
        assert report.tables.added == 2
        assert service.sync("sales").tables.unchanged == 2
        _put(s3_server, s3_bucket, {"lake/sales/items/part-1.parquet": _parquet(3)})
        report = service.sync("sales")
        assert report.tables.updated == 1 and not report.errors
        assert service.get_table("sales", "items").parameters["numFiles"] == "2"
    finally:
        service.close()


def test_s3_outage_during_sync_changes_nothing_served(tmp_path: Path, s3_server: MotoS3Server,
                                                      s3_lake: str, s3_proxy: FaultProxy) -> None:
    opts = {**s3_options(s3_proxy.endpoint, s3_server.access_key, s3_server.secret_key,
                         s3_server.region),
            "s3.max-error-retries": "0", "s3.request-timeout": "2", "s3.connect-timeout": "2"}
    service = CatalogService(Settings(data_dir=tmp_path / "state", sync_interval_s=0))
    try:
        service.mount("/lake", s3_lake, opts)
        service.attach_database("directory", "strata:///lake", "sales")
        before = {t: service.table_record("sales", t) for t in ("items", "orders")}
        parts_before = service.partition_names("sales", "orders")
        for mode in ("http_503", "reset"):
            s3_proxy.mode = mode
            report = service.sync("sales")
            assert report.errors, mode
            assert "cannot" in report.errors[0] and s3_lake.split("/lake")[0] in report.errors[0]
            after = {t: service.table_record("sales", t) for t in ("items", "orders")}
            assert after == before, mode  # same records, same versions: nothing served changed
            assert service.partition_names("sales", "orders") == parts_before
            rest = TestClient(create_app(service, token="s3-test-token"),
                              headers={"Authorization": "Bearer s3-test-token"})
            answer = rest.post("/api/v1/databases/sales/sync")
            assert answer.status_code == 502 and answer.json()["error"]["report"]["errors"]
        s3_proxy.mode = "pass"
        report = service.sync("sales")
        assert not report.errors and report.tables.unchanged == 2
    finally:
        service.close()


def test_fingerprints_of_many_s3_partitions_in_parallel(s3_server: MotoS3Server,
                                                        s3_bucket: str) -> None:
    _put(s3_server, s3_bucket, {f"t/p={i}/f.csv": b"x" * i for i in range(60)})
    parallel, sequential = Namespace(list_parallelism=16), Namespace(list_parallelism=1)
    for ns in (parallel, sequential):
        ns.mount("/b", f"s3://{s3_bucket}", s3_server.options())
    locations = [f"s3://{s3_bucket}/t/p={i}" for i in range(60)] + [f"s3://{s3_bucket}/t/p=x"]
    fps = parallel.fingerprints(locations)
    assert fps == sequential.fingerprints(locations)
    assert fps[f"s3://{s3_bucket}/t/p=x"] == ABSENT
    assert len({fps[loc] for loc in locations[:60]}) == 60
    assert all(fps[loc].startswith("1:") for loc in locations[:60])


def test_grouped_listing_equals_one_listing_per_location(s3_server: MotoS3Server,
                                                         s3_bucket: str,
                                                         s3_proxy: FaultProxy) -> None:
    files = {f"t/p={i}/f.csv": b"x" * i for i in range(30)}
    files.update({"t/p=3/sub/g.csv": b"yy", "t/p=4/_SUCCESS": b"", "t/p=5/.hidden": b"h",
                  "t/p=36": b"a file named like a partition", "t/p=77x/f.csv": b"sibling"})
    _put(s3_server, s3_bucket, files)
    opts = s3_options(s3_proxy.endpoint, s3_server.access_key, s3_server.secret_key,
                      s3_server.region)
    grouped, single = Namespace(group_listing=8), Namespace(group_listing=10**9)
    for ns in (grouped, single):
        ns.mount("/b", f"s3://{s3_bucket}", opts)
    locations = [f"s3://{s3_bucket}/t/p={i}" for i in range(40)]
    before = s3_proxy.requests
    fps = grouped.fingerprints(locations)
    grouped_requests = s3_proxy.requests - before
    before = s3_proxy.requests
    assert fps == single.fingerprints(locations)
    single_requests = s3_proxy.requests - before
    assert fps[f"s3://{s3_bucket}/t/p=35"] == ABSENT
    assert fps[f"s3://{s3_bucket}/t/p=36"] == ABSENT  # a file, not a folder
    assert fps[f"s3://{s3_bucket}/t/p=3"].startswith("2:")
    assert fps[f"s3://{s3_bucket}/t/p=4"].startswith("1:")
    assert grouped_requests <= 3 < 40 <= single_requests
    # An outage is an error in the grouped path too, never "absent".
    fast = Namespace(group_listing=8)
    fast.mount("/b", f"s3://{s3_bucket}", {**opts, "s3.max-error-retries": "0"})
    s3_proxy.mode = "http_503"
    with pytest.raises(UfsUnavailableError):
        fast.fingerprints(locations)
