"""Source tables for the transformation integration tests, one of each kind Strata transforms.

Data files are written with plain Python (text, gzip'd text) and pyarrow (Parquet) under a
folder of their own; the tables are EXTERNAL with ``file://`` locations, created by Spark DDL in
their own database of the session HMS (``xform_src`` by default), so no shared fixture changes.

Each :class:`XTable` knows its rows as Hive reads them (the reference: header lines skipped,
``\\N`` is NULL, OpenCSVSerde columns are strings), in the spelling of Trino's JSON protocol
(DECIMAL and DATE as strings, BIGINT/INT as ``int``, DOUBLE as ``float``, NULL as ``None``),
partition values last. Doubles are multiples of 1/4 so that sums are exact in any order.
"""

from __future__ import annotations

import datetime as dt
import gzip
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tests.support.source_tables import file_uri
from tests.support.spark import SparkSql

EVENTS = "events_text"  # '|' text, a header line per file, \N nulls, 24 small files
PEOPLE = "people_csv"  # OpenCSVSerde, quoted fields holding the separator
ITEMS = "items_parquet"  # Parquet written by pyarrow
SALES = "sales_part"  # text partitioned by (year int, region string)
LEDGER = "ledger_text"  # decimals and dates in text
LOGS = "logs_gz"  # gzip'd tab-separated text (.gz files)
BAD = "bad_parquet"  # Parquet, corrupted by the failure test
BLANKS = "blanks_text"  # text whose TABLE property serialization.null.format='' (Hive's idiom)

EVENTS_FILES = 24
EVENTS_HEADER = "event_id|category|amount|qty|note"
#: The last one is an empty folder (a partition without rows: an empty layout).
SALES_PARTITIONS = [(2023, "east"), (2023, "west"), (2024, "east"), (2024, "west"),
                    (2025, "north")]
EMPTY_PARTITION = (2025, "north")
#: The partition the source-change test appends a file to.
CHANGED_PARTITION = (2024, "east")
#: The ledger file the source-change test rewrites.
CHANGED_LEDGER_FILE = "part-00001.txt"
#: The bad_parquet file the failure test overwrites with garbage.
CORRUPT_FILE = "part-00001.parquet"


@dataclass
class XTable:
    """One source table: its Hive columns, partition keys, rows (Trino spelling) and how the
    generic queries address it."""

    name: str
    columns: list[tuple[str, str]]
    key: str  # unique column: ORDER BY of the full-row query
    group: str  # a column without NULLs to GROUP BY
    sums: list[str]  # numeric columns summed
    rows: list[tuple[Any, ...]]
    partition_keys: list[tuple[str, str]] = field(default_factory=list)
    spark_agrees: bool = True  # False: Spark reads it differently from Hive (header lines)
    files: int = 0

    @property
    def all_columns(self) -> list[tuple[str, str]]:
        return self.columns + self.partition_keys

    def index(self, column: str) -> int:
        return [c for c, _ in self.all_columns].index(column)

    def type_of(self, column: str) -> str:
        return dict(self.all_columns)[column]


# -- values as text ------------------------------------------------------------------------------


