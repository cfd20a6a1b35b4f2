"""Fill a real Hive Metastore with a small ``sales`` database through Thrift only.

Uses hmsclient (the Hive 2.3 IDL) and only calls that both HMS 2.3 and Hive 4
accept: ``create_database``, ``create_table``, ``add_partitions``,
``update_table_column_statistics`` and ``update_partition_column_statistics``.
Data files are written by Python into ``data_dir``; every table is EXTERNAL
and points there (the view has no location).

Tables created in ``db`` (names and contents in :data:`TABLES`, :data:`PARTITIONS`):

* ``orders_text``   TEXTFILE, LazySimpleSerDe, ``|``-delimited, one header line
                    skipped, ``\\N`` as NULL; table-level column statistics
* ``customers_csv`` OpenCSVSerde (quoted fields with embedded commas)
* ``events_parquet`` Parquet written with pyarrow (skipped, with a warning,
                    when pyarrow is not installed)
* ``sales_part``    partitioned by ``(year int, region string)``, 6 partitions
                    with one data file each; column statistics on one partition
* ``big_orders``    VIRTUAL_VIEW over ``orders_text``
"""
from __future__ import annotations

import datetime as dt
import time
import warnings
from dataclasses import dataclass
from decimal import Decimal as PyDecimal
from pathlib import Path
from urllib.parse import urlparse

from hmsclient import hmsclient
from hmsclient.genthrift.hive_metastore import ttypes as hms
from thrift.protocol import TBinaryProtocol
from thrift.transport import TSocket, TTransport

OWNER = "strata"

LAZY_SIMPLE_SERDE = "org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe"
OPEN_CSV_SERDE = "org.apache.hadoop.hive.serde2.OpenCSVSerde"
PARQUET_SERDE = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
TEXT_INPUT = "org.apache.hadoop.mapred.TextInputFormat"
TEXT_OUTPUT = "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat"
PARQUET_INPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
PARQUET_OUTPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"
VIEW_INPUT = "org.apache.hadoop.mapred.SequenceFileInputFormat"
VIEW_OUTPUT = "org.apache.hadoop.hive.ql.io.HiveSequenceFileOutputFormat"


@dataclass(frozen=True)
class TableSpec:
    """What :func:`populate_via_thrift` creates for one table."""

    name: str
    table_type: str
    columns: tuple[tuple[str, str], ...]
    rows: int  # data rows (header lines excluded); 0 for the view
    partition_keys: tuple[tuple[str, str], ...] = ()
    needs_pyarrow: bool = False


ORDERS_COLUMNS = (
    ("order_id", "bigint"),
    ("customer", "string"),
    ("amount", "decimal(10,2)"),
    ("order_date", "date"),
    ("note", "string"),
)
ORDERS_ROWS: list[tuple[object, ...]] = [
    (1, "alice", "120.50", "2024-01-15", "first order"),
    (2, "bob", "75.00", "2024-01-16", None),
    (3, "carol", "310.25", "2024-02-01", "rush"),
    (4, None, "42.10", "2024-02-03", None),
    (5, "alice", "99.99", "2024-03-10", "repeat"),
]
CUSTOMERS_COLUMNS = (("id", "string"), ("name", "string"), ("city", "string"))
CUSTOMERS_ROWS = [("1", "alice", "Paris, FR"), ("2", "bob", "New York"), ("3", "carol", "Berlin")]
EVENTS_COLUMNS = (
    ("event_id", "bigint"),
    ("kind", "string"),
    ("value", "double"),
    ("ok", "boolean"),
)
EVENTS_ROWS = [(1, "click", 0.5, True), (2, "view", 1.25, False), (3, "click", None, True),
               (4, "buy", 19.99, True)]
SALES_COLUMNS = (("id", "int"), ("product", "string"), ("qty", "int"), ("price", "double"))
SALES_PARTITION_KEYS = (("year", "int"), ("region", "string"))
# (year, region) -> rows
PARTITIONS: dict[tuple[int, str], list[tuple[int, str, int, float]]] = {
    (2023, "eu"): [(1, "widget", 3, 2.5), (2, "gadget", 1, 10.0)],
    (2023, "us"): [(3, "widget", 7, 2.5)],
    (2023, "apac"): [(4, "gizmo", 2, 7.75), (5, "widget", 1, 2.5)],
    (2024, "eu"): [(6, "gadget", 4, 11.0), (7, "gizmo", 5, 8.0), (8, "widget", 2, 2.75)],
    (2024, "us"): [(9, "widget", 10, 2.75)],
    (2024, "apac"): [(10, "gadget", 6, 11.5)],
}
STATS_PARTITION = (2024, "eu")
VIEW_COLUMNS = (("order_id", "bigint"), ("customer", "string"), ("amount", "decimal(10,2)"))
VIEW_ORIGINAL_TEXT = "SELECT order_id, customer, amount FROM orders_text WHERE amount > 100"

