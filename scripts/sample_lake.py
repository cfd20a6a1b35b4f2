"""Writes a small sample lake (one folder per table, Hive-style partitions) with DuckDB."""

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
    return db


if __name__ == "__main__":
    print(write_sample_lake(Path(sys.argv[1])))
