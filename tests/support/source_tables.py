"""Build a small, realistic source database in a real HMS through Spark.

Data files are written with plain Python; tables are EXTERNAL with ``file://``
locations and created by Spark DDL; HMS column statistics are written with the
Thrift API (Spark keeps its own column stats in table properties instead).

The module-level row constants hold the rows of each table as ``SparkSql``
returns them (DECIMAL as ``str``, DATE as ISO string, NULL as ``None``).

Spark 4.3 caveats found while building this:
* Spark ignores ``skip.header.line.count`` on Hive text tables: through Spark,
  ``orders_text`` has 2 extra rows (one header line per file) that read as
  :data:`SPARK_ORDERS_HEADER_ROW`, and ``count(*)`` is 22.  Readers that honour
  the property (Hive, Trino) see exactly :data:`ORDERS`.
* ``ROW FORMAT DELIMITED ... NULL DEFINED AS`` is accepted but silently dropped,
  so the null marker is set with ``TBLPROPERTIES ('serialization.null.format')``.
* ``ANALYZE TABLE`` only writes ``spark.sql.statistics.*`` properties; Hive's
  ``numRows``/``rawDataSize`` and column statistics are written through Thrift.
"""
from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from hmsclient.genthrift.hive_metastore import ttypes as hms

from tests.support.hms import open_client
from tests.support.spark import SparkSql

ORDERS_TEXT = "orders_text"
CUSTOMERS_CSV = "customers_csv"
ITEMS_PARQUET = "items_parquet"
SALES_PART = "sales_part"
BIG_ORDERS = "big_orders"
OTHER_TABLE = "regions"
BIG_ORDER_MIN_AMOUNT = Decimal("100.00")

# (order_id, customer_id, amount, order_date, note); None is written as \N.
ORDERS: list[tuple[int, int | None, str | None, str | None, str | None]] = [
    (1, 1, "25.50", "2024-01-03", "first order"),
    (2, 2, "120.00", "2024-01-04", None),
    (3, 3, "7.25", "2024-01-04", "gift wrap"),
    (4, 1, "310.99", "2024-01-05", None),
    (5, 4, None, "2024-01-06", "amount pending"),
    (6, 5, "99.99", "2024-01-07", "just below"),
    (7, 2, "100.00", "2024-01-08", "exactly 100"),
    (8, None, "45.00", "2024-01-09", "guest checkout"),
    (9, 3, "560.10", None, "date lost"),
    (10, 4, "12.00", "2024-01-11", None),
    (11, 5, "150.75", "2024-02-01", "bulk"),
    (12, 1, "8.40", "2024-02-02", "tiny"),
    (13, 2, "77.70", "2024-02-03", None),
    (14, 3, "1000.00", "2024-02-04", "vip"),
    (15, 4, "33.33", "2024-02-05", "thirds"),
    (16, 5, "250.00", "2024-02-06", "repeat"),
    (17, 1, "64.00", "2024-02-07", None),
    (18, 2, "18.90", "2024-02-08", "coupon"),
    (19, 3, "420.00", "2024-02-09", "express"),
    (20, 4, "5.00", "2024-02-10", "sample"),
]
ORDERS_HEADER = "order_id|customer_id|amount|order_date|note"
ORDERS_FILES = 2  # each file starts with ORDERS_HEADER
# How Spark (which ignores skip.header.line.count) reads a header line.
SPARK_ORDERS_HEADER_ROW = (None, None, None, None, "note")

# (customer_id, name, city, comment) -- all STRING (OpenCSVSerde).
CUSTOMERS: list[tuple[str, str, str, str]] = [
    ("1", "Smith, John", "Boston", "likes \"quotes\""),
    ("2", "Doe, Jane", "New York, NY", "plain"),
    ("3", "O'Brien", "Chicago", "a, b, c"),
    ("4", "Lee", "San Jose, CA", ""),
    ("5", "Müller, Jörg", "Zürich", "unicode, too"),
]