TABLES: dict[str, TableSpec] = {
    "orders_text": TableSpec("orders_text", "EXTERNAL_TABLE", ORDERS_COLUMNS, len(ORDERS_ROWS)),
    "customers_csv": TableSpec(
        "customers_csv", "EXTERNAL_TABLE", CUSTOMERS_COLUMNS, len(CUSTOMERS_ROWS)),
    "events_parquet": TableSpec(
        "events_parquet", "EXTERNAL_TABLE", EVENTS_COLUMNS, len(EVENTS_ROWS), needs_pyarrow=True),
    "sales_part": TableSpec(
        "sales_part", "EXTERNAL_TABLE", SALES_COLUMNS,
        sum(len(r) for r in PARTITIONS.values()), partition_keys=SALES_PARTITION_KEYS),
    "big_orders": TableSpec("big_orders", "VIRTUAL_VIEW", VIEW_COLUMNS, 0),
}


def partition_name(year: int, region: str) -> str:
    """Hive's partition name for a ``sales_part`` partition."""
    return f"year={year}/region={region}"


def view_expanded_text(db: str) -> str:
    """The fully qualified view text Hive would store for ``big_orders``."""
    return (
        "SELECT `orders_text`.`order_id`, `orders_text`.`customer`, `orders_text`.`amount` "
        f"FROM `{db}`.`orders_text` WHERE `orders_text`.`amount` > 100"
    )


def pyarrow_available() -> bool:
    """True if pyarrow (needed for the Parquet table) can be imported."""
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return False
    return True


def _open(uri: str, timeout: float = 60.0) -> hmsclient.HMSClient:
    parsed = urlparse(uri)
    if parsed.scheme != "thrift" or not parsed.hostname:
        raise ValueError(f"not a metastore URI: {uri!r}")
    sock = TSocket.TSocket(parsed.hostname, parsed.port or 9083)
    sock.setTimeout(int(timeout * 1000))
    transport = TTransport.TBufferedTransport(sock)
    client = hmsclient.HMSClient(iprot=TBinaryProtocol.TBinaryProtocol(transport))
    client.open()
    return client


def _cols(columns: tuple[tuple[str, str], ...]) -> list[hms.FieldSchema]:
    return [hms.FieldSchema(name=n, type=t, comment=None) for n, t in columns]


def _sd(columns: tuple[tuple[str, str], ...], location: str | None, input_format: str,
        output_format: str, serde: hms.SerDeInfo) -> hms.StorageDescriptor:
    return hms.StorageDescriptor(
        cols=_cols(columns), location=location, inputFormat=input_format,
        outputFormat=output_format, compressed=False, numBuckets=-1, serdeInfo=serde,
        bucketCols=[], sortCols=[], parameters={},
        skewedInfo=hms.SkewedInfo(skewedColNames=[], skewedColValues=[],
                                  skewedColValueLocationMaps={}),
        storedAsSubDirectories=False)


def _table(db: str, name: str, sd: hms.StorageDescriptor, params: dict[str, str],
           table_type: str = "EXTERNAL_TABLE",
           partition_keys: tuple[tuple[str, str], ...] = ()) -> hms.Table:
    now = int(time.time())
    if table_type == "EXTERNAL_TABLE":
        params = {"EXTERNAL": "TRUE", **params}
    return hms.Table(
        tableName=name, dbName=db, owner=OWNER, createTime=now, lastAccessTime=0,
        retention=0, sd=sd, partitionKeys=_cols(partition_keys), parameters=params,
        tableType=table_type)


def _text_line(values: tuple[object, ...], delim: str, null: str = "\\N") -> str:
    return delim.join(null if v is None else str(v) for v in values) + "\n"


def file_uri(path: Path) -> str:
    """``file://`` URI of ``path`` as Hive writes it: no percent-encoding (``year=2024``)."""
    return "file://" + Path(path).resolve().as_posix()


