#!/usr/bin/env python3
"""CSV → Parquet transformation throughput: Strata's executor vs DuckDB's own COPY, same files.

The data is TPC-DS ``store_sales`` from DuckDB's ``tpcds`` extension (the
``duckdb-extension-tpcds`` wheel of the ``test`` extra, loaded by full path, offline), at scale
factor ``--sf`` (default 1: 2.88 M rows, ~390 MB of text), split into ``--files`` (default
10,000) ``|``-delimited text files without header, as dsdgen writes them: NULL is an empty field
and every line ends with a trailing ``|`` (Hive's LazySimpleSerDe sees an extra empty field and
ignores it). The files are generated once into ``--work-dir`` and reused while sf and count match.

One run measures, each in a fresh child process (so each gets a cold interpreter and its own peak
RSS), in this order:

* **(a) duckdb-typed**: DuckDB's fastest COPY of the files to one Parquet file:
  ``read_csv([...], auto_detect=false, columns={...}, delim='|', header=false)`` with the Hive
  column types (plus a VARCHAR column for the trailing empty field, not written) — the baseline;
* **(b) duckdb-sniffing**: ``read_csv([...], delim='|', header=false)`` with DuckDB's sniffer;
* **(c) strata**: :func:`run_strata_transform`: a :class:`catalog.service.CatalogService` on a
  temporary data dir, the store_sales Hive schema (``bigint`` keys, ``int`` quantity,
  ``decimal(7,2)`` amounts; LazySimpleSerDe ``field.delim='|'``), planned by
  :func:`catalog.transform.planner.plan` and written by
  :class:`catalog.transform.executors.EmbeddedExecutor` below ``/catalog/bench/...`` of the
  service's namespace (``--definition``, default ``file.size.min=64MB``).

Printed: MB/s of CSV in per run (MB = 10^6 bytes of the text files), the ratio (c)/(a) (target
>= 0.9), the CPU seconds (all threads, the whole child) and peak RSS of each child, row counts and a checksum (sum of ss_net_paid, count of NULL
customers) that must agree between (a) and (c), and the same three queries (count, sum, group-by
store) through DuckDB over the CSV files and over Strata's Parquet output, with their ratio.
Everything goes as JSON to ``--out`` (default ``bench/results/transform.json``).

Run from the repository root: ``python3 bench/bench_transform.py`` (``--sf 0.1`` for a quick one).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TARGET = 0.9
#: store_sales as Hive declares it (hive-testbench's TPC-DS DDL).
COLUMNS: list[tuple[str, str]] = [
    ("ss_sold_date_sk", "bigint"), ("ss_sold_time_sk", "bigint"), ("ss_item_sk", "bigint"),
    ("ss_customer_sk", "bigint"), ("ss_cdemo_sk", "bigint"), ("ss_hdemo_sk", "bigint"),
    ("ss_addr_sk", "bigint"), ("ss_store_sk", "bigint"), ("ss_promo_sk", "bigint"),
    ("ss_ticket_number", "bigint"), ("ss_quantity", "int"),
] + [(name, "decimal(7,2)") for name in (
    "ss_wholesale_cost", "ss_list_price", "ss_sales_price", "ss_ext_discount_amt",
    "ss_ext_sales_price", "ss_ext_wholesale_cost", "ss_ext_list_price", "ss_ext_tax",
    "ss_coupon_amt", "ss_net_paid", "ss_net_paid_inc_tax", "ss_net_profit")]
_DUCK_TYPES = {"bigint": "BIGINT", "int": "INTEGER", "decimal(7,2)": "DECIMAL(7,2)"}
DEFAULT_DEFINITION = "file.size.min=64MB; file.parquet.compression=snappy"
QUERIES = {
    "count": "SELECT count(*) FROM {src}",
    "sum": "SELECT sum(ss_net_paid), sum(ss_quantity) FROM {src}",
    "group_by": "SELECT ss_store_sk, count(*), sum(ss_net_profit) FROM {src} "
                "GROUP BY ss_store_sk ORDER BY ss_store_sk",
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--sf", type=float, default=1.0, help="TPC-DS scale factor (default 1)")
    ap.add_argument("--files", type=int, default=10_000, help="CSV files to split into")
    ap.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "strata-bench-transform",
                    help="where the CSV files are generated and kept for the next run")
    ap.add_argument("--definition", default=DEFAULT_DEFINITION,
                    help=f"Strata's transformation definition (default '{DEFAULT_DEFINITION}')")
    ap.add_argument("--memory-limit", type=int, default=None,
                    help="EmbeddedExecutor memory_limit_bytes (default: the settings' 2 GiB)")
    ap.add_argument("--skip-sniffing", action="store_true", help="leave out run (b)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "transform.json")
    ap.add_argument("--child", choices=["typed", "sniffing", "strata"], help=argparse.SUPPRESS)
    ap.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.sf <= 0 or args.files < 1:
        ap.error("--sf must be > 0 and --files >= 1")
    return args


# -- data ----------------------------------------------------------------------------------------

def tpcds_extension() -> str:
    """Path of the tpcds extension shipped in the duckdb-extension-tpcds wheel."""
    import duckdb

    spec = importlib.util.find_spec("duckdb_extension_tpcds")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("duckdb-extension-tpcds is not installed: pip install -e '.[test]'")
    path = (Path(list(spec.submodule_search_locations)[0]) / "extensions"
            / f"v{duckdb.__version__}" / "tpcds.duckdb_extension")
    if not path.exists():
        raise SystemExit(f"{path} missing: the wheel must match duckdb=={duckdb.__version__}")
    return str(path)


def generate(csv_dir: Path, sf: float, n_files: int) -> dict[str, Any]:
    """store_sales at ``sf`` as ``n_files`` dsdgen-style text files (reused when present)."""
    marker = csv_dir / "_generated.json"
    if marker.exists():
        meta: dict[str, Any] = json.loads(marker.read_text())
        if meta.get("sf") == sf and meta.get("files") == n_files:
            log(f"reusing {n_files} files in {csv_dir}")
            return meta
    import duckdb

    shutil.rmtree(csv_dir, ignore_errors=True)
    csv_dir.mkdir(parents=True)
    whole = csv_dir.parent / "store_sales.dat"
    t0 = time.perf_counter()
    con = duckdb.connect()
    con.execute(f"LOAD '{tpcds_extension()}'")
    con.execute(f"CALL dsdgen(sf={sf})")
    # NULL as an empty field and a trailing '|' per line, as dsdgen writes its .dat files.
    con.execute(f"COPY (SELECT *, NULL::VARCHAR AS _end FROM store_sales) TO '{whole}' "
                f"(FORMAT csv, DELIMITER '|', HEADER false, QUOTE '')")
    rows = con.execute("SELECT count(*) FROM store_sales").fetchone()
    con.close()
    data = whole.read_bytes()
    whole.unlink()
    size, start = len(data), 0
    for i in range(n_files):
        end = size if i == n_files - 1 else max(start, data.find(b"\n", (i + 1) * size // n_files) + 1)
        (csv_dir / f"part-{i:05d}.dat").write_bytes(data[start:end])
        start = end
    meta = {"sf": sf, "files": n_files, "rows": rows[0] if rows else 0, "bytes": size,
            "generate_s": round(time.perf_counter() - t0, 1)}
    marker.write_text(json.dumps(meta))
    log(f"generated {meta['rows']:,} rows, {size / 1e6:.0f} MB in {n_files} files "
        f"({meta['generate_s']} s)")
    return meta


def csv_files(csv_dir: Path) -> list[Path]:
    return sorted(csv_dir.glob("part-*.dat"))


# -- the runs (each in a child process) ----------------------------------------------------------

def duckdb_copy(csv_dir: Path, out: Path, typed: bool) -> dict[str, Any]:
    """(a) / (b): DuckDB's COPY of the CSV files to one Parquet file."""
    import duckdb

    files = [str(p) for p in csv_files(csv_dir)]
    con = duckdb.connect()
    if typed:
        spec = ", ".join(f"'{n}': '{_DUCK_TYPES[t]}'" for n, t in COLUMNS) + ", '_end': 'VARCHAR'"
        src = (f"read_csv({files!r}, auto_detect=false, columns={{{spec}}}, delim='|', "
               f"header=false)")
        sql = f"COPY (SELECT * EXCLUDE (_end) FROM {src}) TO '{out}' (FORMAT parquet)"
    else:
        sql = f"COPY (SELECT * FROM read_csv({files!r}, delim='|', header=false)) TO '{out}' (FORMAT parquet)"
    t0 = time.perf_counter()
    con.execute(sql)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "output": str(out)}


