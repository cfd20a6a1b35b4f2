"""Layouts and the served-location policy in the core: switch, revert on source change, bypass,
client views, and that Thrift and REST serve the same thing."""

from __future__ import annotations

import ast
import gc
import sqlite3
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hmsclient.genthrift.hive_metastore import ThriftHiveMetastore
from thrift.protocol import TBinaryProtocol
from thrift.transport import TSocket, TTransport

from api.rest.app import create_app
from api.thrift.server import ThriftServer
from catalog.config import Settings
from catalog.exceptions import (
    InUseError,
    InvalidInputError,
    InvalidOptionError,
    NoSuchPartitionError,
    StateStoreError,
)
from catalog.models import ColumnStatistics, Layout, SerDe
from catalog.service import CatalogService, _PartitionIndexCache
from catalog.serving import ClientView
from catalog.store import SCHEMA_VERSION, StateStore
from tests.support.fake_udb import FakeSource, sample_source

PARQUET_SERDE = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
PARQUET_IN = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
PARQUET_OUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"
P0 = "dt=2024-01-01/h=0"


def layout(partition: str, location: str, fingerprint: str | None = "fp0",
           rows: int = 10) -> Layout:
    return Layout(partition=partition, version=0, location=location, input_format=PARQUET_IN,
                  output_format=PARQUET_OUT, serde=SerDe(serialization_lib=PARQUET_SERDE),
                  parameters={"numRows": str(rows), "numFiles": "1", "totalSize": "123"},
                  column_stats=[ColumnStatistics(column="id", type="bigint", kind="long",
                                                 data={"numNulls": 0, "numDVs": rows})],
                  source_fingerprint=fingerprint)


@pytest.fixture()
def source() -> FakeSource:
    src = sample_source()
    src.tables["sales"]["customers"] = src.tables["sales"]["customers"].model_copy(update={
        "parameters": {"skip.header.line.count": "1"}})
    return src


@pytest.fixture()
def service(tmp_path: Path, source: FakeSource) -> Iterator[CatalogService]:
    svc = CatalogService(Settings(data_dir=tmp_path / "state", sync_interval_s=0),
                         udb_factory=source.factory)
    svc.attach_database("fake", "fake://", "sales")
    yield svc
    svc.close()


def thrift_client(port: int) -> tuple[ThriftHiveMetastore.Client, TTransport.TTransportBase]:
    transport = TTransport.TBufferedTransport(TSocket.TSocket("127.0.0.1", port))
    transport.open()
    return ThriftHiveMetastore.Client(
        TBinaryProtocol.TBinaryProtocolAccelerated(transport)), transport


def test_switch_serves_the_new_layout_everywhere(service: CatalogService, tmp_path: Path) -> None:
    before = service.table_record("sales", "events").version
    new = (tmp_path / "out" / "v1").as_uri()
    version = service.switch_layouts("sales", "events", [layout(P0, new)])
    assert version == before + 1
    (name, part), = service.served_partitions("sales", "events", [P0])
    assert (name, part.sd.location, part.sd.serde.serialization_lib) == (P0, new, PARQUET_SERDE)
    assert part.parameters["numRows"] == "10" and part.column_stats[0].data["numDVs"] == 10
    other = service.served_partitions("sales", "events", ["dt=2024-01-01/h=1"])[0][1]
    assert other.sd.location.endswith("/events/dt=2024-01-01/h=1")  # untouched: the source
    # The source metadata is not rewritten: a switch is no source change.
    assert service.partitions_by_names("sales", "events", [P0])[0].sd.location.startswith(
        "/warehouse")
    srv = ThriftServer(service, "127.0.0.1", 0, idle_timeout_s=5).start()
    trino = ThriftServer(service, "127.0.0.1", 0, idle_timeout_s=5,
                         view=ClientView.TRINO).start()
    try:
        c, t = thrift_client(srv.port)
        p = c.get_partitions_by_names("sales", "events", [P0])[0]
        assert (p.sd.location, p.sd.inputFormat, p.sd.serdeInfo.serializationLib) == (
            new, PARQUET_IN, PARQUET_SERDE)
        t.close()
        c, t = thrift_client(trino.port)
        p = c.get_partitions_by_names("sales", "events", [P0])[0]
        assert p.sd.location == "local://" + new[len("file://"):]
        t.close()
    finally:
        srv.stop()
        trino.stop()
    rest = TestClient(create_app(service))
    page = rest.get("/api/v1/databases/sales/tables/events/partitions").json()
    first = page["partitions"][0]
    assert (first["name"], first["sd"]["location"], first["layout"]) == (P0, new, "transformed v1")
    assert first["source_location"].startswith("/warehouse")
    detail = rest.get("/api/v1/databases/sales/tables/events").json()
    assert detail["layout"] == {"kind": "mixed", "transformed_partitions": 1, "version": None}
    owner = rest.get("/api/v1/locations/owner", params={"location": new + "/part-0.parquet"})
    assert owner.json()["partition"] == P0 and owner.json()["layout_version"] == 1