def _write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return file_uri(path.parent)


def _orders_text(db: str, data_dir: Path) -> hms.Table:
    header = "|".join(n for n, _ in ORDERS_COLUMNS) + "\n"
    body = "".join(_text_line(r, "|") for r in ORDERS_ROWS)
    location = _write(data_dir / "orders_text" / "orders.txt", header + body)
    serde = hms.SerDeInfo(name=None, serializationLib=LAZY_SIMPLE_SERDE, parameters={
        "field.delim": "|", "serialization.format": "|", "serialization.null.format": "\\N"})
    return _table(db, "orders_text", _sd(ORDERS_COLUMNS, location, TEXT_INPUT, TEXT_OUTPUT, serde),
                  {"skip.header.line.count": "1", "comment": "orders as pipe-delimited text"})


def _customers_csv(db: str, data_dir: Path) -> hms.Table:
    body = "".join(",".join(f'"{v}"' for v in r) + "\n" for r in CUSTOMERS_ROWS)
    location = _write(data_dir / "customers_csv" / "customers.csv", body)
    serde = hms.SerDeInfo(name=None, serializationLib=OPEN_CSV_SERDE, parameters={
        "separatorChar": ",", "quoteChar": '"', "escapeChar": "\\"})
    return _table(db, "customers_csv",
                  _sd(CUSTOMERS_COLUMNS, location, TEXT_INPUT, TEXT_OUTPUT, serde), {})


def _events_parquet(db: str, data_dir: Path) -> hms.Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("event_id", pa.int64()), ("kind", pa.string()),
                        ("value", pa.float64()), ("ok", pa.bool_())])
    arrays = [pa.array([r[i] for r in EVENTS_ROWS], type=schema.field(i).type)
              for i in range(len(schema))]
    path = data_dir / "events_parquet" / "events.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_arrays(arrays, schema=schema), str(path))
    serde = hms.SerDeInfo(name=None, serializationLib=PARQUET_SERDE,
                          parameters={"serialization.format": "1"})
    return _table(db, "events_parquet",
                  _sd(EVENTS_COLUMNS, file_uri(path.parent), PARQUET_INPUT,
                      PARQUET_OUTPUT, serde), {})


def _sales_serde() -> hms.SerDeInfo:
    return hms.SerDeInfo(name=None, serializationLib=LAZY_SIMPLE_SERDE,
                         parameters={"field.delim": ",", "serialization.format": ","})


def _sales_part(db: str, data_dir: Path) -> tuple[hms.Table, list[hms.Partition]]:
    table_location = (data_dir / "sales_part").resolve()
    table_location.mkdir(parents=True, exist_ok=True)
    table = _table(db, "sales_part",
                   _sd(SALES_COLUMNS, file_uri(table_location), TEXT_INPUT, TEXT_OUTPUT,
                       _sales_serde()),
                   {}, partition_keys=SALES_PARTITION_KEYS)
    now = int(time.time())
    partitions = []
    for (year, region), rows in PARTITIONS.items():
        body = "".join(_text_line(r, ",") for r in rows)
        location = _write(table_location / f"year={year}" / f"region={region}" / "part-0.csv",
                          body)
        partitions.append(hms.Partition(
            values=[str(year), region], dbName=db, tableName="sales_part", createTime=now,
            lastAccessTime=0,
            sd=_sd(SALES_COLUMNS, location, TEXT_INPUT, TEXT_OUTPUT, _sales_serde()),
            parameters={}))
    return table, partitions


def _big_orders(db: str) -> hms.Table:
    serde = hms.SerDeInfo(name=None, serializationLib=None, parameters={})
    table = _table(db, "big_orders", _sd(VIEW_COLUMNS, None, VIEW_INPUT, VIEW_OUTPUT, serde),
                   {}, table_type="VIRTUAL_VIEW")
    table.viewOriginalText = VIEW_ORIGINAL_TEXT
    table.viewExpandedText = view_expanded_text(db)
    return table


def _days(iso: str) -> int:
    return (dt.date.fromisoformat(iso) - dt.date(1970, 1, 1)).days


