#!/usr/bin/env python3
"""The headline (issue 10): Trino and Spark over ~10,000 small CSV files on remote storage,
before and after Strata.

One command, one run, everything on 127.0.0.1:

1. **Data**: TPC-DS ``store_sales`` at ``--sf`` (DuckDB's ``tpcds`` extension, the offline
   ``duckdb-extension-tpcds`` wheel) as ``--files`` ``|``-delimited text files without header,
   as dsdgen writes them (NULL = empty field, a trailing ``|``), and a copy partitioned by the
   sale's derived ``sold_year`` / ``sold_month`` (TPC-DS ``date_dim``; rows without a sale date
   are in ``sold_year=0/sold_month=0``) split into ``--part-files`` files over its partitions.
2. **Remote store**: moto's S3 server behind ``tests/support/fault_proxy.py`` adding
   ``--latency-ms`` (20) before every request chunk: one proxy for the engines and the HMS
   (``remote-engines``), one for Strata (``remote-strata``), so each side's requests are
   counted apart. The files are uploaded through the engines' proxy.
3. **Hive Metastore 2.3** (``tests/support/hms.py``, with hadoop-aws on its classpath so that it
   accepts ``s3://`` locations): ``tpcds.store_sales`` and ``tpcds.store_sales_part`` as EXTERNAL
   TEXTFILE tables, LazySimpleSerDe ``field.delim='|'``, created over Thrift.
4. **Strata**, two deployments of it in this process, each attaching ``tpcds`` from the HMS with
   ``/lake`` mounted on the bucket (through ``remote-strata``), each transforming both tables
   (``--definition``; job times reported):
   * ``remote``: catalog root ``/catalog`` on the remote store (a bucket of the same moto,
     through ``remote-strata``), ``serve.mode=cached``: Trino reads through Strata's S3 gateway
     (``api/s3``, whatever cache the gateway reads through at run time);
   * ``co-located``: catalog root on local disk, ``serve.mode=direct``: Trino reads
     ``local:///`` Parquet (Strata's Trino listener), Spark ``file:`` Parquet.
5. **Queries** (``QUERIES``): count/sum over the whole table, a group-by with a filter, a
   selective lookup, and a group-by on the partitioned copy that prunes to 3 of its partitions.
   Trino 476, one server, catalogs (the metastore cache off in all of them, so that every query
   reaches its metastore; Trino's per-query cache stays):
   * (a) ``hms``: the original HMS (behind a timing Thrift tap), native S3 to the remote store;
   * (b) ``cached``: Strata ``remote`` through the gateway, the block store emptied before each
     run (cold);
   * (c) the same, warm (after the cold runs);
   * (d) ``direct``: Strata ``co-located``, ``local:///`` Parquet.
   Spark 4.3 (``tests/support/spark.py``, ``--spark-master``) for (a) (hadoop-aws S3A to the
   remote store through ``remote-engines``) and (d) (Strata's verbatim listener).
   ``--repeats`` timed runs each (Spark: ``--spark-repeats``); the medians are reported.
   Every answer must equal DuckDB's over the local copy of the files, or the run fails.
6. **Where the time goes** for (a) and (c): Trino's query stats (``/v1/query/<id>``: queued,
   planning, execution, CPU, scheduled, blocked, physical input read time, bytes), metastore
   calls (the Thrift tap; for (c) one extra run through a tapped ``cached_tap`` catalog), the
   remote store's requests (each proxy's counter, moto's request log by kind), the gateway's
   requests (an ASGI wrapper: count, summed time, bytes) and the block store's hits/misses (when
   the namespace has one).

Printed: the table of medians and speedups over (a); JSON to ``--out``
(``bench/results/headline.json``), a bar chart (log axis) to ``--png``
(``bench/results/headline.png``). Every process started (moto, proxies, HMS, Trino, Spark) is
stopped by pid, also on Ctrl-C.

Run from the repository root: ``python3 bench/bench_headline.py`` (defaults: sf=3, 10,000
files), ``python3 bench/bench_headline.py --sf 0.1 --files 500`` for a quick one.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
for p in (REPO, REPO / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from bench_transform import COLUMNS, tpcds_extension  # noqa: E402

TARGET = 50.0
DB = "tpcds"
TABLE, PART_TABLE = "store_sales", "store_sales_part"
PART_KEYS = [("sold_year", "int"), ("sold_month", "int")]
# One bucket per table: moto's ListObjectsV2 walks every key of the bucket on each page.
LAKE_BUCKET, PART_BUCKET, CATALOG_BUCKET = "tpcds-lake", "tpcds-lake-part", "strata-catalog"
BUCKET_OF = {TABLE: LAKE_BUCKET, PART_TABLE: PART_BUCKET}
ACCESS, SECRET, REGION = "strata-bench-key", "strata-bench-secret-0123456789", "us-east-1"
DEFAULT_DEFINITION = "file.size.min=128MB; file.parquet.compression=snappy"
LAZY_SIMPLE_SERDE = "org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe"
TEXT_INPUT = "org.apache.hadoop.mapred.TextInputFormat"
TEXT_OUTPUT = "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat"
HADOOP_AWS = ("org.apache.hadoop", "hadoop-aws", "3.5.0")
AWS_BUNDLE = ("software.amazon.awssdk", "bundle", "2.35.4")
ANALYTICS_ACCELERATOR = ("software.amazon.s3.analyticsaccelerator", "analyticsaccelerator-s3",
                         "1.3.1")


@dataclass(frozen=True)
class Query:
    key: str
    label: str
    sql: str  # {t}: the table, qualified
    partitioned: bool = False
    target: bool = False


def queries(lookup_ticket: int) -> list[Query]:
    return [
        Query("count_sum", "count / sum, whole table",
              "SELECT count(*), sum(ss_net_paid), sum(ss_quantity) FROM {t}", target=True),
        Query("group_by", "group-by with a filter",
              "SELECT ss_store_sk, count(*), sum(ss_net_profit) FROM {t} "
              "WHERE ss_quantity BETWEEN 20 AND 40 GROUP BY ss_store_sk"),
        Query("lookup", "selective lookup (one ticket)",
              "SELECT ss_item_sk, ss_customer_sk, ss_quantity, ss_net_paid FROM {t} "
              f"WHERE ss_ticket_number = {lookup_ticket}"),
        Query("pruned", "partitioned copy, 3 of its partitions",
              "SELECT sold_month, count(*), sum(ss_net_paid) FROM {t} "
              "WHERE sold_year = 2002 AND sold_month BETWEEN 10 AND 12 GROUP BY sold_month",
              partitioned=True),
    ]


SYSTEMS = {
    "trino_a": "Trino (a) HMS + S3 direct",
    "trino_b": "Trino (b) Strata cached, cold",
    "trino_c": "Trino (c) Strata cached, warm",
    "trino_d": "Trino (d) Strata direct",
    "spark_a": "Spark (a) HMS + S3 direct",
    "spark_d": "Spark (d) Strata direct",
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--sf", type=float, default=3.0, help="TPC-DS scale factor (default 3)")
    ap.add_argument("--files", type=int, default=10_000, help="text files of store_sales")
    ap.add_argument("--part-files", type=int, default=None,
                    help="text files of the partitioned copy over all its partitions "
                         "(default: --files)")
    ap.add_argument("--repeats", type=int, default=3, help="timed Trino runs per query and system")
    ap.add_argument("--spark-repeats", type=int, default=None,
                    help="timed Spark runs per query and system (default: --repeats)")
    ap.add_argument("--spark-master", default="local[4]",
                    help="Spark master (default local[4]: 4 task threads, as Trino's 4 drivers "
                         "on 2 cores; the text scans wait on the network)")
    ap.add_argument("--no-spark", action="store_true", help="skip Spark")
    ap.add_argument("--latency-ms", type=float, default=20.0, help="added per request (20)")
    ap.add_argument("--definition", default=DEFAULT_DEFINITION,
                    help=f"Strata's transformation definition (default '{DEFAULT_DEFINITION}')")
    ap.add_argument("--upload-threads", type=int, default=32)
    ap.add_argument("--work-dir", type=Path,
                    default=Path(tempfile.gettempdir()) / "strata-bench-headline",
                    help="generated files (kept and reused), HMS, Trino, Strata data")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "headline.json")
    ap.add_argument("--png", type=Path, default=REPO / "bench" / "results" / "headline.png")
    ap.add_argument("--replot", action="store_true",
                    help="only redraw --png from the JSON of an earlier run (--out)")
    args = ap.parse_args(argv)
    if args.sf <= 0 or args.files < 1 or args.repeats < 1:
        ap.error("--sf must be > 0, --files and --repeats >= 1")
    args.part_files = args.part_files or args.files
    args.spark_repeats = args.spark_repeats or args.repeats
    return args


# -- data ----------------------------------------------------------------------------------------

def _split_lines(data: bytes, n: int) -> list[bytes]:
    """``data`` cut into ``n`` pieces of about equal size at line ends (none empty if avoidable)."""
    n = max(1, min(n, data.count(b"\n") or 1))
    out, start, size = [], 0, len(data)
    for i in range(n):
        if i == n - 1:
            end = size
        else:
            cut = data.find(b"\n", max(start, (i + 1) * size // n - 1))
            end = size if cut < 0 else cut + 1
        out.append(data[start:end])
        start = end
    return [piece for piece in out if piece]


def generate(root: Path, sf: float, n_files: int, n_part_files: int) -> dict[str, Any]:
    """The text files of both tables under ``root`` (reused while the parameters match) and the
    reference answers DuckDB computes from them."""
    marker = root / "_generated.json"
    wanted = {"sf": sf, "files": n_files, "part_files": n_part_files, "version": 2}
    if marker.exists():
        meta: dict[str, Any] = json.loads(marker.read_text())
        if {k: meta.get(k) for k in wanted} == wanted:
            log(f"reusing the generated files in {root}")
            return meta
    import duckdb

    shutil.rmtree(root, ignore_errors=True)
    flat, part = root / TABLE, root / PART_TABLE
    flat.mkdir(parents=True)
    part.mkdir(parents=True)
    t0 = time.perf_counter()
    con = duckdb.connect()
    con.execute(f"LOAD '{tpcds_extension()}'")
    con.execute(f"CALL dsdgen(sf={sf})")
    t_dsdgen = time.perf_counter() - t0
    whole = root / "store_sales.dat"
    con.execute(f"COPY (SELECT *, NULL::VARCHAR AS _end FROM store_sales) TO '{whole}' "
                "(FORMAT csv, DELIMITER '|', HEADER false, QUOTE '')")
    data = whole.read_bytes()
    whole.unlink()
    for i, piece in enumerate(_split_lines(data, n_files)):
        (flat / f"part-{i:05d}.dat").write_bytes(piece)
    del data
    # The partitioned copy: the same rows, the partition values derived from the sale date.
    staging = root / "_staging"
    con.execute(
        "COPY (SELECT s.*, NULL::VARCHAR AS _end, coalesce(d.d_year, 0) AS sold_year, "
        "coalesce(d.d_moy, 0) AS sold_month FROM store_sales s LEFT JOIN date_dim d "
        f"ON s.ss_sold_date_sk = d.d_date_sk) TO '{staging}' (FORMAT csv, DELIMITER '|', "
        "HEADER false, QUOTE '', PARTITION_BY (sold_year, sold_month))")
    sources = sorted(staging.glob("sold_year=*/sold_month=*/*.csv"))
    sizes = {p: p.stat().st_size for p in sources}
    total = sum(sizes.values()) or 1
    partitions: list[list[int]] = []
    for src in sources:
        year = int(src.parent.parent.name.split("=", 1)[1])
        month = int(src.parent.name.split("=", 1)[1])
        dest = part / f"sold_year={year}" / f"sold_month={month}"
        dest.mkdir(parents=True, exist_ok=True)
        pieces = _split_lines(src.read_bytes(), max(1, round(n_part_files * sizes[src] / total)))
        start = len(list(dest.glob("*.dat")))
        for i, piece in enumerate(pieces):
            (dest / f"part-{start + i:05d}.dat").write_bytes(piece)
    for year, month in sorted({(int(p.parent.parent.name.split("=")[1]),
                                int(p.parent.name.split("=")[1])) for p in sources}):
        partitions.append([year, month])
    shutil.rmtree(staging)
    # A ticket in the middle of the table, for the lookup.
    (rows,) = con.execute("SELECT count(*) FROM store_sales").fetchone() or (0,)
    (ticket,) = con.execute(f"SELECT ss_ticket_number FROM store_sales LIMIT 1 OFFSET "
                            f"{rows // 2}").fetchone() or (0,)
    con.close()
    meta = {**wanted, "rows": rows, "lookup_ticket": int(ticket),
            "bytes": sum(p.stat().st_size for p in flat.glob("*.dat")),
            "files_written": len(list(flat.glob("*.dat"))),
            "part_files_written": len(list(part.glob("*/*/*.dat"))),
            "part_bytes": sum(p.stat().st_size for p in part.glob("*/*/*.dat")),
            "partitions": partitions, "dsdgen_s": round(t_dsdgen, 1),
            "generate_s": round(time.perf_counter() - t0, 1)}
    meta["reference"] = reference_answers(root, meta)
    marker.write_text(json.dumps(meta))
    log(f"generated {rows:,} rows: {meta['files_written']:,} files, {meta['bytes'] / 1e6:.0f} MB "
        f"+ the partitioned copy, {meta['part_files_written']:,} files in {len(partitions)} "
        f"partitions ({meta['generate_s']} s)")
    return meta


def reference_answers(root: Path, meta: dict[str, Any]) -> dict[str, list[list[Any]]]:
    """Each query's answer computed by DuckDB over the local copy of the text files."""
    import duckdb

    types = {"bigint": "BIGINT", "int": "INTEGER", "decimal(7,2)": "DECIMAL(7,2)"}
    spec = ", ".join(f"'{n}': '{types[t]}'" for n, t in COLUMNS) + ", '_end': 'VARCHAR'"
    con = duckdb.connect()
    con.execute("CREATE VIEW flat AS SELECT * EXCLUDE (_end) FROM read_csv("
                f"'{root / TABLE}/*.dat', "
                f"auto_detect=false, columns={{{spec}}}, delim='|', header=false, quote='')")
    con.execute(f"CREATE VIEW part AS SELECT * EXCLUDE (_end) FROM read_csv("
                f"'{root / PART_TABLE}/*/*/*.dat', auto_detect=false, columns={{{spec}}}, "
                "delim='|', header=false, quote='', hive_partitioning=true, "
                "hive_types={'sold_year': 'INTEGER', 'sold_month': 'INTEGER'})")
    out = {}
    for q in queries(meta["lookup_ticket"]):
        out[q.key] = [[_jsonable(v) for v in row] for row in
                      con.execute(q.sql.format(t="part" if q.partitioned else "flat")).fetchall()]
    con.close()
    return out