def run_strata_transform(csv_dir: Path, data_dir: Path, *, definition_text: str,
                         memory_limit_bytes: int | None = None) -> dict[str, Any]:
    """(c): Strata transforms the CSV folder as one unpartitioned Hive table (store_sales schema,
    LazySimpleSerDe ``field.delim='|'``) into ``/catalog/bench/store_sales/v1`` of a fresh
    :class:`CatalogService`'s namespace; seconds of planning + executing, and the output."""
    from catalog.config import Settings
    from catalog.models import Column, SerDe, StorageDescriptor, Table
    from catalog.service import CatalogService
    from catalog.transform.definition import parse_definition
    from catalog.transform.executors import EmbeddedExecutor, PartitionTask
    from catalog.transform.planner import PartitionInput, plan
    from catalog.transform.source import LAZY_SIMPLE_SERDE

    service = CatalogService(Settings(data_dir=data_dir))
    try:
        sd = StorageDescriptor(
            columns=[Column(name=n, type=t) for n, t in COLUMNS], location=csv_dir.as_uri(),
            input_format="org.apache.hadoop.mapred.TextInputFormat",
            serde=SerDe(serialization_lib=LAZY_SIMPLE_SERDE, parameters={"field.delim": "|"}))
        table = Table(db_name="bench", name="store_sales", sd=sd)
        definition = parse_definition(definition_text)
        t0 = time.perf_counter()
        files = [(p.as_uri(), p.stat().st_size) for p in csv_files(csv_dir)]
        (part_plan,) = plan([PartitionInput("", csv_dir.as_uri(), files)], definition)
        executor = EmbeddedExecutor(service.fs, {}, service.settings, memory_limit_bytes)
        out_dir = "/catalog/bench/store_sales/v1"
        layout = executor.run(PartitionTask(part_plan, table, None, definition, out_dir, 1, None))
        seconds = time.perf_counter() - t0
        return {"seconds": seconds, "output": layout.location,
                "output_files": len(part_plan.output_files),
                "rows": int(layout.parameters["numRows"]),
                "memory_limit_bytes": executor.memory_limit_bytes}
    finally:
        service.close()


