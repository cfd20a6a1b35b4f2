"""Writes a small sample lake (one folder per table, Hive-style partitions) with DuckDB, and a
table of many small CSV files (``clicks``: the shape transformations are for)."""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb


def write_sample_lake(root: Path) -> Path:
    db = root / "shop"
    for sub in ("orders", "customers", "events"):
        (db / sub).mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"""COPY (SELECT i AS order_id, i % 50 AS customer_id,
                         round(random() * 500, 2) AS amount, DATE '2024-01-01' + CAST(i % 90 AS INTEGER) AS day
                  FROM range(1, 2001) t(i)) TO '{db}/orders/orders.csv' (HEADER)""")
    con.execute(f"""COPY (SELECT i AS customer_id, 'customer ' || i AS name,
                         ['Berlin', 'Paris', 'Oslo'][1 + i % 3] AS city
                  FROM range(0, 50) t(i)) TO '{db}/customers/customers.parquet' (FORMAT parquet)""")
    for year in (2023, 2024):
        for region in ("eu", "us"):
            part = db / "events" / f"year={year}" / f"region={region}"
            part.mkdir(parents=True, exist_ok=True)
            con.execute(f"""COPY (SELECT i AS event_id, 'click' AS kind, i * {year % 7} AS value
                          FROM range(0, 100) t(i)) TO '{part}/part-0.parquet' (FORMAT parquet)""")
    write_small_files(db / "clicks", files=CLICK_FILES)
    return db


#: Files of the ``clicks`` table (a few MB in all).
CLICK_FILES = 1500


def write_small_files(folder: Path, files: int, rows_per_file: int = 200) -> None:
    """``files`` CSV files with a header, ``rows_per_file`` rows each (one DuckDB COPY, partitioned
    by a file number that is then flattened into ``part-<n>.csv`` names)."""
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".{folder.name}-staging"
    con = duckdb.connect()
    con.execute(f"""COPY (SELECT i AS click_id, i % 997 AS user_id,
                         ['home', 'search', 'cart', 'checkout'][1 + i % 4] AS page,
                         round((i * 7919 % 10000) / 100.0, 2) AS dwell_s,
                         DATE '2024-01-01' + CAST(i % 60 AS INTEGER) AS day,
                         i // {rows_per_file} AS f
                  FROM range(0, {files * rows_per_file}) t(i))
                  TO '{staging}' (FORMAT csv, HEADER, PARTITION_BY (f), OVERWRITE_OR_IGNORE)""")
    for sub in sorted(staging.iterdir()):
        for n, csv in enumerate(sorted(sub.iterdir())):
            csv.rename(folder / f"part-{sub.name.split('=')[1]}-{n}.csv")
        sub.rmdir()
    staging.rmdir()


if __name__ == "__main__":
    print(write_sample_lake(Path(sys.argv[1])))