def _jsonable(v: Any) -> Any:
    return str(v) if isinstance(v, Decimal) else v


# -- comparing answers ---------------------------------------------------------------------------

def canonical(rows: list[Any]) -> list[tuple[Any, ...]]:
    """Rows as sorted tuples of Decimal / str / None, whatever client returned them."""
    def norm(v: Any) -> Any:
        if v is None or isinstance(v, bool):
            return v
        if isinstance(v, (int, float, Decimal)):
            return Decimal(str(v))
        try:
            return Decimal(str(v))
        except InvalidOperation:
            return str(v)

    out = [tuple(norm(v) for v in row) for row in rows]
    return sorted(out, key=lambda r: tuple((x is None, str(type(x)), x if x is not None else 0)
                                           for x in r))


# -- processes -----------------------------------------------------------------------------------

def maven_jar(coords: tuple[str, str, str]) -> Path:
    group, artifact, version = coords
    return (Path.home() / ".m2" / "repository" / group.replace(".", "/") / artifact / version
            / f"{artifact}-{version}.jar")


def s3a_jars() -> list[Path]:
    """hadoop-aws (matching pyspark's Hadoop 3.5.0), the AWS SDK v2 bundle it is built against
    and the analytics accelerator it links: from the local Maven repository, fetched there with
    ``mvn dependency:get`` (Maven Central) when missing (~690 MB, once)."""
    jars = []
    for coords in (HADOOP_AWS, AWS_BUNDLE, ANALYTICS_ACCELERATOR):
        jar = maven_jar(coords)
        if not jar.exists():
            mvn = shutil.which("mvn")
            if mvn is None:
                raise RuntimeError(f"{jar} missing and no mvn to fetch it")
            log(f"fetching {':'.join(coords)} with mvn (once)")
            subprocess.run([mvn, "-q", "dependency:get", f"-Dartifact={':'.join(coords)}",
                            "-Dtransitive=false"], check=True, timeout=1800)
        jars.append(jar)
    return jars