def peak_rss_bytes() -> int:
    """This process's peak RSS (``VmHWM``: unlike ``ru_maxrss`` it is not inherited over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child_main(args: argparse.Namespace) -> int:
    csv_dir = args.work_dir / "csv"
    scratch = args.work_dir / "out"
    if args.child == "strata":
        res = run_strata_transform(csv_dir, scratch / "strata-data", definition_text=args.definition,
                                   memory_limit_bytes=args.memory_limit)
    else:
        res = duckdb_copy(csv_dir, scratch / f"{args.child}.parquet", typed=args.child == "typed")
    res["peak_rss_bytes"] = peak_rss_bytes()
    usage = resource.getrusage(resource.RUSAGE_SELF)  # all threads, the whole child
    res["cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 2)
    args.child_out.write_text(json.dumps(res))
    return 0


def run_child(args: argparse.Namespace, which: str) -> dict[str, Any]:
    out = args.work_dir / f"child-{which}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", which, "--child-out", str(out),
           "--work-dir", str(args.work_dir), "--definition", args.definition]
    if args.memory_limit is not None:
        cmd += ["--memory-limit", str(args.memory_limit)]
    subprocess.run(cmd, check=True, cwd=REPO)
    res: dict[str, Any] = json.loads(out.read_text())
    out.unlink()
    return res


# -- checks and queries --------------------------------------------------------------------------

def parquet_source(location: str) -> str:
    path = location[len("file://"):] if location.startswith("file://") else location
    return f"read_parquet('{path}/*.parquet')" if not path.endswith(".parquet") else \
        f"read_parquet('{path}')"


def checksum(src: str) -> list[Any]:
    import duckdb

    row = duckdb.connect().execute(
        f"SELECT count(*), sum(ss_net_paid)::VARCHAR, count(*) - count(ss_customer_sk), "
        f"sum(ss_ticket_number) FROM {src}").fetchone()
    return list(row) if row else []


def time_queries(csv_dir: Path, parquet: str) -> dict[str, Any]:
    """Each query over the CSV files (typed read_csv) and over the Parquet output, best of 3."""
    import duckdb

    files = [str(p) for p in csv_files(csv_dir)]
    spec = ", ".join(f"'{n}': '{_DUCK_TYPES[t]}'" for n, t in COLUMNS) + ", '_end': 'VARCHAR'"
    csv_src = f"read_csv({files!r}, auto_detect=false, columns={{{spec}}}, delim='|', header=false)"
    con = duckdb.connect()
    res: dict[str, Any] = {}
    for name, sql in QUERIES.items():
        times = {}
        answers = {}
        for label, src in (("csv", csv_src), ("parquet", parquet)):
            best = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                answers[label] = con.execute(sql.format(src=src)).fetchall()
                best = min(best, time.perf_counter() - t0)
            times[label] = best
        res[name] = {"csv_s": round(times["csv"], 4), "parquet_s": round(times["parquet"], 4),
                     "speedup": round(times["csv"] / times["parquet"], 1),
                     "same_answer": answers["csv"] == answers["parquet"]}
    return res


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.work_dir = args.work_dir.resolve()
    if args.child:
        return child_main(args)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    meta = generate(args.work_dir / "csv", args.sf, args.files)
    mb = meta["bytes"] / 1e6
    scratch = args.work_dir / "out"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    runs: dict[str, dict[str, Any]] = {}
    try:
        for which in ("typed", "sniffing", "strata"):
            if which == "sniffing" and args.skip_sniffing:
                continue
            log(f"run {which} ...")
            r = run_child(args, which)
            r["mb_per_s"] = round(mb / r["seconds"], 1)
            runs[which] = r
            log(f"  {which}: {r['seconds']:.2f} s, {r['mb_per_s']} MB/s CSV in, "
                f"{r['cpu_seconds']} CPU s, peak RSS {r['peak_rss_bytes'] / 2**20:.0f} MiB")
        ratio = runs["typed"]["seconds"] / runs["strata"]["seconds"]
        sums = {k: checksum(parquet_source(runs[k]["output"])) for k in ("typed", "strata")}
        queries = time_queries(args.work_dir / "csv", parquet_source(runs["strata"]["output"]))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print()
    print(f"store_sales sf={args.sf}: {meta['rows']:,} rows, {mb:.0f} MB in {args.files:,} files; "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print(f"{'run':<34}{'seconds':>9}{'MB/s':>8}{'CPU s':>8}{'peak RSS MiB':>14}")
    labels = {"typed": "(a) DuckDB read_csv typed → COPY", "sniffing": "(b) DuckDB read_csv sniffing",
              "strata": "(c) Strata EmbeddedExecutor"}
    for k, r in runs.items():
        print(f"{labels[k]:<34}{r['seconds']:>9.2f}{r['mb_per_s']:>8}{r['cpu_seconds']:>8}"
              f"{r['peak_rss_bytes'] / 2**20:>14.0f}")
    verdict = "meets" if ratio >= TARGET else "misses"
    print(f"Strata / (a) throughput: {ratio:.2f}x ({verdict} the {TARGET}x target); "
          f"definition '{args.definition}', {runs['strata']['output_files']} output file(s), "
          f"memory limit {runs['strata']['memory_limit_bytes'] / 2**20:.0f} MiB")
    same = sums["typed"] == sums["strata"]
    print(f"checksums (rows, sum net_paid, NULL customers, sum ticket): "
          f"{'equal' if same else 'DIFFER'} {sums['strata']}")
    for name, q in queries.items():
        print(f"query {name:<9} CSV {q['csv_s']:.3f} s, Parquet {q['parquet_s']:.3f} s: "
              f"{q['speedup']}x faster{'' if q['same_answer'] else ' (ANSWERS DIFFER)'}")
    res = {
        "benchmark": "transform", "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "python": sys.version.split()[0], "platform": platform.platform(),
        "cpus": os.cpu_count(), "load_avg_end": os.getloadavg()[0],
        "data": {**meta, "mb": round(mb, 1)}, "definition": args.definition,
        "runs": runs, "ratio_strata_over_typed": round(ratio, 3), "target": TARGET,
        "checksums": sums, "checksums_equal": same, "queries": queries,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    log(f"wrote {args.out}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