def test_unpartitioned_switch_drops_text_only_parameters(service: CatalogService,
                                                         tmp_path: Path) -> None:
    new = (tmp_path / "c" / "v1").as_uri()
    service.switch_layouts("sales", "customers", [layout("", new)])
    t = service.served_table("sales", "customers")
    assert (t.sd.location, t.sd.serde.serialization_lib) == (new, PARQUET_SERDE)
    assert "skip.header.line.count" not in t.parameters and t.parameters["numRows"] == "10"
    assert service.get_table("sales", "customers").parameters["skip.header.line.count"] == "1"
    assert service.table_detail("sales", "customers").layout.version == 1
    # A second switch makes version 2 current; version 1 is retired, not deleted.
    service.switch_layouts("sales", "customers", [layout("", new.replace("v1", "v2"))])
    rec = service.table_record("sales", "customers")
    kept = service.store.layouts(rec.id)
    assert [(lay.version, current) for lay, current, _ in kept] == [(1, False), (2, True)]


def test_sync_reverts_a_transformed_partition_whose_source_changed(
        service: CatalogService, source: FakeSource, tmp_path: Path) -> None:
    service.switch_layouts("sales", "events", [
        layout(P0, (tmp_path / "a").as_uri()),
        layout("dt=2024-01-02/h=0", (tmp_path / "b").as_uri())])
    source.touch("/warehouse/sales.db/events/dt=2024-01-01/h=0", "fp1")
    report = service.sync("sales")
    assert report.layouts_reverted == 1 and report.partitions.updated == 1
    served = dict(service.served_partitions("sales", "events", [P0, "dt=2024-01-02/h=0"]))
    assert served[P0].sd.location == "/warehouse/sales.db/events/dt=2024-01-01/h=0"
    assert served["dt=2024-01-02/h=0"].sd.location == (tmp_path / "b").as_uri()
    # The unchanged partition stays transformed through further syncs.
    assert service.sync("sales").layouts_reverted == 0


def test_unpartitioned_table_reverts_when_its_data_changes(
        service: CatalogService, source: FakeSource, tmp_path: Path) -> None:
    service.switch_layouts("sales", "customers", [layout("", (tmp_path / "c").as_uri())])
    source.touch("/warehouse/sales.db/customers", "fp2")
    assert service.sync("sales").layouts_reverted == 1
    assert service.served_table("sales", "customers").sd.location == (
        "/warehouse/sales.db/customers")