def s3a_properties(endpoint: str) -> dict[str, str]:
    """Hadoop properties that make ``s3://`` and ``s3a://`` S3A on ``endpoint``."""
    return {
        "fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "fs.s3a.endpoint": endpoint,
        "fs.s3a.endpoint.region": REGION,
        "fs.s3a.path.style.access": "true",
        "fs.s3a.connection.ssl.enabled": "false",
        "fs.s3a.access.key": ACCESS,
        "fs.s3a.secret.key": SECRET,
        "fs.s3a.aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
        "fs.s3a.change.detection.mode": "none",
    }


def make_hms(work_dir: Path, endpoint: str, jars: list[Path]) -> Any:
    """A :class:`tests.support.hms.HiveMetastore` that reaches S3 (HMS checks and creates an
    external table's location): hadoop-aws on its classpath, S3A settings in hive-site."""
    from tests.support.hms import HiveMetastore

    class S3HiveMetastore(HiveMetastore):
        def _write_site(self, site_name: str, props: dict[str, str], log4j_name: str,
                        log4j: str) -> None:
            super()._write_site(site_name, {**props, **s3a_properties(endpoint)}, log4j_name,
                                log4j)

        def command(self) -> list[str]:
            cmd = super().command()
            i = cmd.index("-cp") + 1
            cmd[i] = os.pathsep.join([cmd[i], *map(str, jars)])
            return cmd

    return S3HiveMetastore(work_dir)


def trino_server(work_dir: Path, catalog_files: dict[str, str]) -> Any:
    from tests.support.trino import JVM_OPTIONS, TrinoServer

    class BenchTrino(TrinoServer):
        def write_config(self) -> None:
            super().write_config()
            for name, text in catalog_files.items():
                (self.etc_dir / "catalog" / f"{name}.properties").write_text(text)

    jvm = [o if not o.startswith("-Xmx") else "-Xmx3G" for o in JVM_OPTIONS]
    trino = BenchTrino(work_dir, {}, jvm_options=jvm)
    # The bigger heap lets the text scans run at Trino's default memory settings.
    return trino


def catalog_file(template: str, metastore_uri: str, extra: Mapping[str, str | None]) -> str:
    from tests.support.trino import catalog_properties

    overrides: dict[str, str | None] = {
        # Every query reaches its metastore (Trino's per-query cache stays, as in production).
        "hive.metastore-cache-ttl": "0s", "hive.metastore-stats-cache-ttl": "0s",
        "hive.metastore-refresh-interval": None, **extra}
    return catalog_properties(metastore_uri, REPO / "trino-plugin-config" / template, overrides)


# -- S3 helpers ----------------------------------------------------------------------------------

def upload(client: Any, local_root: Path, threads: int) -> tuple[int, int, float]:
    """Both tables' files, each to its bucket, keyed by their path below ``local_root``
    (``store_sales/part-00000.dat``)."""
    files = sorted(p for name in (TABLE, PART_TABLE) for p in (local_root / name).rglob("*.dat"))
    t0 = time.perf_counter()

    def put(p: Path) -> int:
        key = p.relative_to(local_root).as_posix()
        for attempt in range(5):
            try:
                client.put_object(Bucket=BUCKET_OF[key.split("/", 1)[0]], Key=key,
                                  Body=p.read_bytes())
                return p.stat().st_size
            except Exception:  # noqa: BLE001 - moto under load: retry a few times
                if attempt == 4:
                    raise
                time.sleep(0.5 * (attempt + 1))
        return 0

    done, size = 0, 0
    with ThreadPoolExecutor(threads) as pool:
        for n in pool.map(put, files):
            done += 1
            size += n
            if done % 2000 == 0:
                log(f"  uploaded {done:,}/{len(files):,}")
    return done, size, time.perf_counter() - t0


