"""The demo's query, run by DuckDB over the files Strata serves for a table, as an engine reads
them: the served location, format and schema come from Strata's REST API. Prints the answer and
the median time; ``--compare FILE`` also prints the speedup over a time saved earlier."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import duckdb

from api.client import CatalogClient, find_token

QUERY = ("SELECT page, count(*) AS clicks, round(sum(dwell_s), 2) AS dwell_s FROM t "
         "WHERE day >= DATE '2024-01-15' GROUP BY page ORDER BY page")
_DUCK_TYPES = {"bigint": "BIGINT", "int": "INTEGER", "double": "DOUBLE", "string": "VARCHAR",
               "date": "DATE", "boolean": "BOOLEAN", "float": "FLOAT"}


def source_sql(table: dict) -> str:
    """A DuckDB relation reading the served table: Parquet or delimited text."""
    sd = table["sd"]
    location = table["location"].removeprefix("file://").removeprefix("local://")
    serde = sd["serde"]["serialization_lib"] or ""
    if "parquet" in serde.lower():
        return f"read_parquet('{location}/*.parquet')"
    params = sd["serde"].get("parameters") or {}
    delim = params.get("field.delim", ",")
    header = int((table.get("parameters") or {}).get("skip.header.line.count", "0"))
    columns = {c["name"]: _DUCK_TYPES.get(c["type"].lower(), "VARCHAR") for c in sd["columns"]}
    return (f"read_csv('{location}/*', delim='{delim}', header={'true' if header else 'false'}, "
            f"auto_detect=false, columns={columns!r})")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("db")
    ap.add_argument("table")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--save", type=Path, help="write the median time here")
    ap.add_argument("--compare", type=Path, help="a median saved before: print the speedup")
    args = ap.parse_args()
    with CatalogClient(token=find_token()) as client:
        import os

        client_url = os.environ.get("CATALOG_SERVER")
        if client_url:
            client = CatalogClient(client_url, token=find_token())
        table = client.get_table(args.db, args.table)
    rel = source_sql(table)
    serde = table["sd"]["serde"]["serialization_lib"].rsplit(".", 1)[-1]
    files = len(list(Path(table["location"].removeprefix("file://")).iterdir()))
    print(f"  served: {serde}, {files} files at {table['location']}")
    times, answer = [], None
    for _ in range(args.runs):
        con = duckdb.connect()  # a fresh engine each run: nothing cached between runs
        started = time.perf_counter()
        answer = con.execute(QUERY.replace(" FROM t ", f" FROM {rel} ")).fetchall()
        times.append(time.perf_counter() - started)
        con.close()
    median = statistics.median(times)
    print(f"  {QUERY}")
    for row in answer or []:
        print(f"    {row}")
    print(f"  median of {args.runs}: {median:.3f} s")
    if args.save:
        args.save.write_text(json.dumps({"median_s": median, "answer": answer}, default=str))
    if args.compare:
        before = json.loads(args.compare.read_text())
        same = json.loads(json.dumps(answer, default=str)) == before["answer"]
        print(f"  speedup: {before['median_s'] / median:.1f}x "
              f"({before['median_s']:.3f} s -> {median:.3f} s), same answer: {same}")
        if not same:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
