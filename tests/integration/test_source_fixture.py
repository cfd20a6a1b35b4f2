"""Proves the harness: real HMS 2.3 + real Spark + the source tables they hold."""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from hmsclient import hmsclient
from hmsclient.genthrift.hive_metastore import ttypes

from tests.support import source_tables as st
from tests.support.hms import HiveMetastore
from tests.support.source_tables import SourceDatabase
from tests.support.spark import SparkSql, SparkSqlError

pytestmark = pytest.mark.integration


@pytest.fixture()
def client(hms: HiveMetastore) -> Iterator[hmsclient.HMSClient]:
    c = hms.client()
    try:
        yield c
    finally:
        c.close()


def _decimal(value: ttypes.Decimal) -> Decimal:
    return Decimal(int.from_bytes(value.unscaled, "big", signed=True)).scaleb(-value.scale)


def _local_path(location: str) -> Path:
    assert location.startswith("file:"), location
    return Path("/" + location[len("file:"):].lstrip("/"))


def test_hms_listens_on_loopback_only(hms: HiveMetastore) -> None:
    assert hms.bound_to_loopback
    listeners = Path("/proc/net/tcp").read_text().splitlines()[1:]
    port_hex = f"{hms.port:04X}"
    local = {line.split()[1] for line in listeners if line.split()[3] == "0A"}
    matching = {addr for addr in local if addr.endswith(":" + port_hex)}
    assert matching == {"0100007F:" + port_hex}


def test_hms_lists_databases_and_tables(client: hmsclient.HMSClient,
                                        source_db: SourceDatabase) -> None:
    assert {"default", source_db.db, source_db.other_db} <= set(client.get_all_databases())
    assert sorted(client.get_all_tables(source_db.db)) == sorted(
        [st.ORDERS_TEXT, st.CUSTOMERS_CSV, st.ITEMS_PARQUET, st.SALES_PART, st.BIG_ORDERS])
    assert sorted(source_db.tables + source_db.views) == sorted(client.get_all_tables(source_db.db))
    assert client.get_all_tables(source_db.other_db) == [st.OTHER_TABLE]


def test_table_types_serdes_and_locations(client: hmsclient.HMSClient,
                                          source_db: SourceDatabase) -> None:
    db = source_db.db
    orders = client.get_table(db, st.ORDERS_TEXT)
    assert orders.tableType == "EXTERNAL_TABLE"
    assert orders.sd.serdeInfo.serializationLib == (
        "org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe")
    assert orders.sd.inputFormat == "org.apache.hadoop.mapred.TextInputFormat"
    assert orders.sd.serdeInfo.parameters["field.delim"] == "|"
    assert orders.parameters["skip.header.line.count"] == "1"
    assert orders.parameters["serialization.null.format"] == "\\N"
    assert [(c.name, c.type) for c in orders.sd.cols] == [
        ("order_id", "int"), ("customer_id", "int"), ("amount", "decimal(10,2)"),
        ("order_date", "date"), ("note", "string")]
    assert _local_path(orders.sd.location) == source_db.data_dir / st.ORDERS_TEXT
    first_lines = sorted(p.read_text().splitlines()[0]
                         for p in (source_db.data_dir / st.ORDERS_TEXT).iterdir())
    assert first_lines == [st.ORDERS_HEADER] * st.ORDERS_FILES

    csv = client.get_table(db, st.CUSTOMERS_CSV)
    assert csv.tableType == "EXTERNAL_TABLE"
    assert csv.sd.serdeInfo.serializationLib == "org.apache.hadoop.hive.serde2.OpenCSVSerde"
    assert csv.sd.serdeInfo.parameters["separatorChar"] == ","
    assert csv.sd.serdeInfo.parameters["quoteChar"] == '"'

    items = client.get_table(db, st.ITEMS_PARQUET)
    assert items.tableType == "EXTERNAL_TABLE"
    assert items.sd.serdeInfo.serializationLib == (
        "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe")
    assert items.sd.inputFormat == "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
    assert any(p.suffix == ".parquet" for p in (source_db.data_dir / st.ITEMS_PARQUET).iterdir())

    part = client.get_table(db, st.SALES_PART)
    assert part.tableType == "EXTERNAL_TABLE"
    assert [(k.name, k.type) for k in part.partitionKeys] == [("year", "int"), ("region", "string")]
    assert [c.name for c in part.sd.cols] == ["sale_id", "product", "units", "revenue"]

    view = client.get_table(db, st.BIG_ORDERS)
    assert view.tableType == "VIRTUAL_VIEW"
    assert st.ORDERS_TEXT in view.viewOriginalText
    assert ">= 100" in view.viewOriginalText
    assert view.partitionKeys == []

    other = client.get_table(source_db.other_db, st.OTHER_TABLE)
    assert other.tableType == "EXTERNAL_TABLE"
    assert [c.name for c in other.sd.cols] == ["region", "manager"]