class MotoLog:
    """Counts moto's requests by kind from its access log (werkzeug's one line per request)."""

    _LINE = re.compile(r'"(GET|PUT|HEAD|POST|DELETE) (\S+) HTTP/1\.[01]" (\d+)')

    def __init__(self, path: Path) -> None:
        self.path = path

    def mark(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def since(self, mark: int) -> dict[str, int]:
        with open(self.path, "rb") as f:
            f.seek(mark)
            text = f.read().decode("utf-8", "replace")
        kinds: Counter[str] = Counter()
        for m in self._LINE.finditer(text):
            method, target, _status = m.groups()
            if method == "GET" and ("list-type=" in target or "?prefix=" in target
                                    or "&prefix=" in target or "delimiter=" in target):
                kinds["list"] += 1
            elif method == "GET":
                kinds["get"] += 1
            else:
                kinds[method.lower()] += 1
        return dict(kinds)


def probe_latency(client: Any, bucket: str, key: str, repeats: int = 7) -> dict[str, float]:
    """Median ms of one small GET and of one 1,000-key LIST page through a proxy (boto3)."""
    gets, lists = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        client.get_object(Bucket=bucket, Key=key)["Body"].read()
        gets.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        client.list_objects_v2(Bucket=bucket, Prefix=key.split("/", 1)[0] + "/", MaxKeys=1000)
        lists.append(time.perf_counter() - t0)
    return {"get_ms": round(statistics.median(gets) * 1000, 1),
            "list_page_ms": round(statistics.median(lists) * 1000, 1)}


# -- the gateway's requests ----------------------------------------------------------------------

class CountingApp:
    """ASGI wrapper around the S3 gateway: requests by kind, summed seconds, bytes sent."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.seconds: dict[str, float] = {}
        self.bytes_sent = 0

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"counts": dict(self.counts), "seconds": dict(self.seconds),
                    "bytes_sent": self.bytes_sent}

    @staticmethod
    def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
        keys = set(after["counts"]) | set(before["counts"])
        return {"requests": {k: after["counts"].get(k, 0) - before["counts"].get(k, 0)
                             for k in sorted(keys)
                             if after["counts"].get(k, 0) - before["counts"].get(k, 0)},
                "seconds": {k: round(after["seconds"].get(k, 0) - before["seconds"].get(k, 0), 3)
                            for k in sorted(keys)
                            if after["counts"].get(k, 0) - before["counts"].get(k, 0)},
                "bytes_sent": after["bytes_sent"] - before["bytes_sent"]}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        qs = scope.get("query_string", b"").decode("latin-1")
        method = scope.get("method", "GET")
        path = scope.get("path", "/")
        if method == "GET" and ("list-type" in qs or path.count("/") <= 1 and qs):
            kind = "list"
        elif method == "GET" and path.count("/") <= 1:
            kind = "list"
        else:
            kind = method.lower()
        sent = 0
        started = time.perf_counter()

        async def counting_send(message: Any) -> None:
            nonlocal sent
            if message.get("type") == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            with self.lock:
                self.counts[kind] += 1
                self.seconds[kind] = self.seconds.get(kind, 0.0) + time.perf_counter() - started
                self.bytes_sent += sent


# -- the block store (whatever the namespace reads through at run time) --------------------------

def block_store(service: Any) -> Any:
    for owner in (service.fs, service):
        for attr in ("cache", "block_store", "blocks", "store_cache"):
            obj = getattr(owner, attr, None)
            if obj is not None and hasattr(obj, "stats") and hasattr(obj, "free"):
                return obj
    return None


def cache_stats(service: Any) -> dict[str, Any] | None:
    bs = block_store(service)
    if bs is None:
        return None
    s = bs.stats()
    return {"hits": s.hits, "misses": s.misses, "pass_through": s.pass_through,
            "bytes_from_ufs": s.bytes_from_ufs,
            "bytes_served": sum(t.bytes_served for t in s.tiers),
            "used_bytes": sum(t.used_bytes for t in s.tiers)}


def empty_cache(service: Any) -> int | None:
    """Drops every cached block (None: no block store under the namespace)."""
    bs = block_store(service)
    if bs is None:
        return None
    prefixes = set()
    for m in service.fs.mounts():
        prefixes.update({m.ufs_uri, m.path, m.ufs_uri.rstrip("/")})
    with contextlib.suppress(Exception):
        prefixes.update(b.identity.uri.split("/", 3)[0] + "//" + b.identity.uri.split("/", 3)[2]
                        for b in bs.blocks() if "://" in b.identity.uri)
    freed = 0
    for p in sorted(prefixes):
        with contextlib.suppress(Exception):
            freed += bs.free(p)
    with contextlib.suppress(Exception):
        left = bs.blocks()
        if left:
            log(f"  warning: {len(left)} cached blocks survived emptying the cache")
    return freed


def _diff_stats(before: dict[str, Any] | None, after: dict[str, Any] | None
                ) -> dict[str, Any] | None:
    if before is None or after is None:
        return None
    return {k: after[k] - before[k] for k in ("hits", "misses", "pass_through", "bytes_from_ufs",
                                               "bytes_served")}


# -- Trino's query stats -------------------------------------------------------------------------

_DUR = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "PB": 1e15}


def seconds_of(v: Any) -> float:
    if isinstance(v, (int, float)):
        return float(v)
    m = re.fullmatch(r"\s*([0-9.]+)\s*(ns|us|ms|s|m|h|d)\s*", str(v or ""))
    return float(m.group(1)) * _DUR[m.group(2)] if m else 0.0


def bytes_of(v: Any) -> float:
    if isinstance(v, (int, float)):
        return float(v)
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kKMGTP]?B)\s*", str(v or ""))
    return float(m.group(1)) * _SIZE[m.group(2)] if m else 0.0


def trino_query_info(trino: Any, query_id: str) -> dict[str, Any]:
    for _ in range(20):
        r = trino._client.get(f"/v1/query/{query_id}", headers={"X-Trino-User": trino.user})
        if r.status_code == 200:
            info: dict[str, Any] = r.json()
            if info.get("finalQueryInfo") or info.get("state") in ("FINISHED", "FAILED"):
                return info
        time.sleep(0.25)
    return info if r.status_code == 200 else {}


def _stages(stage: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
    if not stage:
        return
    yield stage
    for sub in stage.get("subStages") or []:
        yield from _stages(sub)


def _all_stages(info: dict[str, Any]) -> list[dict[str, Any]]:
    """Every stage of a query info: a flat list (``stages.stages``) or the older tree."""
    st = info.get("stages")
    if isinstance(st, dict) and isinstance(st.get("stages"), list):
        return list(st["stages"])
    return list(_stages(info.get("outputStage") or (st or {}).get("outputStage")
                        if isinstance(st, dict) else info.get("outputStage")))


def summarize_trino(info: dict[str, Any]) -> dict[str, Any]:
    """The parts of Trino's query info that say where the time went."""
    qs = info.get("queryStats") or {}
    out: dict[str, Any] = {k: round(seconds_of(qs.get(k)), 4) for k in (
        "elapsedTime", "queuedTime", "resourceWaitingTime", "dispatchingTime", "analysisTime",
        "planningTime", "planningCpuTime", "startingTime", "executionTime", "finishingTime",
        "totalScheduledTime", "totalCpuTime", "totalBlockedTime", "physicalInputReadTime")}
    out.update({k: bytes_of(qs.get(k)) for k in (
        "physicalInputDataSize", "rawInputDataSize", "processedInputDataSize")})
    out["physicalInputPositions"] = qs.get("physicalInputPositions")
    out["completedDrivers"] = qs.get("completedDrivers")
    metadata = qs.get("catalogMetadataMetrics") or {}
    if metadata:
        out["catalogMetadataMetrics"] = metadata
    stages = []
    for st in _all_stages(info):
        ss = st.get("stageStats") or {}
        stages.append({
            "stage": st.get("stageId"), "state": st.get("state"),
            "drivers": ss.get("totalDrivers"),
            "scheduled_s": round(seconds_of(ss.get("totalScheduledTime")), 4),
            "cpu_s": round(seconds_of(ss.get("totalCpuTime")), 4),
            "blocked_s": round(seconds_of(ss.get("totalBlockedTime")), 4),
            "input_read_s": round(seconds_of(ss.get("physicalInputReadTime")), 4),
            "input_bytes": bytes_of(ss.get("physicalInputDataSize")),
        })
    out["stages"] = stages
    scans = []
    for op in qs.get("operatorSummaries") or []:
        if "Scan" not in str(op.get("operatorType", "")):
            continue
        scans.append({
            "operator": op.get("operatorType"), "stage": op.get("stageId"),
            "drivers": op.get("totalDrivers"),
            "get_output_wall_s": round(seconds_of(op.get("getOutputWall")), 4),
            "get_output_cpu_s": round(seconds_of(op.get("getOutputCpu")), 4),
            "input_read_s": round(seconds_of(op.get("physicalInputReadTime")), 4),
            "blocked_wall_s": round(seconds_of(op.get("blockedWall")), 4),
            "connector_metrics": _metrics(op.get("connectorMetrics")),
            "metrics": _metrics(op.get("metrics")),
        })
    out["scans"] = scans
    return out


def _metrics(m: Any) -> dict[str, Any]:
    """Trino's Metrics JSON ({"metrics": {name: {"@class": ..., ...}}}) flattened."""
    if not isinstance(m, dict):
        return {}
    items = m.get("metrics", m)
    flat: dict[str, Any] = {}
    for name, value in (items or {}).items():
        if isinstance(value, dict):
            v = {k: x for k, x in value.items() if k != "@class"}
            flat[name] = v.get("total", v.get("sum", v))
        else:
            flat[name] = value
    return flat


# -- running -------------------------------------------------------------------------------------

@dataclass
class Run:
    seconds: float
    rows: list[Any]
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Ctx:
    args: argparse.Namespace
    meta: dict[str, Any]
    proxy_engines: Any
    proxy_strata: Any
    moto_log: MotoLog
    gateway: CountingApp | None = None
    remote: Any = None  # Strata with the catalog root on the remote store (serve.mode=cached)
    hms_tap: Any = None
    cached_tap: Any = None


def counters(ctx: Ctx, service: Any = None) -> dict[str, Any]:
    return {"engines_proxy": ctx.proxy_engines.requests, "strata_proxy": ctx.proxy_strata.requests,
            "moto_mark": ctx.moto_log.mark(),
            "gateway": ctx.gateway.snapshot() if ctx.gateway else None,
            "cache": cache_stats(service) if service is not None else None,
            "t": time.perf_counter()}


def counter_diff(ctx: Ctx, before: dict[str, Any], service: Any = None) -> dict[str, Any]:
    after = counters(ctx, service)
    out: dict[str, Any] = {
        "remote_requests_engines": after["engines_proxy"] - before["engines_proxy"],
        "remote_requests_strata": after["strata_proxy"] - before["strata_proxy"],
        "moto_requests": ctx.moto_log.since(before["moto_mark"]),
    }
    if before["gateway"] is not None and after["gateway"] is not None:
        out["gateway"] = CountingApp.diff(before["gateway"], after["gateway"])
    cache = _diff_stats(before["cache"], after["cache"])
    if cache is not None:
        out["cache"] = cache
    return out


def tap_spans(tap: Any, t0: float) -> dict[str, Any]:
    if tap is None:
        return {}
    spans = tap.spans_since(t0)
    by: Counter[str] = Counter()
    secs: Counter[str] = Counter()
    for s in spans:
        by[s.name] += 1
        secs[s.name] += s.end - s.start
    return {"metastore_calls": dict(by), "metastore_s": round(sum(secs.values()), 4),
            "metastore_s_by_method": {k: round(v, 4) for k, v in secs.items()}}


def trino_run(ctx: Ctx, trino: Any, catalog: str, q: Query, *, service: Any = None,
              tap: Any = None) -> Run:
    table = f"{catalog}.{DB}.{PART_TABLE if q.partitioned else TABLE}"
    before = counters(ctx, service)
    t0 = time.perf_counter()
    res = trino.execute(q.sql.format(t=table), timeout=3600)
    seconds = time.perf_counter() - t0
    detail = counter_diff(ctx, before, service)
    detail.update(tap_spans(tap, t0))
    if res.query_id:
        detail["trino"] = summarize_trino(trino_query_info(trino, res.query_id))
        detail["query_id"] = res.query_id
    return Run(seconds, res.rows, detail)


def spark_run(ctx: Ctx, spark: Any, q: Query) -> Run:
    table = f"{DB}.{PART_TABLE if q.partitioned else TABLE}"
    before = counters(ctx)
    t0 = time.perf_counter()
    rows = spark.sql(q.sql.format(t=table), timeout=7200)
    seconds = time.perf_counter() - t0
    return Run(seconds, rows, counter_diff(ctx, before))


def median_run(runs: list[Run]) -> Run:
    ordered = sorted(runs, key=lambda r: r.seconds)
    return ordered[(len(ordered) - 1) // 2]


# -- the HMS tables ------------------------------------------------------------------------------

def create_hms_tables(hms: Any, meta: dict[str, Any]) -> float:
    from hmsclient.genthrift.hive_metastore import ttypes as T

    def sd(location: str) -> Any:
        return T.StorageDescriptor(
            cols=[T.FieldSchema(name=n, type=t, comment=None) for n, t in COLUMNS],
            location=location, inputFormat=TEXT_INPUT, outputFormat=TEXT_OUTPUT, compressed=False,
            numBuckets=-1, serdeInfo=T.SerDeInfo(name=None, serializationLib=LAZY_SIMPLE_SERDE,
                                                 parameters={"field.delim": "|",
                                                             "serialization.format": "|"}),
            bucketCols=[], sortCols=[], parameters={},
            skewedInfo=T.SkewedInfo(skewedColNames=[], skewedColValues=[],
                                    skewedColValueLocationMaps={}),
            storedAsSubDirectories=False)

    t0 = time.perf_counter()
    now = int(time.time())
    client = hms.client(timeout=600)
    try:
        client.create_database(T.Database(name=DB, description="TPC-DS store_sales",
                                          locationUri=f"s3://{LAKE_BUCKET}/", parameters={}))
        for name, keys in ((TABLE, []), (PART_TABLE, PART_KEYS)):
            client.create_table(T.Table(
                tableName=name, dbName=DB, owner="bench", createTime=now, lastAccessTime=0,
                retention=0, sd=sd(f"s3://{BUCKET_OF[name]}/{name}"),
                partitionKeys=[T.FieldSchema(name=n, type=t, comment=None) for n, t in keys],
                parameters={"EXTERNAL": "TRUE"}, tableType="EXTERNAL_TABLE"))
        parts = [T.Partition(values=[str(y), str(m)], dbName=DB, tableName=PART_TABLE,
                             createTime=now, lastAccessTime=0, parameters={},
                             sd=sd(f"s3://{PART_BUCKET}/{PART_TABLE}/sold_year={y}/sold_month={m}"))
                 for y, m in meta["partitions"]]
        client.add_partitions(parts)
    finally:
        client.close()
    return time.perf_counter() - t0


# -- Strata --------------------------------------------------------------------------------------

def strata_service(data_dir: Path, proxy_endpoint: str, *, remote_root: bool) -> Any:
    from catalog.config import Settings
    from catalog.service import CatalogService

    s3 = {"s3.endpoint": proxy_endpoint, "s3.region": REGION, "s3.aws-access-key": ACCESS,
          "s3.aws-secret-key": SECRET, "s3.path-style-access": "true"}
    kwargs: dict[str, Any] = {"data_dir": data_dir, "sync_interval_s": 0}
    if remote_root:
        kwargs.update(root_ufs=f"s3://{CATALOG_BUCKET}/{data_dir.name}", root_ufs_options=s3)
    service = CatalogService(Settings(**kwargs))
    service.fs.mount("/lake", f"s3://{LAKE_BUCKET}", {**s3, "readonly": "true"})
    service.fs.mount("/lake-part", f"s3://{PART_BUCKET}", {**s3, "readonly": "true"})
    return service


def attach_and_transform(service: Any, hms_uri: str, mode: str, definition: str
                         ) -> dict[str, Any]:
    t0 = time.perf_counter()
    service.attach_database("hive", hms_uri, DB, options={"serve.mode": mode})
    attach_s = time.perf_counter() - t0
    service.transforms.start()
    jobs = {}
    for table in (TABLE, PART_TABLE):
        t1 = time.perf_counter()
        job = service.transforms.submit(DB, table, definition)
        done = service.transforms.wait(job.id, 7200)
        if done.state != "succeeded":
            raise SystemExit(f"transformation of {table} ({mode}) {done.state}: {done.error}")
        jobs[table] = {"wall_s": round(time.perf_counter() - t1, 2),
                       "duration_s": done.duration_s, "bytes_read": done.bytes_read,
                       "rows_read": done.rows_read, "bytes_written": done.bytes_written,
                       "rows_written": done.rows_written,
                       "partitions": len(getattr(done, "partitions", None) or [])}
        log(f"  {mode}: {table} transformed in {done.duration_s:.1f} s "
            f"({done.rows_written:,} rows, {done.bytes_read / 1e6:.0f} MB text -> "
            f"{done.bytes_written / 1e6:.0f} MB Parquet)")
    return {"attach_s": round(attach_s, 2), "jobs": jobs}


# -- the run -------------------------------------------------------------------------------------

class Stack(contextlib.ExitStack):
    """Stops whatever was started, in reverse order, also on SIGTERM."""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.replot:
        return replot(args)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    def on_term(*_: object) -> None:
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, on_term)
    started = time.perf_counter()
    phases: dict[str, float] = {}
    meta = generate(args.work_dir / "data", args.sf, args.files, args.part_files)
    phases["generate_s"] = meta["generate_s"]
    qs = queries(meta["lookup_ticket"])
    from tests.support.fault_proxy import FaultProxy
    from tests.support.s3 import MotoS3Server, s3_client

    run_dir = args.work_dir / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    results: dict[str, dict[str, list[Run]]] = {q.key: {} for q in qs}
    env = environment()
    with Stack() as stack:
        moto = MotoS3Server(run_dir / "moto")
        moto.access_key, moto.secret_key = ACCESS, SECRET
        stack.enter_context(moto)
        pe = stack.enter_context(FaultProxy("127.0.0.1", moto.port))
        ps = stack.enter_context(FaultProxy("127.0.0.1", moto.port))
        pe.latency_s = ps.latency_s = args.latency_ms / 1000
        ctx = Ctx(args, meta, pe, ps, MotoLog(moto.log_file))
        s3 = s3_client(pe.endpoint, ACCESS, SECRET, REGION, max_pool_connections=256)
        for b in (LAKE_BUCKET, PART_BUCKET, CATALOG_BUCKET):
            s3.create_bucket(Bucket=b)
        jars = s3a_jars()

        # The HMS and Trino start while the files go up (moto is one Python process).
        hms = make_hms(run_dir / "hms", pe.endpoint, jars)
        hms_thread = threading.Thread(target=hms.start, kwargs={"timeout": 600}, daemon=True)
        hms_thread.start()
        stack.callback(hms.stop)
        log(f"uploading through the proxy (+{args.latency_ms:g} ms per request), "
            f"{args.upload_threads} threads")
        n_up, b_up, s_up = upload(s3, args.work_dir / "data", args.upload_threads)
        phases["upload_s"] = round(s_up, 1)
        log(f"uploaded {n_up:,} files, {b_up / 1e6:.0f} MB in {s_up:.0f} s")
        hms_thread.join()
        if hms.pid is None:
            raise SystemExit("the HMS did not start; see " + str(hms.log_file))
        phases["hms_tables_s"] = round(create_hms_tables(hms, meta), 1)
        log(f"HMS {hms.uri}: {DB}.{TABLE} and {DB}.{PART_TABLE} "
            f"({len(meta['partitions'])} partitions) registered")
        probe = probe_latency(s3, LAKE_BUCKET, f"{TABLE}/part-00000.dat")
        log(f"remote store through the proxy: GET {probe['get_ms']} ms, "
            f"LIST page {probe['list_page_ms']} ms (median, boto3)")

        # -- Strata: two deployments, both transform both tables ----------------------------
        from api.s3.app import S3Gateway
        from api.s3.auth import Credentials
        from api.thrift.server import ThriftServer
        from catalog.serving import ClientView
        from tests.support.s3_gateway import GatewayServer

        remote = strata_service(run_dir / "strata-remote", ps.endpoint, remote_root=True)
        stack.callback(remote.close)
        local = strata_service(run_dir / "strata-local", ps.endpoint, remote_root=False)
        stack.callback(local.close)
        ctx.remote = remote
        log("Strata (remote root, serve.mode=cached): attach + transform")
        transform_remote = attach_and_transform(remote, hms.uri, "cached", args.definition)
        log("Strata (co-located, serve.mode=direct): attach + transform")
        transform_local = attach_and_transform(local, hms.uri, "direct", args.definition)
        remote_thrift = ThriftServer(remote, "127.0.0.1", 0, view=ClientView.TRINO).start()
        stack.callback(remote_thrift.stop)
        local_thrift = ThriftServer(local, "127.0.0.1", 0, view=ClientView.TRINO).start()
        stack.callback(local_thrift.stop)
        local_verbatim = ThriftServer(local, "127.0.0.1", 0, view=ClientView.VERBATIM).start()
        stack.callback(local_verbatim.stop)
        gateway = CountingApp(S3Gateway(remote.fs, credentials=Credentials(ACCESS, SECRET, REGION),
                                        region=REGION, max_object_bytes=1 << 36,
                                        spool_dir=run_dir / "gateway-spool"))
        ctx.gateway = gateway
        gw = stack.enter_context(GatewayServer(gateway))
        from bench_trino import TimedTap

        hms_tap = TimedTap("127.0.0.1", hms.port).start()
        stack.callback(hms_tap.stop)
        cached_tap = TimedTap("127.0.0.1", remote_thrift.port).start()
        stack.callback(cached_tap.stop)

        # -- Trino ----------------------------------------------------------------------------
        s3_engines = {"s3.endpoint": pe.endpoint, "s3.aws-access-key": ACCESS,
                      "s3.aws-secret-key": SECRET}
        s3_gateway = {"s3.endpoint": gw.endpoint, "s3.aws-access-key": ACCESS,
                      "s3.aws-secret-key": SECRET}
        catalogs = {
            "hms": catalog_file("hive.properties", f"thrift://127.0.0.1:{hms_tap.port}",
                                s3_engines),
            "cached": catalog_file("hive-cached.properties",
                                   f"thrift://127.0.0.1:{remote_thrift.port}", s3_gateway),
            "cached_tap": catalog_file("hive-cached.properties",
                                       f"thrift://127.0.0.1:{cached_tap.port}", s3_gateway),
            "direct": catalog_file("hive.properties", f"thrift://127.0.0.1:{local_thrift.port}",
                                   {}),
        }
        trino = trino_server(run_dir / "trino", catalogs)
        log("starting Trino 476")
        t_trino = time.perf_counter()
        trino.start()
        stack.callback(trino.stop)
        phases["trino_start_s"] = round(time.perf_counter() - t_trino, 1)
        # JIT warm-up on every catalog (the pruned query: small), not timed.
        for cat in ("hms", "cached", "direct"):
            trino.execute(qs[-1].sql.format(t=f"{cat}.{DB}.{PART_TABLE}"), timeout=3600)
        t_q = time.perf_counter()
        for q in qs:
            log(f"Trino: {q.label}")
            r = results[q.key]
            r["trino_a"] = []
            for i in range(args.repeats):
                r["trino_a"].append(trino_run(ctx, trino, "hms", q, tap=hms_tap))
                log(f"  (a) run {i + 1}: {r['trino_a'][-1].seconds:.2f} s")
            r["trino_b"] = []
            for i in range(args.repeats):
                freed = empty_cache(remote)
                run = trino_run(ctx, trino, "cached", q, service=remote)
                run.detail["cache_emptied_bytes"] = freed
                r["trino_b"].append(run)
                log(f"  (b) run {i + 1}: {run.seconds:.2f} s")
            r["trino_c"] = []
            for i in range(args.repeats):
                r["trino_c"].append(trino_run(ctx, trino, "cached", q, service=remote))
                log(f"  (c) run {i + 1}: {r['trino_c'][-1].seconds:.2f} s")
            # One more warm run through the tapped catalog: the metastore calls of (c).
            r["trino_c_profile"] = [trino_run(ctx, trino, "cached_tap", q, service=remote,
                                              tap=cached_tap)]
            r["trino_d"] = []
            for i in range(args.repeats):
                r["trino_d"].append(trino_run(ctx, trino, "direct", q))
                log(f"  (d) run {i + 1}: {r['trino_d'][-1].seconds:.2f} s")
        phases["trino_queries_s"] = round(time.perf_counter() - t_q, 1)
        trino.stop()  # its memory back before Spark starts

        # -- Spark ----------------------------------------------------------------------------
        spark_info: dict[str, Any] = {}
        if not args.no_spark:
            from tests.support.spark import SparkSql

            base = {"spark.master": args.spark_master, "spark.sql.shuffle.partitions": "4",
                    "spark.default.parallelism": "4"}
            t_s = time.perf_counter()
            for key, uri, conf in (
                    ("spark_a", hms.uri, {**base, "spark.jars": ",".join(map(str, jars)),
                                          **{f"spark.hadoop.{k}": v
                                             for k, v in s3a_properties(pe.endpoint).items()}}),
                    ("spark_d", f"thrift://127.0.0.1:{local_verbatim.port}", base)):
                log(f"Spark: {SYSTEMS[key]}")
                spark = SparkSql(uri, run_dir / key, driver_memory="3g", extra_conf=conf,
                                 query_timeout=7200)
                try:
                    spark_info["version"] = spark.spark_version
                    for q in qs:
                        runs = []
                        for i in range(args.spark_repeats):
                            runs.append(spark_run(ctx, spark, q))
                            log(f"  {q.key} run {i + 1}: {runs[-1].seconds:.2f} s")
                        results[q.key][key] = runs
                finally:
                    spark.close()
            phases["spark_queries_s"] = round(time.perf_counter() - t_s, 1)
        remote_requests_total = {"engines_proxy": pe.requests, "strata_proxy": ps.requests}
    phases["total_s"] = round(time.perf_counter() - started, 1)
    return report(args, meta, qs, results, phases, env, probe, transform_remote, transform_local,
                  spark_info, remote_requests_total)


# -- the report ----------------------------------------------------------------------------------

def environment() -> dict[str, Any]:
    env: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(),
                           "cpus": os.cpu_count(), "load_avg_start": os.getloadavg()}
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                env["mem_gib"] = round(int(line.split()[1]) / 2**20, 1)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                env["cpu"] = line.split(":", 1)[1].strip()
                break
    for mod in ("duckdb", "pyarrow", "moto", "pyspark"):
        with contextlib.suppress(Exception):
            env[mod] = __import__(mod).__version__
    env["trino"] = "476"
    env["hms"] = "2.3.10 (pyspark's jars)"
    # BENCH_GIT_HEAD: the commit of a `git archive` export this runs from (it has no .git).
    env["git_head"] = os.environ.get("BENCH_GIT_HEAD")
    if not env["git_head"]:
        with contextlib.suppress(Exception):
            env["git_head"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                             capture_output=True, text=True).stdout.strip()
            env["git_dirty_files"] = len(subprocess.run(
                ["git", "status", "--porcelain"], cwd=REPO, capture_output=True,
                text=True).stdout.splitlines())
    return env