def test_switch_refuses_a_layout_of_a_changed_source(service: CatalogService,
                                                     tmp_path: Path) -> None:
    with pytest.raises(InUseError, match="changed since its layout was made"):
        service.switch_layouts("sales", "events", [layout(P0, "file:///x", fingerprint="old")])
    with pytest.raises(NoSuchPartitionError):
        service.switch_layouts("sales", "events", [layout("dt=1999-01-01/h=0", "file:///x")])
    with pytest.raises(InvalidInputError, match="not partitioned"):
        service.switch_layouts("sales", "customers", [layout(P0, "file:///x")])
    with pytest.raises(InvalidInputError, match="two layouts"):
        service.switch_layouts("sales", "events", [layout(P0, "file:///x"),
                                                   layout(P0, "file:///y")])
    assert service.current_layouts("sales", "events") == {}


def test_bypass_tables_serve_the_source(tmp_path: Path, source: FakeSource) -> None:
    svc = CatalogService(Settings(data_dir=tmp_path / "s", sync_interval_s=0),
                         udb_factory=source.factory)
    try:
        svc.attach_database("fake", "fake://", "sales", options={"bypass.tables": "events"})
        svc.switch_layouts("sales", "events", [layout(P0, (tmp_path / "a").as_uri())])
        assert svc.served_partitions("sales", "events", [P0])[0][1].sd.location.startswith(
            "/warehouse")
        assert svc.table_detail("sales", "events").layout.kind == "source"
    finally:
        svc.close()


def test_revert_and_detach_remove_layouts(service: CatalogService, tmp_path: Path) -> None:
    service.switch_layouts("sales", "events", [layout(P0, (tmp_path / "a").as_uri())])
    assert service.revert_layouts("sales", "events") == 1
    assert service.current_layouts("sales", "events") == {}
    service.switch_layouts("sales", "events", [layout(P0, (tmp_path / "a").as_uri())])
    table_id = service.table_record("sales", "events").id
    service.detach_database("sales")
    assert service.store.layouts(table_id) == []


def test_serve_mode_is_validated(tmp_path: Path, source: FakeSource) -> None:
    svc = CatalogService(Settings(data_dir=tmp_path / "s"), udb_factory=source.factory)
    try:
        with pytest.raises(InvalidOptionError, match="direct or cached"):
            svc.attach_database("fake", "fake://", "sales", options={"serve.mode": "Sometimes"})
        with pytest.raises(InvalidOptionError, match="direct or cached"):
            svc.attach_database("fake", "fake://", "sales", options={"serve.mode": "fast"})
        svc.attach_database("fake", "fake://", "sales", options={"serve.mode": "direct"})
        assert svc.database_summary("sales").serve_mode == "direct"
    finally:
        svc.close()


def test_partition_index_cache_is_bounded_in_bytes_and_holds_no_store(tmp_path: Path) -> None:
    names = tuple(f"dt=2024-01-{i:05d}" for i in range(1000))
    index = (names, tuple((n[3:],) for n in names))
    cache = _PartitionIndexCache(max_bytes=3 * _PartitionIndexCache.cost(index))
    for table_id in range(10):
        cache.put((table_id, 1), index)
    assert len(cache) == 3 and cache.size <= cache.max_bytes
    assert cache.get((9, 1)) is index and cache.get((0, 1)) is None
    # A closed service is collectable: nothing module-level keeps its store alive.
    src = sample_source()
    svc = CatalogService(Settings(data_dir=tmp_path / "gc"), udb_factory=src.factory)
    svc.attach_database("fake", "fake://", "sales")
    assert len(svc.partition_names("sales", "events")) == 6
    ref = weakref.ref(svc.store)
    svc.close()
    del svc
    gc.collect()
    assert ref() is None