def test_partitions_have_own_locations(client: hmsclient.HMSClient,
                                       source_db: SourceDatabase) -> None:
    names = client.get_partition_names(source_db.db, st.SALES_PART, -1)
    expected = [f"year={y}/region={r}" for y in st.SALES_YEARS for r in st.SALES_REGIONS]
    assert len(names) == 6
    assert sorted(names) == sorted(expected) == sorted(source_db.partitions)
    for p in client.get_partitions(source_db.db, st.SALES_PART, -1):
        name = f"year={p.values[0]}/region={p.values[1]}"
        path = _local_path(p.sd.location)
        assert path == source_db.data_dir / st.SALES_PART / name
        assert [f.name for f in path.iterdir()] == ["data.txt"]


def test_spark_reads_text_nulls_and_header(source_spark: SparkSql,
                                           source_db: SourceDatabase) -> None:
    rows = source_spark.sql(f"SELECT * FROM {source_db.db}.{st.ORDERS_TEXT} "
                            "WHERE order_id IS NOT NULL ORDER BY order_id")
    assert rows == st.ORDERS
    assert rows[4] == (5, 4, None, "2024-01-06", "amount pending")  # \N -> None
    assert rows[8][3] is None
    # Spark 4.3 ignores skip.header.line.count: each file's header is a row of NULLs.
    headers = source_spark.sql(f"SELECT * FROM {source_db.db}.{st.ORDERS_TEXT} "
                               "WHERE order_id IS NULL")
    assert headers == [st.SPARK_ORDERS_HEADER_ROW] * st.ORDERS_FILES


def test_spark_reads_csv_parquet_partitions_and_view(source_spark: SparkSql,
                                                     source_db: SourceDatabase) -> None:
    db = source_db.db
    customers = source_spark.sql(f"SELECT * FROM {db}.{st.CUSTOMERS_CSV} ORDER BY customer_id")
    assert customers == st.CUSTOMERS
    assert customers[0][1] == "Smith, John"  # quoted comma kept inside the field

    assert source_spark.sql(f"SELECT * FROM {db}.{st.ITEMS_PARQUET} ORDER BY item_id") == st.ITEMS

    sales = source_spark.sql(f"SELECT * FROM {db}.{st.SALES_PART} ORDER BY sale_id")
    assert sales == sorted(st.SALES)
    counts = source_spark.sql(f"SELECT year, region, count(*) FROM {db}.{st.SALES_PART} "
                              "GROUP BY year, region ORDER BY year, region")
    assert counts == [(y, r, 3 if r == "east" else 2)
                      for y in st.SALES_YEARS for r in st.SALES_REGIONS]

    big = source_spark.sql(f"SELECT * FROM {db}.{st.BIG_ORDERS} ORDER BY order_id")
    assert big == [r[:4] for r in st.ORDERS
                   if r[2] is not None and Decimal(r[2]) >= st.BIG_ORDER_MIN_AMOUNT]
    assert len(big) == source_db.row_counts[st.BIG_ORDERS] == 8

    other = source_spark.sql(f"SELECT * FROM {source_db.other_db}.{st.OTHER_TABLE} ORDER BY region")
    assert other == st.REGIONS