# (item_id, order_id, sku, qty, price)
ITEMS: list[tuple[int, int, str, int, float]] = [
    (1, 1, "SKU-A", 1, 25.5),
    (2, 2, "SKU-B", 2, 60.0),
    (3, 4, "SKU-C", 3, 103.66),
    (4, 7, "SKU-A", 4, 25.0),
    (5, 14, "SKU-D", 10, 100.0),
    (6, 19, "SKU-B", 7, 60.0),
]

SALES_YEARS = (2023, 2024)
SALES_REGIONS = ("east", "north", "west")


def _make_sales() -> list[tuple[int, str, int, float, int, str]]:
    rows = []
    for index, (year, region) in enumerate(
        (y, r) for y in SALES_YEARS for r in SALES_REGIONS
    ):
        for j in range(3 if region == "east" else 2):
            sale_id = index * 10 + j + 1
            rows.append((sale_id, f"prod-{sale_id % 4 + 1}", j + 2,
                         round(sale_id * 1.5 + 0.25, 2), year, region))
    return rows


# (sale_id, product, units, revenue, year, region) -- year/region are partition keys;
# 3 rows in each "east" partition, 2 in the others.
SALES: list[tuple[int, str, int, float, int, str]] = _make_sales()
STATS_PARTITION = "year=2023/region=east"

# other.regions: (region, manager)
REGIONS: list[tuple[str, str]] = [("east", "Ada"), ("north", "Grace"), ("west", "Linus")]


@dataclass(frozen=True)
class SourceDatabase:
    """What :func:`build_source_database` created."""

    db: str
    data_dir: Path
    tables: tuple[str, ...]
    views: tuple[str, ...]
    other_db: str
    other_tables: tuple[str, ...]
    partitions: tuple[str, ...]
    stats_partition: str = STATS_PARTITION
    row_counts: dict[str, int] = field(default_factory=dict)


def file_uri(path: Path) -> str:
    """``file://`` URI of an absolute path, unescaped like Hive writes it.

    ``Path.as_uri()`` would encode ``=`` as ``%3D``, and Hadoop then takes the
    escaped name literally (``year%3D2023`` would be a different directory).
    """
    text = path.as_posix()
    if not path.is_absolute() or any(c in text for c in " %#?"):
        raise ValueError(f"unsupported path for a test table location: {text!r}")
    return "file://" + text


def _text(value: Any) -> str:
    return "\\N" if value is None else str(value)