def where_time_goes(run: Run, probe: dict[str, float]) -> dict[str, Any]:
    """Shares of one run's time: metastore, planning, listing, opening files, reading bytes."""
    d = run.detail
    t = d.get("trino") or {}
    wall = run.seconds
    out: dict[str, Any] = {"wall_s": round(wall, 3)}
    if t:
        out.update({
            "queued_s": t.get("queuedTime"), "planning_s": t.get("planningTime"),
            "analysis_s": t.get("analysisTime"), "execution_s": t.get("executionTime"),
            "cpu_s": t.get("totalCpuTime"), "scheduled_s": t.get("totalScheduledTime"),
            "blocked_s": t.get("totalBlockedTime"),
            "input_read_s": t.get("physicalInputReadTime"),
            "input_mb": round((t.get("physicalInputDataSize") or 0) / 1e6, 1),
        })
        scans = t.get("scans") or []
        scan_wall = sum(x["get_output_wall_s"] for x in scans)
        scan_cpu = sum(x["get_output_cpu_s"] for x in scans)
        scan_read = sum(x["input_read_s"] for x in scans)
        # Scan thread time that is neither CPU nor Trino's "physical input read time": waiting
        # for the storage to answer (a request's latency, opening a file, the first bytes).
        out["scan_wall_s"] = round(scan_wall, 3)
        out["scan_wait_s"] = round(max(0.0, scan_wall - scan_cpu - scan_read), 3)
        out["scan_drivers"] = sum(x.get("drivers") or 0 for x in scans)
        sched = t.get("totalScheduledTime") or 0.0
        if sched:
            out["scan_wait_share_of_scheduled"] = round(out["scan_wait_s"] / sched, 3)
            out["input_read_share_of_scheduled"] = round((t.get("physicalInputReadTime") or 0)
                                                         / sched, 3)
            out["cpu_share_of_scheduled"] = round((t.get("totalCpuTime") or 0) / sched, 3)
        if wall:
            out["planning_share_of_wall"] = round((t.get("planningTime") or 0) / wall, 3)
    if "metastore_s" in d:
        out["metastore_s"] = d["metastore_s"]
        out["metastore_calls"] = sum(d["metastore_calls"].values())
        out["metastore_share_of_wall"] = round(d["metastore_s"] / wall, 3) if wall else None
    moto = d.get("moto_requests") or {}
    out["remote_requests"] = moto
    lists, gets = moto.get("list", 0), moto.get("get", 0) + moto.get("head", 0)
    # Listing and opening, as the remote store's request count times the latency one such
    # request has through the same proxy (probe_latency): what they cost one at a time; the
    # engine overlaps them (the shares of wall say how much of it they could fill).
    out["listing_est_s"] = round(lists * probe["list_page_ms"] / 1000, 3)
    out["opening_est_s"] = round(gets * probe["get_ms"] / 1000, 3)
    if "gateway" in d:
        out["gateway"] = d["gateway"]
    if "cache" in d:
        out["cache"] = d["cache"]
    return out