def test_spark_value_conversion_and_errors(source_spark: SparkSql) -> None:
    row = source_spark.sql(
        "SELECT 1, CAST(2.50 AS DECIMAL(5,2)), DATE'2024-02-29', "
        "TIMESTAMP'2024-01-02 03:04:05', CAST(NULL AS INT), 'x', 1.5D, true")
    assert row == [(1, "2.50", "2024-02-29", "2024-01-02T03:04:05", None, "x", 1.5, True)]
    with pytest.raises(SparkSqlError, match="TABLE_OR_VIEW_NOT_FOUND"):
        source_spark.sql("SELECT * FROM no_such_db_xyz.no_such_table")
    assert source_spark.sql("SELECT 41 + 1") == [(42,)]  # the worker survives errors


def test_basic_statistics(client: hmsclient.HMSClient, source_db: SourceDatabase) -> None:
    expected = st.basic_stats()
    for table in (st.ORDERS_TEXT, st.CUSTOMERS_CSV, st.ITEMS_PARQUET):
        params = client.get_table(source_db.db, table).parameters
        assert (int(params["numRows"]), int(params["rawDataSize"])) == expected[table]
        assert int(params["numFiles"]) >= 1 and int(params["totalSize"]) > 0
        assert '"BASIC_STATS":"true"' in params["COLUMN_STATS_ACCURATE"]
    assert client.get_table(source_db.db, st.ORDERS_TEXT).parameters["numRows"] == "20"
    for p in client.get_partitions(source_db.db, st.SALES_PART, -1):
        key = f"{st.SALES_PART}/year={p.values[0]}/region={p.values[1]}"
        assert int(p.parameters["numRows"]) == expected[key][0]
        assert int(p.parameters["numFiles"]) == 1


def test_column_statistics(client: hmsclient.HMSClient, source_db: SourceDatabase) -> None:
    db = source_db.db
    order_id = client.get_table_column_statistics(db, st.ORDERS_TEXT, "order_id")
    assert order_id.statsDesc.isTblLevel
    longs = order_id.statsObj[0].statsData.longStats
    assert (longs.lowValue, longs.highValue, longs.numNulls, longs.numDVs) == (1, 20, 0, 20)

    req = ttypes.TableStatsRequest(dbName=db, tblName=st.ORDERS_TEXT,
                                   colNames=["customer_id", "amount", "order_date", "note"])
    stats = {o.colName: o for o in client.get_table_statistics_req(req).tableStats}
    assert stats["customer_id"].statsData.longStats.numNulls == 1
    amount = stats["amount"].statsData.decimalStats
    assert stats["amount"].colType == "decimal(10,2)"
    assert (_decimal(amount.lowValue), _decimal(amount.highValue)) == (
        Decimal("5.00"), Decimal("1000.00"))
    assert amount.numNulls == 1
    dates = stats["order_date"].statsData.dateStats
    epoch = dt.date(1970, 1, 1)
    assert epoch + dt.timedelta(days=dates.lowValue.daysSinceEpoch) == dt.date(2024, 1, 3)
    assert epoch + dt.timedelta(days=dates.highValue.daysSinceEpoch) == dt.date(2024, 2, 10)
    note = stats["note"].statsData.stringStats
    assert (note.numNulls, note.maxColLen) == (5, len("amount pending"))

    part = client.get_partition_column_statistics(db, st.SALES_PART, source_db.stats_partition,
                                                  "revenue")
    assert not part.statsDesc.isTblLevel
    doubles = part.statsObj[0].statsData.doubleStats
    assert (doubles.lowValue, doubles.highValue) == (1.75, 4.75)
    preq = ttypes.PartitionsStatsRequest(dbName=db, tblName=st.SALES_PART, colNames=["units"],
                                         partNames=list(source_db.partitions))
    per_partition = client.get_partitions_statistics_req(preq).partStats
    assert list(per_partition) == [source_db.stats_partition]  # only that one has stats
    units = per_partition[source_db.stats_partition][0].statsData.longStats
    assert (units.lowValue, units.highValue, units.numDVs) == (2, 4, 3)