def _csv(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _sql_str(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _write_files(data_dir: Path) -> None:
    orders = data_dir / ORDERS_TEXT
    for part, rows in enumerate((ORDERS[:10], ORDERS[10:])):
        _write(orders / f"part-{part:05d}.txt",
               [ORDERS_HEADER] + ["|".join(_text(v) for v in row) for row in rows])
    _write(data_dir / CUSTOMERS_CSV / "customers.csv",
           [",".join(_csv(v) for v in row) for row in CUSTOMERS])
    for year in SALES_YEARS:
        for region in SALES_REGIONS:
            sales = [r for r in SALES if r[4] == year and r[5] == region]
            _write(data_dir / SALES_PART / f"year={year}" / f"region={region}" / "data.txt",
                   [",".join(str(v) for v in row[:4]) for row in sales])
    _write(data_dir / OTHER_TABLE / "regions.txt", [",".join(row) for row in REGIONS])
    (data_dir / ITEMS_PARQUET).mkdir(parents=True, exist_ok=True)


def build_source_database(
    spark: SparkSql, data_dir: Path, db: str = "sales", other_db: str = "other"
) -> SourceDatabase:
    """Create ``db`` (4 tables + 1 view) and ``other_db`` (1 table) in ``spark``'s HMS."""
    data_dir = Path(data_dir).resolve()
    _write_files(data_dir)

    def loc(name: str) -> str:
        return _sql_str(file_uri(data_dir / name))

    spark.sql(f"CREATE DATABASE {db} LOCATION {loc(db + '.db')}")
    spark.sql(
        f"""CREATE EXTERNAL TABLE {db}.{ORDERS_TEXT} (
              order_id INT, customer_id INT, amount DECIMAL(10,2), order_date DATE, note STRING)
            COMMENT 'pipe-delimited text with a header line'
            ROW FORMAT DELIMITED FIELDS TERMINATED BY '|'
            STORED AS TEXTFILE
            LOCATION {loc(ORDERS_TEXT)}
            TBLPROPERTIES ('skip.header.line.count'='1', 'serialization.null.format'='\\\\N')"""
    )
    spark.sql(
        f"""CREATE EXTERNAL TABLE {db}.{CUSTOMERS_CSV} (
              customer_id STRING, name STRING, city STRING, comment STRING)
            ROW FORMAT SERDE 'org.apache.hadoop.hive.serde2.OpenCSVSerde'
            WITH SERDEPROPERTIES ('separatorChar'=',', 'quoteChar'='"', 'escapeChar'='\\\\')
            STORED AS TEXTFILE
            LOCATION {loc(CUSTOMERS_CSV)}"""
    )
    spark.sql(
        f"""CREATE EXTERNAL TABLE {db}.{ITEMS_PARQUET} (
              item_id INT, order_id INT, sku STRING, qty BIGINT, price DOUBLE)
            STORED AS PARQUET
            LOCATION {loc(ITEMS_PARQUET)}"""
    )
    values = ", ".join(
        f"({i}, {o}, {_sql_str(s)}, {q}, CAST({p!r} AS DOUBLE))" for i, o, s, q, p in ITEMS
    )
    spark.sql(f"INSERT INTO {db}.{ITEMS_PARQUET} VALUES {values}")
    spark.sql(
        f"""CREATE EXTERNAL TABLE {db}.{SALES_PART} (
              sale_id INT, product STRING, units INT, revenue DOUBLE)
            PARTITIONED BY (year INT, region STRING)
            ROW FORMAT DELIMITED FIELDS TERMINATED BY ','
            STORED AS TEXTFILE
            LOCATION {loc(SALES_PART)}"""
    )
    partitions: list[str] = []
    for year in SALES_YEARS:
        for region in SALES_REGIONS:
            name = f"year={year}/region={region}"
            spark.sql(
                f"ALTER TABLE {db}.{SALES_PART} ADD PARTITION (year={year}, region='{region}') "
                f"LOCATION {loc(SALES_PART + '/' + name)}"
            )
            partitions.append(name)
    spark.sql(
        f"""CREATE VIEW {db}.{BIG_ORDERS}
            COMMENT 'orders of at least {BIG_ORDER_MIN_AMOUNT}'
            AS SELECT order_id, customer_id, amount, order_date
               FROM {db}.{ORDERS_TEXT} WHERE amount >= {BIG_ORDER_MIN_AMOUNT}"""
    )

    spark.sql(f"CREATE DATABASE {other_db} LOCATION {loc(other_db + '.db')}")
    spark.sql(
        f"""CREATE EXTERNAL TABLE {other_db}.{OTHER_TABLE} (region STRING, manager STRING)
            ROW FORMAT DELIMITED FIELDS TERMINATED BY ','
            STORED AS TEXTFILE
            LOCATION {loc(OTHER_TABLE)}"""
    )

    # Spark's ANALYZE only writes spark.sql.statistics.* properties (not orders_text:
    # Spark ignores skip.header.line.count and would count the header lines).
    for table in (CUSTOMERS_CSV, ITEMS_PARQUET):
        spark.sql(f"ANALYZE TABLE {db}.{table} COMPUTE STATISTICS")
    spark.sql(f"ANALYZE TABLE {db}.{SALES_PART} PARTITION (year, region) COMPUTE STATISTICS")

    # Hive's own statistics, written through Thrift after all Spark DDL.
    uri = urlparse(spark.metastore_uri)
    client = open_client(uri.hostname or "127.0.0.1", uri.port or 9083)
    try:
        _write_basic_stats(client, db)
        _write_column_stats(client, db)
    finally:
        client.close()

    return SourceDatabase(
        db=db,
        data_dir=data_dir,
        tables=(ORDERS_TEXT, CUSTOMERS_CSV, ITEMS_PARQUET, SALES_PART),
        views=(BIG_ORDERS,),
        other_db=other_db,
        other_tables=(OTHER_TABLE,),
        partitions=tuple(partitions),
        row_counts={
            ORDERS_TEXT: len(ORDERS),
            CUSTOMERS_CSV: len(CUSTOMERS),
            ITEMS_PARQUET: len(ITEMS),
            SALES_PART: len(SALES),
            BIG_ORDERS: sum(
                1 for r in ORDERS if r[2] is not None and Decimal(r[2]) >= BIG_ORDER_MIN_AMOUNT
            ),
            OTHER_TABLE: len(REGIONS),
        },
    )


# -- HMS statistics (Thrift) -------------------------------------------------------

# Makes HMS recompute numFiles/totalSize and mark BASIC_STATS accurate, keeping numRows.
_STATS_BY_TASK = hms.EnvironmentContext(properties={"STATS_GENERATED": "TASK"})


def _raw_size(rows: list[tuple[Any, ...]]) -> int:
    """Hive-style rawDataSize for text data: bytes of the fields, no delimiters."""
    return sum(len(_text(v).encode("utf-8")) for row in rows for v in row)


def basic_stats() -> dict[str, tuple[int, int]]:
    """Expected HMS ``(numRows, rawDataSize)`` per table and per sales_part partition."""
    stats = {
        ORDERS_TEXT: (len(ORDERS), _raw_size(ORDERS)),
        CUSTOMERS_CSV: (len(CUSTOMERS), _raw_size(CUSTOMERS)),
        ITEMS_PARQUET: (len(ITEMS), len(ITEMS) * 5),  # Hive: rows x columns for Parquet
    }
    for year in SALES_YEARS:
        for region in SALES_REGIONS:
            rows = [r[:4] for r in SALES if r[4] == year and r[5] == region]
            stats[f"{SALES_PART}/year={year}/region={region}"] = (len(rows), _raw_size(rows))
    return stats


def _write_basic_stats(client: Any, db: str) -> None:
    """numRows/rawDataSize on the unpartitioned tables and every sales_part partition."""
    for key, (num_rows, raw_size) in basic_stats().items():
        table, _, part_name = key.partition("/")
        if part_name:
            values = [kv.split("=", 1)[1] for kv in part_name.split("/")]
            obj = client.get_partition(db, table, values)
        else:
            obj = client.get_table(db, table)
        obj.parameters = dict(obj.parameters or {})
        obj.parameters.update({"numRows": str(num_rows), "rawDataSize": str(raw_size)})
        if part_name:
            client.alter_partition_with_environment_context(db, table, obj, _STATS_BY_TASK)
        else:
            client.alter_table_with_environment_context(db, table, obj, _STATS_BY_TASK)


def _long_stats(values: list[int | None]) -> hms.ColumnStatisticsData:
    present = [v for v in values if v is not None]
    return hms.ColumnStatisticsData(longStats=hms.LongColumnStatsData(
        lowValue=min(present), highValue=max(present),
        numNulls=len(values) - len(present), numDVs=len(set(present))))


def _double_stats(values: list[float | None]) -> hms.ColumnStatisticsData:
    present = [v for v in values if v is not None]
    return hms.ColumnStatisticsData(doubleStats=hms.DoubleColumnStatsData(
        lowValue=min(present), highValue=max(present),
        numNulls=len(values) - len(present), numDVs=len(set(present))))


def _string_stats(values: list[str | None]) -> hms.ColumnStatisticsData:
    present = [v for v in values if v is not None]
    lengths = [len(v.encode("utf-8")) for v in present]
    return hms.ColumnStatisticsData(stringStats=hms.StringColumnStatsData(
        maxColLen=max(lengths), avgColLen=sum(lengths) / len(lengths),
        numNulls=len(values) - len(present), numDVs=len(set(present))))


def hms_decimal(value: Decimal) -> hms.Decimal:
    """HMS Thrift ``Decimal``: big-endian two's-complement unscaled bytes + scale."""
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    unscaled = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
    size = max(1, (unscaled.bit_length() + 8) // 8)
    return hms.Decimal(unscaled=unscaled.to_bytes(size, "big", signed=True), scale=-exponent)


def _decimal_stats(values: list[str | None]) -> hms.ColumnStatisticsData:
    present = [Decimal(v) for v in values if v is not None]
    return hms.ColumnStatisticsData(decimalStats=hms.DecimalColumnStatsData(
        lowValue=hms_decimal(min(present)), highValue=hms_decimal(max(present)),
        numNulls=len(values) - len(present), numDVs=len(set(present))))


def _date_stats(values: list[str | None]) -> hms.ColumnStatisticsData:
    epoch = dt.date(1970, 1, 1)
    days = [(dt.date.fromisoformat(v) - epoch).days for v in values if v is not None]
    return hms.ColumnStatisticsData(dateStats=hms.DateColumnStatsData(
        lowValue=hms.Date(daysSinceEpoch=min(days)), highValue=hms.Date(daysSinceEpoch=max(days)),
        numNulls=len(values) - len(days), numDVs=len(set(days))))


def _column_stats(
    db: str, table: str, part_name: str | None,
    columns: list[tuple[str, str, hms.ColumnStatisticsData]],
) -> hms.ColumnStatistics:
    return hms.ColumnStatistics(
        statsDesc=hms.ColumnStatisticsDesc(
            isTblLevel=part_name is None, dbName=db, tableName=table, partName=part_name,
            lastAnalyzed=int(time.time())),
        statsObj=[hms.ColumnStatisticsObj(colName=n, colType=t, statsData=d)
                  for n, t, d in columns],
    )


def _write_column_stats(client: Any, db: str) -> None:
    """Table-level stats on orders_text and partition-level stats on sales_part."""
    cols = list(zip(*ORDERS))
    table_stats = _column_stats(db, ORDERS_TEXT, None, [
        ("order_id", "int", _long_stats(list(cols[0]))),
        ("customer_id", "int", _long_stats(list(cols[1]))),
        ("amount", "decimal(10,2)", _decimal_stats(list(cols[2]))),
        ("order_date", "date", _date_stats(list(cols[3]))),
        ("note", "string", _string_stats(list(cols[4]))),
    ])
    year, region = (kv.split("=", 1)[1] for kv in STATS_PARTITION.split("/"))
    rows = [r for r in SALES if r[4] == int(year) and r[5] == region]
    part_stats = _column_stats(db, SALES_PART, STATS_PARTITION, [
        ("sale_id", "int", _long_stats([r[0] for r in rows])),
        ("product", "string", _string_stats([r[1] for r in rows])),
        ("units", "int", _long_stats([r[2] for r in rows])),
        ("revenue", "double", _double_stats([r[3] for r in rows])),
    ])
    if not client.update_table_column_statistics(table_stats):
        raise RuntimeError(f"HMS refused table column statistics for {db}.{ORDERS_TEXT}")
    if not client.update_partition_column_statistics(part_stats):
        raise RuntimeError(f"HMS refused partition column statistics for {STATS_PARTITION}")


def write_text_files(folder: Path, files: dict[str, str]) -> dict[str, str]:
    """Write ``files`` (name -> text) into a new ``folder``; name -> ``Path.as_uri()``."""
    folder.mkdir()
    uris = {}
    for name, text in files.items():
        (folder / name).write_text(text)
        uris[name] = (folder / name).as_uri()
    return uris