def report(args: argparse.Namespace, meta: dict[str, Any], qs: list[Query],
           results: dict[str, dict[str, list[Run]]], phases: dict[str, float],
           env: dict[str, Any], probe: dict[str, float], transform_remote: dict[str, Any],
           transform_local: dict[str, Any], spark_info: dict[str, Any],
           remote_totals: dict[str, int]) -> int:
    reference = {k: canonical(v) for k, v in meta["reference"].items()}
    mismatches = []
    table_rows = []
    out_queries: dict[str, Any] = {}
    for q in qs:
        r = results[q.key]
        medians = {s: statistics.median(x.seconds for x in r[s]) for s in SYSTEMS if s in r}
        for s in [*SYSTEMS, "trino_c_profile"]:
            for i, run in enumerate(r.get(s, [])):
                if canonical(run.rows) != reference[q.key]:
                    mismatches.append(f"{q.key} {s} run {i + 1}: {canonical(run.rows)[:3]} != "
                                      f"{reference[q.key][:3]}")
        base_t, base_s = medians.get("trino_a"), medians.get("spark_a")
        speedups = {}
        for s, m in medians.items():
            base = base_s if s.startswith("spark") else base_t
            speedups[s] = round(base / m, 2) if base and m else None
        table_rows.append((q, medians, speedups))
        out_queries[q.key] = {
            "label": q.label, "sql": q.sql, "target": TARGET if q.target else None,
            "median_s": {k: round(v, 3) for k, v in medians.items()},
            "speedup_vs_a": speedups,
            "runs_s": {s: [round(x.seconds, 3) for x in r[s]] for s in r},
            "answer_rows": len(reference[q.key]),
            "answer_sample": [[str(v) for v in row] for row in reference[q.key][:3]],
            "where_time_goes": {
                "trino_a": where_time_goes(median_run(r["trino_a"]), probe),
                "trino_c": where_time_goes(median_run(r["trino_c"]), probe),
                "trino_c_metastore": {k: v for k, v in r["trino_c_profile"][0].detail.items()
                                      if k.startswith("metastore")},
                "trino_b": where_time_goes(median_run(r["trino_b"]), probe),
                "trino_d": where_time_goes(median_run(r["trino_d"]), probe),
            },
            "runs_detail": {s: [x.detail for x in r[s]] for s in r},
        }
    # -- print
    cols = [s for s in SYSTEMS if any(s in r for r in results.values())]
    print()
    print(f"store_sales sf={args.sf:g}: {meta['rows']:,} rows, {meta['files_written']:,} text "
          f"files ({meta['bytes'] / 1e6:.0f} MB); partitioned copy {meta['part_files_written']:,} "
          f"files in {len(meta['partitions'])} partitions; +{args.latency_ms:g} ms per request; "
          f"median of {args.repeats} (Spark {args.spark_repeats}) runs, seconds (speedup vs (a))")
    header = ["query"] + [SYSTEMS[s] for s in cols]
    lines = []
    for q, medians, speedups in table_rows:
        cells = [q.label]
        for s in cols:
            if s not in medians:
                cells.append("-")
                continue
            sp = speedups.get(s)
            cells.append(f"{medians[s]:.2f}" + ("" if s.endswith("_a") else f" ({sp:.1f}x)"))
        lines.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for c in lines:
        print("  ".join(x.ljust(w) for x, w in zip(c, widths, strict=True)))
    count_sum = out_queries["count_sum"]["speedup_vs_a"]
    verdict = {s: (count_sum.get(s) or 0) >= TARGET for s in ("trino_c", "trino_d")}
    print(f"\ntarget >= {TARGET:g}x on count/sum: (c) {count_sum.get('trino_c')}x "
          f"{'met' if verdict['trino_c'] else 'MISSED'}, (d) {count_sum.get('trino_d')}x "
          f"{'met' if verdict['trino_d'] else 'MISSED'}")
    for name, t in (("remote/cached", transform_remote), ("co-located/direct", transform_local)):
        print(f"transformation ({name}): " + ", ".join(
            f"{tb} {j['duration_s']:.1f} s" for tb, j in t["jobs"].items())
            + f"; attach {t['attach_s']:.1f} s")
    print("answers: " + ("all equal to DuckDB's over the local files" if not mismatches
                         else f"{len(mismatches)} MISMATCHES"))
    wt = out_queries["count_sum"]["where_time_goes"]
    for s in ("trino_a", "trino_c"):
        w = wt[s]
        metastore = w.get("metastore_s", wt["trino_c_metastore"].get("metastore_s"))
        print(f"where the time goes, count/sum {s}: wall {w['wall_s']:.2f} s, planning "
              f"{w.get('planning_s')} s, metastore {metastore} s, "
              f"execution {w.get('execution_s')} s; scheduled {w.get('scheduled_s')} s of which "
              f"input read {w.get('input_read_s')} s, CPU {w.get('cpu_s')} s; remote requests "
              f"{w['remote_requests']}; gateway {w.get('gateway', {}).get('requests')}; "
              f"cache {w.get('cache')}")
    doc = {
        "benchmark": "headline", "issue": 10,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "data": {k: v for k, v in meta.items() if k not in ("reference", "partitions")}
        | {"partitions": len(meta["partitions"])},
        "environment": env | {"load_avg_end": os.getloadavg()},
        "phases_s": phases, "remote_latency_probe_ms": probe,
        "transform": {"remote_cached": transform_remote, "colocated_direct": transform_local},
        "spark": spark_info, "remote_requests_total": remote_totals,
        "systems": SYSTEMS, "target": {"speedup": TARGET, "met": verdict},
        "answers_equal": not mismatches, "mismatches": mismatches,
        "queries": out_queries,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    chart(args.png, qs, out_queries, cols, args)
    print(f"\nJSON: {args.out}\nchart: {args.png}\ntotal {phases['total_s'] / 60:.1f} min")
    if mismatches:
        print("\n".join(mismatches), file=sys.stderr)
        print("ANSWERS DIFFER: the run fails", file=sys.stderr)
        return 1
    return 0


def replot(args: argparse.Namespace) -> int:
    doc = json.loads(args.out.read_text())
    cfg = doc["config"]
    ns = argparse.Namespace(sf=cfg["sf"], files=cfg["files"], latency_ms=cfg["latency_ms"])
    qs = queries(0)
    cols = [s for s in SYSTEMS if any(s in q["median_s"] for q in doc["queries"].values())]
    chart(args.png, qs, doc["queries"], cols, ns)
    print(f"chart: {args.png}")
    return 0


def chart(path: Path, qs: list[Query], out_queries: dict[str, Any], cols: list[str],
          args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"trino_a": "#c0392b", "trino_b": "#e67e22", "trino_c": "#27ae60",
              "trino_d": "#2980b9", "spark_a": "#8e44ad", "spark_d": "#16a085"}
    fig, ax = plt.subplots(figsize=(11, 6))
    width = 0.8 / len(cols)
    for j, s in enumerate(cols):
        xs, ys = [], []
        for i, q in enumerate(qs):
            m = out_queries[q.key]["median_s"].get(s)
            if m is not None:
                xs.append(i + (j - (len(cols) - 1) / 2) * width)
                ys.append(m)
        bars = ax.bar(xs, ys, width, label=SYSTEMS[s], color=colors[s],
                      hatch="//" if s.startswith("spark") else None, edgecolor="white")
        for b, y in zip(bars, ys, strict=True):
            ax.annotate(f"{y:.2f}" if y < 10 else f"{y:.0f}", (b.get_x() + b.get_width() / 2, y),
                        ha="center", va="bottom", fontsize=7, rotation=90,
                        xytext=(0, 2), textcoords="offset points")
    ax.set_yscale("log")
    low, high = ax.get_ylim()
    ax.set_ylim(low, high * 2.5)  # room for the labels
    ax.set_xticks(range(len(qs)), [q.label for q in qs], fontsize=9)
    ax.set_ylabel("seconds (median, log scale)")
    ax.set_title(f"TPC-DS store_sales sf={args.sf:g} in {args.files:,} small CSV files, "
                 f"+{args.latency_ms:g} ms per S3 request: before and after Strata", fontsize=10)
    ax.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.08),
              frameon=False)
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
