"""A real Hive 4.0.1 metastore as a source: what the Hive 2.3 IDL client (hmsclient) gets back.

One server per module, filled by :func:`populate_via_thrift`. Besides checking the data,
these tests pin the compatibility facts Strata relies on: Hive 4 removed ``get_table`` and
``get_table_objects_by_name`` ("Invalid method name"), while the ``*_req`` variants and the
partition / statistics / schema calls still answer, and its Table/Partition/Database structs
(with fields the old IDL does not know) decode with both Thrift binary protocols.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from hmsclient import hmsclient
from hmsclient.genthrift.hive_metastore import ttypes as hms
from thrift.protocol import TBinaryProtocol
from thrift.Thrift import TApplicationException
from thrift.transport import TSocket, TTransport

from api.thrift.server import ThriftServer
from catalog.config import Settings
from catalog.service import CatalogService
from tests.support.hms import open_client
from tests.support.hms4 import Hive4Metastore, hive4_unavailable_reason
from tests.support.hms_populate import (
    CUSTOMERS_COLUMNS,
    ORDERS_COLUMNS,
    PARTITIONS,
    SALES_COLUMNS,
    STATS_PARTITION,
    TABLES,
    VIEW_ORIGINAL_TEXT,
    partition_name,
    populate_via_thrift,
    pyarrow_available,
    view_expanded_text,
)

_UNAVAILABLE = hive4_unavailable_reason()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(_UNAVAILABLE is not None, reason=_UNAVAILABLE or ""),
]

DB = "sales"
ALL_PARTS = sorted(partition_name(y, r) for y, r in PARTITIONS)


def _expected_tables() -> set[str]:
    return {n for n, spec in TABLES.items() if pyarrow_available() or not spec.needs_pyarrow}


@pytest.fixture(scope="module")
def hive4(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hive4Metastore]:
    work = tmp_path_factory.mktemp("hive4")
    with Hive4Metastore(work / "hms") as server:
        populate_via_thrift(server.uri, work / "data", db=DB)
        yield server


@pytest.fixture()
def client(hive4: Hive4Metastore) -> Iterator[hmsclient.HMSClient]:
    c = hive4.client()
    try:
        yield c
    finally:
        c.close()


def _get_table(c: hmsclient.HMSClient, name: str) -> hms.Table:
    return c.get_table_req(hms.GetTableRequest(dbName=DB, tblName=name)).table


def test_server_identity(hive4: Hive4Metastore) -> None:
    assert hive4.uri == f"thrift://127.0.0.1:{hive4.port}"
    assert hive4.pid is not None
    assert "version = 4.0.1" in hive4.log_file.read_text(errors="replace")


def test_databases_and_table_listing(client: hmsclient.HMSClient) -> None:
    assert DB in client.get_all_databases()
    assert DB in client.get_databases("sal*")
    db = client.get_database(DB)
    assert db.name == DB and db.ownerName == "strata"
    assert set(client.get_all_tables(DB)) == _expected_tables()
    assert set(client.get_tables(DB, "*")) == _expected_tables()
    assert set(client.get_tables_by_type(DB, "*", "VIRTUAL_VIEW")) == {"big_orders"}
    metas = {m.tableName: m.tableType for m in client.get_table_meta(DB, "*", [])}
    assert metas == {n: TABLES[n].table_type for n in _expected_tables()}


def test_text_table(client: hmsclient.HMSClient, hive4: Hive4Metastore) -> None:
    t = _get_table(client, "orders_text")
    assert t.tableType == "EXTERNAL_TABLE"
    assert [(c.name, c.type) for c in t.sd.cols] == list(ORDERS_COLUMNS)
    assert t.sd.serdeInfo.serializationLib.endswith("LazySimpleSerDe")
    assert t.sd.serdeInfo.parameters["field.delim"] == "|"
    assert t.sd.serdeInfo.parameters["serialization.null.format"] == "\\N"
    assert t.parameters["skip.header.line.count"] == "1"
    assert t.parameters["EXTERNAL"] == "TRUE"
    location = Path(t.sd.location.removeprefix("file:"))
    assert (location / "orders.txt").is_file()


def test_csv_and_parquet_tables(client: hmsclient.HMSClient) -> None:
    csv = _get_table(client, "customers_csv")
    assert csv.sd.serdeInfo.serializationLib == "org.apache.hadoop.hive.serde2.OpenCSVSerde"
    assert csv.sd.serdeInfo.parameters["separatorChar"] == ","
    assert [(c.name, c.type) for c in csv.sd.cols] == list(CUSTOMERS_COLUMNS)
    if not pyarrow_available():
        pytest.skip("pyarrow not installed: no Parquet table")
    pq = _get_table(client, "events_parquet")
    assert pq.sd.serdeInfo.serializationLib.endswith("ParquetHiveSerDe")
    assert pq.sd.inputFormat.endswith("MapredParquetInputFormat")
    assert (Path(pq.sd.location.removeprefix("file:")) / "events.parquet").is_file()


def test_view(client: hmsclient.HMSClient) -> None:
    v = _get_table(client, "big_orders")
    assert v.tableType == "VIRTUAL_VIEW"
    assert v.viewOriginalText == VIEW_ORIGINAL_TEXT
    assert v.viewExpandedText == view_expanded_text(DB)
    assert v.sd.location is None


def test_get_table_objects_by_name_req(client: hmsclient.HMSClient) -> None:
    req = hms.GetTablesRequest(dbName=DB, tblNames=["orders_text", "sales_part", "missing"])
    tables = client.get_table_objects_by_name_req(req).tables
    assert sorted(t.tableName for t in tables) == ["orders_text", "sales_part"]


def test_partitions(client: hmsclient.HMSClient) -> None:
    t = _get_table(client, "sales_part")
    assert [(k.name, k.type) for k in t.partitionKeys] == [("year", "int"), ("region", "string")]
    assert [(c.name, c.type) for c in t.sd.cols] == list(SALES_COLUMNS)
    assert sorted(client.get_partition_names(DB, "sales_part", -1)) == ALL_PARTS
    parts = client.get_partitions(DB, "sales_part", -1)
    assert sorted(tuple(p.values) for p in parts) == sorted((str(y), r) for y, r in PARTITIONS)
    for p in parts:
        location = p.sd.location
        assert location.endswith(f"/year={p.values[0]}/region={p.values[1]}"), location
        assert (Path(location.removeprefix("file:")) / "part-0.csv").is_file()
    by_names = client.get_partitions_by_names(DB, "sales_part", ["year=2024/region=eu"])
    assert [p.values for p in by_names] == [["2024", "eu"]]
    ps = client.get_partitions_ps(DB, "sales_part", ["2024"], -1)
    assert sorted(p.values[1] for p in ps) == ["apac", "eu", "us"]
    eu = client.get_partitions_by_filter(DB, "sales_part", 'region = "eu"', -1)
    assert sorted(p.values[0] for p in eu) == ["2023", "2024"]
    y23 = client.get_partitions_by_filter(DB, "sales_part", "year = 2023", -1)
    assert len(y23) == 3


def test_table_column_statistics(client: hmsclient.HMSClient) -> None:
    cols = ["order_id", "customer", "amount", "order_date"]
    stats = client.get_table_statistics_req(
        hms.TableStatsRequest(dbName=DB, tblName="orders_text", colNames=cols))
    by_col = {o.colName: o.statsData for o in stats.tableStats}
    assert set(by_col) == set(cols)
    order_id = by_col["order_id"].longStats
    assert (order_id.lowValue, order_id.highValue) == (1, 5)
    assert by_col["customer"].stringStats.numNulls == 1
    high = by_col["amount"].decimalStats.highValue
    assert int.from_bytes(high.unscaled, "big", signed=True) == 31025 and high.scale == 2
    low_days = by_col["order_date"].dateStats.lowValue.daysSinceEpoch
    assert dt.date(1970, 1, 1) + dt.timedelta(days=low_days) == dt.date(2024, 1, 15)
    single = client.get_table_column_statistics(DB, "orders_text", "order_id")
    assert single.statsDesc.isTblLevel and single.statsObj[0].colName == "order_id"


def test_partition_column_statistics(client: hmsclient.HMSClient) -> None:
    name = partition_name(*STATS_PARTITION)
    result = client.get_partitions_statistics_req(hms.PartitionsStatsRequest(
        dbName=DB, tblName="sales_part", colNames=["qty", "price"], partNames=[name]))
    objs = {o.colName: o.statsData for o in result.partStats[name]}
    assert (objs["qty"].longStats.lowValue, objs["qty"].longStats.highValue) == (2, 5)
    assert objs["price"].doubleStats.highValue == 11.0
    single = client.get_partition_column_statistics(DB, "sales_part", name, "qty")
    assert single.statsDesc.partName == name


def test_fields_schema_and_config(client: hmsclient.HMSClient, hive4: Hive4Metastore) -> None:
    assert [f.name for f in client.get_fields(DB, "orders_text")] == [n for n, _ in ORDERS_COLUMNS]
    schema = [f.name for f in client.get_schema(DB, "sales_part")]
    assert schema == [n for n, _ in SALES_COLUMNS] + ["year", "region"]
    warehouse = client.get_config_value("metastore.warehouse.dir", "")
    assert warehouse.rstrip("/").endswith(str(hive4.warehouse_dir))
    assert client.get_config_value("hive.metastore.warehouse.dir", "") == warehouse


@pytest.mark.parametrize("call", [
    pytest.param(lambda c: c.get_table(DB, "orders_text"), id="get_table"),
    pytest.param(lambda c: c.get_table_objects_by_name(DB, ["orders_text"]),
                 id="get_table_objects_by_name"),
])
def test_removed_methods(hive4: Hive4Metastore, call: object) -> None:
    c = hive4.client()
    try:
        with pytest.raises(TApplicationException) as info:
            call(c)  # type: ignore[operator]
    finally:
        c.close()
    assert info.value.type == TApplicationException.UNKNOWN_METHOD
    assert "Invalid method name" in str(info.value.message)


@pytest.mark.parametrize("accelerated", [False, True], ids=["binary", "accelerated"])
def test_hive4_structs_decode_with_old_idl(hive4: Hive4Metastore, accelerated: bool) -> None:
    sock = TSocket.TSocket("127.0.0.1", hive4.port)
    sock.setTimeout(30_000)
    transport = TTransport.TBufferedTransport(sock)
    proto_cls = (TBinaryProtocol.TBinaryProtocolAccelerated if accelerated
                 else TBinaryProtocol.TBinaryProtocol)
    c = hmsclient.HMSClient(iprot=proto_cls(transport))
    c.open()
    try:
        tables = c.get_table_objects_by_name_req(
            hms.GetTablesRequest(dbName=DB, tblNames=sorted(_expected_tables()))).tables
        assert {t.tableName for t in tables} == _expected_tables()
        for t in tables:
            t.validate()
            assert t.dbName == DB and t.sd is not None and t.sd.cols
        parts = c.get_partitions(DB, "sales_part", -1)
        assert len(parts) == len(PARTITIONS)
        for p in parts:
            p.validate()
        # the connection is still in sync after the unknown fields were skipped
        assert DB in c.get_all_databases()
    finally:
        c.close()


def _pyspark_missing() -> bool:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return True
    return False


@pytest.mark.skipif(_pyspark_missing(), reason="pyspark (source of the HMS 2.3 jars) not installed")
def test_populate_also_works_on_hive23(tmp_path: Path) -> None:
    """The same Thrift-only population is accepted by a Hive Metastore 2.3 (pyspark's jars)."""
    from tests.support.hms import HiveMetastore

    with HiveMetastore(tmp_path / "hms23") as server:
        populate_via_thrift(server.uri, tmp_path / "data", db=DB)
        c = server.client()
        try:
            assert set(c.get_all_tables(DB)) == _expected_tables()
            assert c.get_table(DB, "big_orders").viewExpandedText == view_expanded_text(DB)
            assert sorted(c.get_partition_names(DB, "sales_part", -1)) == ALL_PARTS
            part = c.get_partitions_by_names(DB, "sales_part", ["year=2024/region=eu"])[0]
            assert part.sd.location.endswith("/year=2024/region=eu")
            stats = c.get_table_statistics_req(hms.TableStatsRequest(
                dbName=DB, tblName="orders_text", colNames=["order_id"]))
            assert stats.tableStats[0].statsData.longStats.highValue == 5
        finally:
            c.close()


# -- Strata attached to Hive 4 ---------------------------------------------------------------


@pytest.fixture(scope="module")
def strata_on_hive4(hive4: Hive4Metastore,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThriftServer]:
    service = CatalogService(Settings(data_dir=tmp_path_factory.mktemp("strata-hive4")))
    report = service.attach_database("hive", hive4.uri, DB)
    assert report.errors == [] and report.tables.added == len(_expected_tables())
    service.attach_database("hive", hive4.uri, DB, name="sales4")
    server = ThriftServer(service, "127.0.0.1", 0).start()
    yield server
    server.stop()
    service.close()


def test_strata_serves_hive4_tables_as_hive4_has_them(
        strata_on_hive4: ThriftServer, client: hmsclient.HMSClient) -> None:
    ours = open_client("127.0.0.1", strata_on_hive4.port)
    try:
        for name in sorted(_expected_tables()):
            theirs = client.get_table_req(hms.GetTableRequest(dbName=DB, tblName=name)).table
            assert ours.get_table(DB, name) == theirs, name
            assert ours.get_table_req(hms.GetTableRequest(dbName=DB, tblName=name)).table == theirs
        assert ours.get_partitions(DB, "sales_part", -1) == client.get_partitions(
            DB, "sales_part", -1)
        filt = 'year = 2024 and region <> "eu"'
        assert ours.get_partitions_by_filter(DB, "sales_part", filt, -1) == \
            client.get_partitions_by_filter(DB, "sales_part", filt, -1)
        cols = [c for c, _ in ORDERS_COLUMNS]
        req = hms.TableStatsRequest(dbName=DB, tblName="orders_text", colNames=cols)
        assert ours.get_table_statistics_req(req).tableStats == \
            client.get_table_statistics_req(req).tableStats
        renamed = ours.get_table("sales4", "big_orders")
        assert renamed.dbName == "sales4" and "`sales4`" in renamed.viewExpandedText
    finally:
        ours.close()