def _decimal(value: str) -> hms.Decimal:
    d = PyDecimal(value)
    sign, digits, exponent = d.as_tuple()
    unscaled = int("".join(map(str, digits))) * (-1 if sign else 1)
    length = max(1, (unscaled.bit_length() + 8) // 8)
    return hms.Decimal(unscaled=unscaled.to_bytes(length, "big", signed=True),
                       scale=-int(exponent))


def _stats_obj(name: str, col_type: str, **kind: object) -> hms.ColumnStatisticsObj:
    return hms.ColumnStatisticsObj(colName=name, colType=col_type,
                                   statsData=hms.ColumnStatisticsData(**kind))


def orders_column_stats(db: str) -> hms.ColumnStatistics:
    """Table-level column statistics of ``orders_text`` (as :func:`populate_via_thrift` sets)."""
    amounts = [str(r[2]) for r in ORDERS_ROWS]
    dates = [str(r[3]) for r in ORDERS_ROWS]
    customers = [str(r[1]) for r in ORDERS_ROWS if r[1] is not None]
    objs = [
        _stats_obj("order_id", "bigint", longStats=hms.LongColumnStatsData(
            lowValue=1, highValue=len(ORDERS_ROWS), numNulls=0, numDVs=len(ORDERS_ROWS))),
        _stats_obj("customer", "string", stringStats=hms.StringColumnStatsData(
            maxColLen=max(map(len, customers)),
            avgColLen=sum(map(len, customers)) / len(customers),
            numNulls=len(ORDERS_ROWS) - len(customers), numDVs=len(set(customers)))),
        _stats_obj("amount", "decimal(10,2)", decimalStats=hms.DecimalColumnStatsData(
            lowValue=_decimal(min(amounts, key=PyDecimal)),
            highValue=_decimal(max(amounts, key=PyDecimal)),
            numNulls=0, numDVs=len(set(amounts)))),
        _stats_obj("order_date", "date", dateStats=hms.DateColumnStatsData(
            lowValue=hms.Date(daysSinceEpoch=_days(min(dates))),
            highValue=hms.Date(daysSinceEpoch=_days(max(dates))),
            numNulls=0, numDVs=len(set(dates)))),
    ]
    desc = hms.ColumnStatisticsDesc(isTblLevel=True, dbName=db, tableName="orders_text",
                                    lastAnalyzed=int(time.time()))
    return hms.ColumnStatistics(statsDesc=desc, statsObj=objs)


def sales_partition_stats(db: str) -> hms.ColumnStatistics:
    """Column statistics of ``qty`` and ``price`` in partition :data:`STATS_PARTITION`."""
    rows = PARTITIONS[STATS_PARTITION]
    qty = [r[2] for r in rows]
    price = [r[3] for r in rows]
    objs = [
        _stats_obj("qty", "int", longStats=hms.LongColumnStatsData(
            lowValue=min(qty), highValue=max(qty), numNulls=0, numDVs=len(set(qty)))),
        _stats_obj("price", "double", doubleStats=hms.DoubleColumnStatsData(
            lowValue=min(price), highValue=max(price), numNulls=0, numDVs=len(set(price)))),
    ]
    desc = hms.ColumnStatisticsDesc(isTblLevel=False, dbName=db, tableName="sales_part",
                                    partName=partition_name(*STATS_PARTITION),
                                    lastAnalyzed=int(time.time()))
    return hms.ColumnStatistics(statsDesc=desc, statsObj=objs)


def populate_via_thrift(uri: str, data_dir: Path, db: str = "sales") -> None:
    """Create database ``db`` with the tables in :data:`TABLES` through the Thrift API only.

    ``data_dir`` receives the data files (and is the database's location). The
    Parquet table is skipped with a ``UserWarning`` when pyarrow is missing.
    """
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    client = _open(uri)
    try:
        client.create_database(hms.Database(
            name=db, description="Strata test data (created over Thrift)",
            locationUri=file_uri(data_dir / f"{db}.db"), parameters={"creator": OWNER},
            ownerName=OWNER, ownerType=hms.PrincipalType.USER))
        client.create_table(_orders_text(db, data_dir))
        client.create_table(_customers_csv(db, data_dir))
        if pyarrow_available():
            client.create_table(_events_parquet(db, data_dir))
        else:
            warnings.warn("pyarrow is not installed: Parquet table events_parquet not created",
                          stacklevel=2)
        table, partitions = _sales_part(db, data_dir)
        client.create_table(table)
        client.add_partitions(partitions)
        client.create_table(_big_orders(db))
        client.update_table_column_statistics(orders_column_stats(db))
        client.update_partition_column_statistics(sales_partition_stats(db))
    finally:
        client.close()