def test_sqlite_errors_leave_as_state_store_errors(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s")
    with pytest.raises(StateStoreError, match="state store write failed"):
        with store.transaction() as conn:
            conn.execute("INSERT INTO no_such_table VALUES (1)")
    with pytest.raises(StateStoreError):
        with store.transaction() as conn:
            conn.execute("INSERT INTO mounts (path, ufs_uri, options, created_at) "
                         "VALUES ('/a', 'file:///a', '{}', 0)")
            conn.execute("INSERT INTO mounts (path, ufs_uri, options, created_at) "
                         "VALUES ('/a', 'file:///b', '{}', 0)")
    assert store.mounts() == []  # rolled back whole
    with store.transaction() as conn:  # and the store still works
        conn.execute("INSERT INTO mounts (path, ufs_uri, options, created_at) "
                     "VALUES ('/a', 'file:///a', '{}', 0)")
    assert [m.path for m in store.mounts()] == ["/a"]
    assert not isinstance(StateStoreError("x"), sqlite3.Error)


def test_schema_migrates_from_version_1(tmp_path: Path) -> None:
    """A state store of the previous release gains mounts, layouts and partition locations."""
    path = tmp_path / "old"
    path.mkdir()
    from catalog.store import MIGRATIONS
    conn = sqlite3.connect(path / "catalog.db")
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.executescript(str(MIGRATIONS[0]))
    conn.execute("INSERT INTO schema_version VALUES (1)")
    conn.execute("INSERT INTO databases VALUES ('d','fake','u','d','{}','{\"name\":\"d\"}',"
                 "NULL,0,NULL,NULL)")
    conn.execute("INSERT INTO tables (db_name,name,info,version,updated_at) VALUES "
                 "('d','t','{\"db_name\":\"d\",\"name\":\"t\"}',1,0)")
    conn.execute("INSERT INTO partitions VALUES (1,'p=1',"
                 "'{\"values\":[\"1\"],\"db_name\":\"d\",\"table_name\":\"t\","
                 "\"sd\":{\"location\":\"file:///x/p=1\"}}',NULL)")
    conn.commit()
    conn.close()
    store = StateStore(path)
    assert store.schema_version() == SCHEMA_VERSION
    assert store.partition_locations() == [(1, "p=1", "file:///x/p=1")]


def test_catalog_imports_nothing_from_api() -> None:
    root = Path(__file__).resolve().parents[2] / "catalog"
    offenders = []
    for py in root.rglob("*.py"):
        for node in ast.walk(ast.parse(py.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{py.relative_to(root)}: {n}" for n in names
                          if n == "api" or n.startswith("api.")]
    assert offenders == []


def test_cached_mode_serves_every_location_under_the_gateway(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    (lake / "d" / "t" / "k=1").mkdir(parents=True)
    (lake / "d" / "t" / "k=1" / "a.csv").write_text("x\n1\n")
    (lake / "d" / "u").mkdir()
    (lake / "d" / "u" / "b.csv").write_text("y\n2\n")
    svc = CatalogService(Settings(data_dir=tmp_path / "s", sync_interval_s=0))
    try:
        svc.attach_database("directory", lake.as_uri(), "d", options={"serve.mode": "cached"})
        mount = next(m for m in svc.fs.mounts() if not m.builtin)
        assert mount.readonly and mount.ufs_uri == (lake / "d").as_uri()
        bucket = mount.path.lstrip("/")
        assert svc.served_table("d", "u").sd.location == f"s3://{bucket}/u"
        assert svc.served_partitions("d", "t", ["k=1"])[0][1].sd.location == \
            f"s3://{bucket}/t/k=1"
        # The same for every client view, and the mount is in use while the database is.
        assert svc.served_table("d", "u", ClientView.TRINO).sd.location == f"s3://{bucket}/u"
        with pytest.raises(InUseError):
            svc.unmount(mount.path)
        # A second database over the same lake reuses the mount.
        svc.attach_database("directory", lake.as_uri(), "d", name="d2",
                            options={"serve.mode": "cached"})
        assert len([m for m in svc.fs.mounts() if not m.builtin]) == 1
        # direct mode is untouched
        svc.attach_database("directory", lake.as_uri(), "d", name="d3")
        assert svc.served_table("d3", "u").sd.location == (lake / "d" / "u").as_uri()
    finally:
        svc.close()