def _text(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _csv(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _write_lines(path: Path, lines: list[str], *, gz: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)


def _sql_str(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# -- the rows ------------------------------------------------------------------------------------


def _event(i: int) -> tuple[Any, ...]:
    return (i, ("alpha", "beta", "gamma", "delta")[i % 4],
            None if i % 7 == 0 else (i % 50) * 0.25 + 1.0,
            None if i % 11 == 0 else (i * 3) % 17,
            None if i % 5 == 0 else f"note {i}")


EVENTS_ROWS = [_event(i) for i in range(1, EVENTS_FILES * 6 + 1)]  # 6 rows per file

PEOPLE_ROWS: list[tuple[Any, ...]] = [
    ("01", "Smith, John", "Boston, MA", 'likes "quotes"'),
    ("02", "Doe, Jane", "New York, NY", "plain"),
    ("03", "O'Brien", "Chicago", "a, b, c"),
    ("04", "Lee", "San Jose, CA", ""),
    ("05", "Müller, Jörg", "Zürich", "unicode, too"),
    ("06", "Tab\tSeparated", "Boston, MA", "tab inside"),
    ("07", "Back\\slash", "Chicago", "x,y"),
    ("08", "Nobody", "New York, NY", ",leading comma"),
]


def _item(i: int) -> tuple[Any, ...]:
    return (i, f"SKU-{'ABCDE'[i % 5]}", None if i % 9 == 0 else i * 10 + 1,
            None if i % 8 == 0 else (i % 13) * 2.5 + 0.75)


ITEMS_ROWS = [_item(i) for i in range(1, 31)]  # 3 files of 10


def _sale(i: int, year: int, region: str) -> tuple[Any, ...]:
    return (i, f"prod-{i % 4 + 1}", None if i % 10 == 0 else i % 6 + 1,
            (i % 9) * 1.25 + 0.5, year, region)


def _sales_rows() -> dict[tuple[int, str], list[list[tuple[Any, ...]]]]:
    """Per partition, its files' rows (2 files of 5 rows each)."""
    out: dict[tuple[int, str], list[list[tuple[Any, ...]]]] = {}
    for p, (year, region) in enumerate(SALES_PARTITIONS):
        base = (p + 1) * 100
        out[(year, region)] = [] if (year, region) == EMPTY_PARTITION else [
            [_sale(base + f * 10 + j, year, region) for j in range(5)] for f in range(2)]
    return out


SALES_FILES = _sales_rows()
SALES_ROWS = [r for files in SALES_FILES.values() for rows in files for r in rows]
#: The rows the source-change test appends to CHANGED_PARTITION.
SALES_APPENDED = [_sale(900 + j, *CHANGED_PARTITION) for j in range(3)]

def _kind(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """A NULL-free ``kind`` column last: debit for a negative amount."""
    return [(*r, "debit" if (r[1] or "").startswith("-") else "credit") for r in rows]


LEDGER_FILES: dict[str, list[tuple[Any, ...]]] = {
    "part-00000.txt": [
        (1, "1250.50", "0.0125", "2024-01-05", "rent"),
        (2, "-75.25", "1.5000", "2024-01-31", None),
        (3, None, "0.0001", "2024-02-29", "leap day"),
        (4, "9999999999.99", None, "1999-12-31", "largest"),
    ],
    "part-00001.txt": [
        (5, "0.00", "0.0000", None, "zero"),
        (6, "-9999999999.99", "9.9999", "2038-01-19", "smallest"),
        (7, "12.30", "3.1416", "1970-01-01", "epoch"),
    ],
    "part-00002.txt": [
        (8, "100.00", "0.5000", "2024-12-31", "year end"),
        (9, "42.42", "2.7183", "2000-03-01", None),
    ],
}
LEDGER_FILES = {name: _kind(rows) for name, rows in LEDGER_FILES.items()}
LEDGER_ROWS = [r for rows in LEDGER_FILES.values() for r in rows]
#: What the source-change test rewrites CHANGED_LEDGER_FILE with (more rows, other values).
LEDGER_REWRITTEN: list[tuple[Any, ...]] = _kind([
    (5, "5.55", "0.0500", "2025-05-05", "changed"),
    (6, "-1.00", "1.0000", "2025-06-06", None),
    (7, "12.30", "3.1416", "1970-01-01", "epoch"),
    (10, "777.77", None, "2025-07-07", "added"),
])

LOG_LEVELS = ("DEBUG", "INFO", "WARN", "ERROR")


def _log(i: int) -> tuple[Any, ...]:
    return (i, LOG_LEVELS[i % 4], None if i % 6 == 0 else i * 1000 + 7,
            (dt.date(2024, 3, 1) + dt.timedelta(days=i % 10)).isoformat(),
            None if i % 4 == 0 else f"message {i}: done")


LOGS_ROWS = [_log(i) for i in range(1, 37)]  # 3 files of 12

BAD_ROWS = [(i, f"label-{i}") for i in range(1, 21)]  # 2 files of 10

#: blanks_text as written: an empty field is NULL (null format ''), so is a missing one;
#: ``\N`` is an ordinary string there.
BLANKS_LINES = ["1,red,,10", "2,,plain,", "3,blue,\\N,30", "4,red,x y,", "5,,,50", "6,green"]
BLANKS_ROWS: list[tuple[Any, ...]] = [
    (1, "red", None, 10), (2, None, "plain", None), (3, "blue", "\\N", 30),
    (4, "red", "x y", None), (5, None, None, 50), (6, "green", None, None)]


def tables() -> dict[str, XTable]:
    """Every table, by name (fresh objects: tests may change their rows)."""
    return {
        EVENTS: XTable(EVENTS, [("event_id", "int"), ("category", "string"),
                                ("amount", "double"), ("qty", "bigint"), ("note", "string")],
                       key="event_id", group="category", sums=["amount", "qty"],
                       rows=list(EVENTS_ROWS), spark_agrees=False, files=EVENTS_FILES),
        PEOPLE: XTable(PEOPLE, [("id", "string"), ("name", "string"), ("city", "string"),
                                ("comment", "string")],
                       key="id", group="city", sums=[], rows=list(PEOPLE_ROWS), files=2),
        ITEMS: XTable(ITEMS, [("item_id", "int"), ("sku", "string"), ("qty", "bigint"),
                              ("price", "double")],
                      key="item_id", group="sku", sums=["qty", "price"], rows=list(ITEMS_ROWS),
                      files=3),
        SALES: XTable(SALES, [("sale_id", "int"), ("product", "string"), ("units", "int"),
                              ("revenue", "double")],
                      key="sale_id", group="region", sums=["units", "revenue"],
                      rows=list(SALES_ROWS), partition_keys=[("year", "int"),
                                                             ("region", "string")],
                      files=2 * (len(SALES_PARTITIONS) - 1)),
        LEDGER: XTable(LEDGER, [("entry_id", "int"), ("amount", "decimal(12,2)"),
                                ("rate", "decimal(6,4)"), ("day", "date"), ("memo", "string"),
                                ("kind", "string")],
                       key="entry_id", group="kind", sums=["amount", "rate"],
                       rows=list(LEDGER_ROWS), files=len(LEDGER_FILES)),
        LOGS: XTable(LOGS, [("log_id", "int"), ("level", "string"), ("bytes", "bigint"),
                            ("day", "date"), ("msg", "string")],
                     key="log_id", group="level", sums=["bytes"], rows=list(LOGS_ROWS),
                     files=3),
        BAD: XTable(BAD, [("id", "int"), ("label", "string")], key="id", group="label",
                    sums=["id"], rows=list(BAD_ROWS), files=2),
        BLANKS: XTable(BLANKS, [("id", "int"), ("color", "string"), ("note", "string"),
                                ("n", "int")],
                       key="id", group="id", sums=["n"], rows=list(BLANKS_ROWS), files=1),
    }


# -- writing the files ---------------------------------------------------------------------------


def _parquet(path: Path, schema: pa.Schema, rows: list[tuple[Any, ...]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns: list[list[Any]] = [[r[i] for r in rows] for i in range(len(schema))]
    pq.write_table(pa.Table.from_arrays([pa.array(c, type=f.type)
                                         for c, f in zip(columns, schema)], schema=schema), path)


ITEMS_SCHEMA = pa.schema([("item_id", pa.int32()), ("sku", pa.string()), ("qty", pa.int64()),
                          ("price", pa.float64())])
BAD_SCHEMA = pa.schema([("id", pa.int32()), ("label", pa.string())])


def sales_file(data_dir: Path, year: int, region: str, name: str) -> Path:
    return data_dir / SALES / f"year={year}" / f"region={region}" / name


def write_sales_file(path: Path, rows: list[tuple[Any, ...]]) -> None:
    _write_lines(path, [",".join(_text(v) for v in r[:4]) for r in rows])


def write_ledger_file(path: Path, rows: list[tuple[Any, ...]]) -> None:
    _write_lines(path, [",".join(_text(v) for v in r) for r in rows])


def write_files(data_dir: Path) -> None:
    for f in range(EVENTS_FILES):
        _write_lines(data_dir / EVENTS / f"part-{f:05d}.txt",
                     [EVENTS_HEADER] + ["|".join(_text(v) for v in r)
                                        for r in EVENTS_ROWS[f * 6:(f + 1) * 6]])
    for f, rows in enumerate((PEOPLE_ROWS[:4], PEOPLE_ROWS[4:])):
        _write_lines(data_dir / PEOPLE / f"people-{f}.csv",
                     [",".join(_csv(v) for v in r) for r in rows])
    for f in range(3):
        _parquet(data_dir / ITEMS / f"part-{f:05d}.parquet", ITEMS_SCHEMA,
                 ITEMS_ROWS[f * 10:(f + 1) * 10])
    for (year, region), files in SALES_FILES.items():
        sales_file(data_dir, year, region, "x").parent.mkdir(parents=True, exist_ok=True)
        for f, rows in enumerate(files):
            write_sales_file(sales_file(data_dir, year, region, f"data-{f}.txt"), rows)
    for name, rows in LEDGER_FILES.items():
        write_ledger_file(data_dir / LEDGER / name, rows)
    for f in range(3):
        _write_lines(data_dir / LOGS / f"log-{f}.txt.gz",
                     ["\t".join(_text(v) for v in r) for r in LOGS_ROWS[f * 12:(f + 1) * 12]],
                     gz=True)
    for f in range(2):
        _parquet(data_dir / BAD / f"part-{f:05d}.parquet", BAD_SCHEMA,
                 BAD_ROWS[f * 10:(f + 1) * 10])
    _write_lines(data_dir / BLANKS / "blanks.txt", BLANKS_LINES)
    # what Hadoop jobs leave beside data files: hidden names, read by no engine
    (data_dir / ITEMS / "_SUCCESS").write_bytes(b"")
    (data_dir / ITEMS / ".staging-notes").write_bytes(b"not parquet")


# -- the tables ----------------------------------------------------------------------------------


def build(spark: SparkSql, data_dir: Path, db: str = "xform_src") -> dict[str, XTable]:
    """Write the files and create ``db`` with every table (EXTERNAL, ``file://``)."""
    data_dir = Path(data_dir).resolve()
    write_files(data_dir)
    specs = tables()

    def loc(name: str) -> str:
        return _sql_str(file_uri(data_dir / name))

    def cols(t: XTable) -> str:
        return ", ".join(f"{c} {ty.upper()}" for c, ty in t.columns)

    spark.sql(f"CREATE DATABASE {db} LOCATION {loc(db + '.db')}")
    t = specs[EVENTS]
    spark.sql(f"""CREATE EXTERNAL TABLE {db}.{t.name} ({cols(t)})
                  ROW FORMAT DELIMITED FIELDS TERMINATED BY '|' STORED AS TEXTFILE
                  LOCATION {loc(t.name)} TBLPROPERTIES ('skip.header.line.count'='1')""")
    t = specs[PEOPLE]
    spark.sql(f"""CREATE EXTERNAL TABLE {db}.{t.name} ({cols(t)})
                  ROW FORMAT SERDE 'org.apache.hadoop.hive.serde2.OpenCSVSerde'
                  WITH SERDEPROPERTIES ('separatorChar'=',', 'quoteChar'='"',
                                        'escapeChar'='\\\\')
                  STORED AS TEXTFILE LOCATION {loc(t.name)}""")
    for name in (ITEMS, BAD):
        t = specs[name]
        spark.sql(f"CREATE EXTERNAL TABLE {db}.{t.name} ({cols(t)}) STORED AS PARQUET "
                  f"LOCATION {loc(t.name)}")
    t = specs[SALES]
    spark.sql(f"""CREATE EXTERNAL TABLE {db}.{t.name} ({cols(t)})
                  PARTITIONED BY (year INT, region STRING)
                  ROW FORMAT DELIMITED FIELDS TERMINATED BY ',' STORED AS TEXTFILE
                  LOCATION {loc(t.name)}""")
    for year, region in SALES_PARTITIONS:
        spark.sql(f"ALTER TABLE {db}.{t.name} ADD PARTITION (year={year}, region='{region}') "
                  f"LOCATION {loc(f'{t.name}/year={year}/region={region}')}")
    t = specs[LEDGER]
    spark.sql(f"""CREATE EXTERNAL TABLE {db}.{t.name} ({cols(t)})
                  ROW FORMAT DELIMITED FIELDS TERMINATED BY ',' STORED AS TEXTFILE
                  LOCATION {loc(t.name)}""")
    t = specs[LOGS]
    spark.sql(f"""CREATE EXTERNAL TABLE {db}.{t.name} ({cols(t)})
                  ROW FORMAT DELIMITED FIELDS TERMINATED BY '\\t' STORED AS TEXTFILE
                  LOCATION {loc(t.name)}""")
    t = specs[BLANKS]  # Spark drops NULL DEFINED AS: the null format is a table property
    spark.sql(f"""CREATE EXTERNAL TABLE {db}.{t.name} ({cols(t)})
                  ROW FORMAT DELIMITED FIELDS TERMINATED BY ',' STORED AS TEXTFILE
                  LOCATION {loc(t.name)} TBLPROPERTIES ('serialization.null.format'='')""")
    return specs


# -- expected answers (Hive semantics) -----------------------------------------------------------


def _sum(values: list[Any], hive_type: str) -> Any:
    present = [v for v in values if v is not None]
    if not present:
        return None
    if hive_type.startswith("decimal"):
        scale = int(hive_type.split(",")[1].rstrip(")"))
        total = sum((Decimal(v) for v in present), Decimal(0))
        return str(total.quantize(Decimal(1).scaleb(-scale)))
    return sum(present)


def queries(t: XTable, qualified: str) -> dict[str, str]:
    """The generic queries of a table, by label."""
    sums = ", ".join(f"sum({c})" for c in t.sums) or "count(*)"
    return {
        "count": f"SELECT count(*) FROM {qualified}",
        "sums": f"SELECT {sums} FROM {qualified}",
        "group": f"SELECT {t.group}, count(*), {sums} FROM {qualified} "
                 f"GROUP BY {t.group} ORDER BY {t.group}",
        "rows": f"SELECT * FROM {qualified} ORDER BY {t.key}",
    }


def expected(t: XTable) -> dict[str, list[tuple[Any, ...]]]:
    """What :func:`queries` return when the table is read as Hive reads it."""

    def sums(rows: list[tuple[Any, ...]]) -> tuple[Any, ...]:
        if not t.sums:
            return (len(rows),)
        return tuple(_sum([r[t.index(c)] for r in rows], t.type_of(c)) for c in t.sums)

    gi = t.index(t.group)
    groups: dict[Any, list[tuple[Any, ...]]] = {}
    for r in t.rows:
        groups.setdefault(r[gi], []).append(r)
    return {
        "count": [(len(t.rows),)],
        "sums": [sums(t.rows)],
        "group": [(g, len(rows), *sums(rows)) for g, rows in sorted(groups.items())],
        "rows": sorted(t.rows, key=lambda r: r[t.index(t.key)]),
    }


def column_stats(t: XTable, rows: list[tuple[Any, ...]] | None = None
                 ) -> dict[str, tuple[float, int, Any, Any]]:
    """Per data column: (nulls fraction, distinct values, low, high) of ``rows`` (low/high for
    numbers and dates only, else None)."""
    rows = t.rows if rows is None else rows
    out = {}
    for c, ty in t.columns:
        values = [r[t.index(c)] for r in rows]
        present = [v for v in values if v is not None]
        low = high = None
        if present and ty != "string":
            key = (Decimal if ty.startswith("decimal") else None)
            low = min(present, key=key)
            high = max(present, key=key)
        nulls = (len(values) - len(present)) / len(values) if values else 0.0
        out[c] = (nulls, len(set(present)), low, high)
    return out
