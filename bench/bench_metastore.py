#!/usr/bin/env python3
"""Strata vs. a real Hive Metastore: throughput, latency, attach time and memory per partition.

One run:

1. starts a real HMS 2.3.10 (``tests.support.hms.HiveMetastore``: pyspark's jars, embedded Derby)
   and fills it over Thrift only (``create_database``, ``create_table``, ``add_partitions``):
   database ``bench_load`` with a few small tables and one table ``events`` with ``--partitions``
   partitions (keys ``dt``, ``region``), ten columns, Parquet serde, realistic parameters;
2. starts Strata as a separate process (``python -m api.cli serve``; ``--launcher inline`` is a
   fallback that runs CatalogService + ThriftServer from ``python -c``) and attaches ``bench_load``;
3. measures ``get_table`` and ``get_partitions_by_names`` (``--names`` names) with 1 and 8 client
   processes (persistent connections) and ``get_table`` with 8 clients opening one connection per
   call (what Trino does), against Strata and against the HMS, ``--repeats`` times, and keeps the
   median of calls/s, p50 and p99;
4. creates database ``bench_attach`` (``--attach-tables`` tables, ``--attach-partitions``
   partitions in total) in the HMS and times ``CatalogService.attach_database`` in-process against
   a bare Thrift loop reading the same metadata; measures the state store bytes per partition and
   the RSS growth of the Strata server per partition after serving every partition once;
5. prints a result table and writes everything as JSON to ``--out``.

Every process it starts (HMS, Strata, clients) is stopped by pid before it exits.
Run from the repository root: ``python bench/bench_metastore.py --quick`` (see bench/README.md).
"""
from __future__ import annotations

import argparse
import array
import cProfile
import io
import json
import math
import multiprocessing as mp
import os
import platform
import pstats
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from hmsclient.genthrift.hive_metastore import ThriftHiveMetastore  # noqa: E402
from hmsclient.genthrift.hive_metastore import ttypes as hms  # noqa: E402
from thrift.protocol import TBinaryProtocol, fastbinary  # noqa: E402
from thrift.Thrift import TApplicationException, TMessageType, TType  # noqa: E402
from thrift.transport import TSocket, TTransport  # noqa: E402

HOST = "127.0.0.1"
LOAD_DB = "bench_load"
ATTACH_DB = "bench_attach"
BIG_TABLE = "events"
OWNER = "bench"
DEFAULT_OUT = REPO / "bench" / "results" / "metastore.json"

PARQUET_SERDE = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
PARQUET_INPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
PARQUET_OUTPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"
TEXT_SERDE = "org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe"
TEXT_INPUT = "org.apache.hadoop.mapred.TextInputFormat"
TEXT_OUTPUT = "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat"

EVENT_COLUMNS = (
    ("event_id", "bigint", "unique id of the event"),
    ("user_id", "bigint", "account that produced the event"),
    ("session_id", "string", "client session"),
    ("event_type", "string", "click, view, purchase, ..."),
    ("event_ts", "timestamp", "event time (UTC)"),
    ("amount", "decimal(18,4)", "purchase amount, null otherwise"),
    ("currency", "string", "ISO 4217 code"),
    ("device", "string", "device family"),
    ("attributes", "map<string,string>", "free-form attributes"),
    ("tags", "array<string>", None),
)
PARTITION_KEYS = (("dt", "string", "event date"), ("region", "string", "serving region"))
REGIONS = ("us-east", "us-west", "eu-west", "eu-central", "ap-south",
           "ap-northeast", "sa-east", "af-south", "me-central", "ca-central")
SMALL_TABLES = {
    "customers": (("customer_id", "bigint", None), ("name", "string", None),
                  ("email", "string", None), ("country", "string", None),
                  ("created_at", "timestamp", None), ("tier", "string", "bronze|silver|gold")),
    "products": (("product_id", "bigint", None), ("sku", "string", None),
                 ("title", "string", None), ("price", "decimal(10,2)", None),
                 ("category", "string", None)),
    "currencies": (("code", "string", "ISO 4217"), ("name", "string", None),
                   ("rate_to_usd", "double", None)),
    "regions": (("region", "string", None), ("display_name", "string", None)),
}

TARGETS = {
    "throughput_ratio_8_clients": 10.0,  # Strata calls/s >= 10x the HMS with 8 clients
    "get_table_p99_ms_1_client": 1.0,    # Strata get_table p99 <= 1 ms with one client
    "attach_over_bare": 1.2,             # attach time <= 1.2x a bare Thrift loop
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- Thrift clients ------------------------------------------------------------------------------


class Conn:
    """A generated HMS client over TBinaryProtocolAccelerated + TBufferedTransport."""

    def __init__(self, port: int, timeout_s: float = 300.0) -> None:
        sock = TSocket.TSocket(HOST, port)
        sock.setTimeout(int(timeout_s * 1000))
        self.transport = TTransport.TBufferedTransport(sock)
        self.client = ThriftHiveMetastore.Client(
            TBinaryProtocol.TBinaryProtocolAccelerated(self.transport))
        self.transport.open()
        sock.handle.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        try:
            self.transport.close()
        except Exception:  # noqa: BLE001
            pass

    def __enter__(self) -> ThriftHiveMetastore.Client:
        return self.client

    def __exit__(self, *exc: object) -> None:
        self.close()


class ThreadConns:
    """One :class:`Conn` per worker thread, all closed together (``with ThreadConns(port) as c``)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._local = threading.local()
        self._all: list[Conn] = []
        self._guard = threading.Lock()

    def client(self) -> ThriftHiveMetastore.Client:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = Conn(self.port)
            with self._guard:
                self._all.append(conn)
        return conn.client

    def __enter__(self) -> ThreadConns:
        return self

    def __exit__(self, *exc: object) -> None:
        for conn in self._all:
            conn.close()


# -- populating the HMS ---------------------------------------------------------------------------


def _fields(cols: Sequence[tuple[str, str, str | None]]) -> list[hms.FieldSchema]:
    return [hms.FieldSchema(name=n, type=t, comment=c) for n, t, c in cols]


def _sd(cols: Sequence[tuple[str, str, str | None]], location: str | None,
        parquet: bool = True) -> hms.StorageDescriptor:
    if parquet:
        serde = hms.SerDeInfo(name=None, serializationLib=PARQUET_SERDE, parameters={
            "serialization.format": "1", "path": location or ""})
        inp, out = PARQUET_INPUT, PARQUET_OUTPUT
    else:
        serde = hms.SerDeInfo(name=None, serializationLib=TEXT_SERDE, parameters={
            "field.delim": "\t", "serialization.format": "\t", "line.delim": "\n",
            "serialization.null.format": "\\N"})
        inp, out = TEXT_INPUT, TEXT_OUTPUT
    return hms.StorageDescriptor(
        cols=_fields(cols), location=location, inputFormat=inp, outputFormat=out,
        compressed=False, numBuckets=-1, serdeInfo=serde, bucketCols=[], sortCols=[],
        parameters={},
        skewedInfo=hms.SkewedInfo(skewedColNames=[], skewedColValues=[],
                                  skewedColValueLocationMaps={}),
        storedAsSubDirectories=False)


def _table_params(rng: random.Random, partitioned: bool) -> dict[str, str]:
    now = str(int(time.time()))
    params = {
        "EXTERNAL": "TRUE",
        "transient_lastDdlTime": now,
        "comment": "benchmark table created over Thrift",
        "parquet.compression": "SNAPPY",
        "spark.sql.create.version": "3.5.1",
        "spark.sql.sources.schema.numParts": "1",
        "owner.team": "data-platform",
        "retention.days": str(rng.choice((30, 90, 365))),
        "last_modified_by": OWNER,
        "last_modified_time": now,
    }
    if not partitioned:
        params.update({"numFiles": str(rng.randint(1, 50)),
                       "totalSize": str(rng.randint(10**5, 10**9)),
                       "numRows": str(rng.randint(10**3, 10**7)),
                       "COLUMN_STATS_ACCURATE": '{"BASIC_STATS":"true"}'})
    return params


def make_table(db: str, name: str, location: str | None,
               cols: Sequence[tuple[str, str, str | None]],
               partition_keys: Sequence[tuple[str, str, str | None]], rng: random.Random,
               parquet: bool = True) -> hms.Table:
    return hms.Table(
        tableName=name, dbName=db, owner=OWNER, createTime=int(time.time()), lastAccessTime=0,
        retention=0, sd=_sd(cols, location, parquet), partitionKeys=_fields(partition_keys),
        parameters=_table_params(rng, bool(partition_keys)), tableType="EXTERNAL_TABLE")


def partition_values(count: int) -> list[tuple[str, str]]:
    """``count`` (dt, region) pairs: consecutive days from 2020-01-01 x the ten regions."""
    import datetime as dt

    start = dt.date(2020, 1, 1)
    out = []
    for i in range(count):
        day = start + dt.timedelta(days=i // len(REGIONS))
        out.append((day.isoformat(), REGIONS[i % len(REGIONS)]))
    return out


def part_name(values: tuple[str, str]) -> str:
    return f"dt={values[0]}/region={values[1]}"


def make_partitions(table: hms.Table, values: Sequence[Sequence[str]], rng: random.Random,
                    cols: Sequence[tuple[str, str, str | None]] = EVENT_COLUMNS
                    ) -> list[hms.Partition]:
    """Partitions of ``table`` (one per value tuple) at ``<table location>/k1=v1/k2=v2``."""
    now = int(time.time())
    keys = [k.name for k in table.partitionKeys]
    out = []
    for v in values:
        location = table.sd.location + "".join(f"/{k}={x}" for k, x in zip(keys, v))
        sd = _sd(cols, location)
        out.append(hms.Partition(
            values=list(v), dbName=table.dbName, tableName=table.tableName, createTime=now,
            lastAccessTime=0, sd=sd, parameters={
                "transient_lastDdlTime": str(now),
                "numFiles": str(rng.randint(1, 20)),
                "totalSize": str(rng.randint(10**5, 10**9)),
                "numRows": str(rng.randint(10**3, 10**7)),
                "rawDataSize": str(rng.randint(10**5, 10**9)),
                "COLUMN_STATS_ACCURATE": '{"BASIC_STATS":"true"}',
            }))
    return out


def _partition_count(c: Any, db: str, table: str) -> int:
    return len(c.get_partition_names(db, table, -1))


def _ensure_database(c: Any, db: str, location: str) -> None:
    if db in c.get_all_databases():
        return
    c.create_database(hms.Database(
        name=db, description=f"Strata benchmark ({db})", locationUri=location,
        parameters={"creator": OWNER}, ownerName=OWNER, ownerType=hms.PrincipalType.USER))


def populate_load_db(port: int, data_dir: Path, partitions: int, batch: int = 500) -> None:
    """``bench_load``: four small tables, a view and ``events`` with ``partitions`` partitions."""
    rng = random.Random(42)
    db_dir = data_dir / f"{LOAD_DB}.db"
    with Conn(port) as c:
        if LOAD_DB in c.get_all_databases() and BIG_TABLE in c.get_all_tables(LOAD_DB):
            have = _partition_count(c, LOAD_DB, BIG_TABLE)
            if have == partitions:
                log(f"{LOAD_DB} already populated ({have} partitions): reused")
                return
            raise SystemExit(f"{LOAD_DB}.{BIG_TABLE} exists with {have} partitions, not "
                             f"{partitions}: use a fresh --work-dir")
        _ensure_database(c, LOAD_DB, "file://" + str(db_dir))
        for name, cols in SMALL_TABLES.items():
            c.create_table(make_table(LOAD_DB, name, f"file://{db_dir}/{name}", cols, (), rng,
                                      parquet=name != "regions"))
        view = make_table(LOAD_DB, "big_purchases", None, EVENT_COLUMNS[:6], (), rng)
        view.tableType = "VIRTUAL_VIEW"
        view.parameters = {"transient_lastDdlTime": str(int(time.time()))}
        view.sd.location = None
        view.viewOriginalText = "SELECT * FROM events WHERE amount > 1000"
        view.viewExpandedText = (f"SELECT `events`.`event_id`, `events`.`user_id` FROM "
                                 f"`{LOAD_DB}`.`events` WHERE `events`.`amount` > 1000")
        c.create_table(view)
        table = make_table(LOAD_DB, BIG_TABLE, f"file://{db_dir}/{BIG_TABLE}", EVENT_COLUMNS,
                           PARTITION_KEYS, rng)
        c.create_table(table)
        values = partition_values(partitions)
        t0 = time.monotonic()
        for start in range(0, len(values), batch):
            c.add_partitions(make_partitions(table, values[start:start + batch], rng))
        log(f"{LOAD_DB}: {len(SMALL_TABLES) + 2} tables, {partitions} partitions in "
            f"{BIG_TABLE} ({time.monotonic() - t0:.1f}s)")


def attach_layout(tables: int, partitions: int) -> list[tuple[str, int]]:
    """(table name, partition count) of ``bench_attach``: partitions spread evenly."""
    base, extra = divmod(partitions, tables)
    return [(f"t{i:05d}", base + (1 if i < extra else 0)) for i in range(tables)]


def populate_attach_db(port: int, data_dir: Path, tables: int, partitions: int,
                       threads: int = 2, batch: int = 1000) -> bool:
    """``bench_attach``: ``tables`` partitioned tables holding ``partitions`` partitions."""
    layout = attach_layout(tables, partitions)
    db_dir = data_dir / f"{ATTACH_DB}.db"
    with Conn(port) as c:
        _ensure_database(c, ATTACH_DB, "file://" + str(db_dir))
        existing = set(c.get_all_tables(ATTACH_DB))
        if existing:
            extra = existing - {n for n, _ in layout}
            if extra:
                raise SystemExit(f"{ATTACH_DB} has unexpected tables ({len(extra)}): use a fresh "
                                 "--work-dir")
    todo = [(n, p) for n, p in layout if n not in existing]
    if existing:
        # A table created by an interrupted run may lack partitions: check the last ones.
        with Conn(port) as c:
            for n, p in layout:
                if n in existing and _partition_count(c, ATTACH_DB, n) != p:
                    raise SystemExit(f"{ATTACH_DB}.{n} is incomplete: use a fresh --work-dir")
    if not todo:
        log(f"{ATTACH_DB} already populated ({tables} tables, {partitions} partitions): reused")
        return False
    log(f"populating {ATTACH_DB}: {len(todo)} tables to create ({partitions} partitions in "
        f"total over {tables} tables), {threads} threads")
    conns = ThreadConns(port)
    guard = threading.Lock()
    done = {"tables": 0, "partitions": 0}
    t0 = time.monotonic()

    def create(item: tuple[str, int]) -> None:
        name, count = item
        client = conns.client()
        rng = random.Random(name)
        table = make_table(ATTACH_DB, name, f"file://{db_dir}/{name}", EVENT_COLUMNS,
                           PARTITION_KEYS, rng)
        client.create_table(table)
        values = partition_values(count)
        for start in range(0, len(values), batch):
            client.add_partitions(make_partitions(table, values[start:start + batch], rng))
        with guard:
            done["tables"] += 1
            done["partitions"] += count
            n = done["tables"]
        if n % max(1, len(todo) // 20) == 0 or n == len(todo):
            el = time.monotonic() - t0
            log(f"  {n}/{len(todo)} tables, {done['partitions']} partitions, {el:.0f}s "
                f"({done['partitions'] / max(el, 1e-9):.0f} partitions/s)")

    with conns, ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in pool.map(create, todo):
            pass
    return True


# -- Strata as a separate process ------------------------------------------------------------------

_INLINE_LAUNCHER = """
import signal, sys, threading
sys.path.insert(0, sys.argv[1])
from catalog.config import Settings
from catalog.service import CatalogService
from api.thrift.server import ThriftServer
service = CatalogService(Settings(data_dir=sys.argv[2], sync_interval_s=0))
server = ThriftServer(service, "127.0.0.1", int(sys.argv[3])).start()
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: stop.set())
signal.signal(signal.SIGINT, lambda *a: stop.set())
print("inline Strata serving thrift on", server.port, flush=True)
stop.wait()
server.stop()
service.close()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process, all threads (this one without ``pid``)."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (from /proc)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class StrataProcess:
    """``python -m api.cli serve`` (or the inline launcher) on loopback ports."""

    def __init__(self, data_dir: Path, log_file: Path, launcher: str,
                 trino_listener: bool = False) -> None:
        self.data_dir = data_dir
        self.log_file = log_file
        self.launcher = launcher
        self.thrift_port = free_port()
        self.rest_port = free_port()
        # Strata's second listener for Trino (ClientView.TRINO); off unless asked for, so
        # that no fixed default port (9084) is bound. CLI launcher only.
        self.trino_thrift_port = free_port() if trino_listener else 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> StrataProcess:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        # Only the HMS listener under test: no second (Trino) listener on its fixed default port.
        env["CATALOG_TRINO_THRIFT_PORT"] = "0"
        if self.launcher == "cli":
            cmd = [sys.executable, "-m", "api.cli", "serve", "--data-dir", str(self.data_dir),
                   "--host", HOST, "--thrift-port", str(self.thrift_port),
                   "--rest-port", str(self.rest_port), "--sync-interval", "0",
                   "--trino-thrift-port", str(self.trino_thrift_port)]
        else:
            cmd = [sys.executable, "-c", _INLINE_LAUNCHER, str(REPO), str(self.data_dir),
                   str(self.thrift_port)]
        with open(self.log_file, "ab") as out:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                tail = self.log_file.read_text(errors="replace")[-3000:]
                self.proc = None
                raise RuntimeError(f"Strata ({self.launcher}) exited at start:\n{tail}")
            if self._ready():
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Strata ({self.launcher}) did not start in {timeout:.0f}s")
            time.sleep(0.1)

    def _ready(self) -> bool:
        try:
            conn = Conn(self.thrift_port, timeout_s=5)
        except Exception:  # noqa: BLE001
            return False
        try:
            conn.client.get_all_databases()
        except Exception:  # noqa: BLE001
            return False
        finally:
            conn.close()
        if self.launcher != "cli":
            return True
        import httpx

        try:
            return httpx.get(f"http://{HOST}:{self.rest_port}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def attach(self, hms_uri: str, db: str) -> dict[str, Any]:
        """Attach ``db``: over REST with the CLI server, else in-process while it is stopped."""
        t0 = time.monotonic()
        if self.launcher == "cli":
            import httpx

            token = (Path(self.data_dir) / "api-token").read_text().strip()
            r = httpx.post(f"http://{HOST}:{self.rest_port}/api/v1/databases",
                           json={"udb_type": "hive", "uri": hms_uri, "source_db": db},
                           headers={"Authorization": f"Bearer {token}"}, timeout=None)
            if r.status_code != 201:
                raise RuntimeError(f"attach of {db} failed: {r.status_code} {r.text[:500]}")
            report: dict[str, Any] = r.json()
        else:
            self.stop()
            report = attach_in_process(self.data_dir, hms_uri, db).to_dict()
            self.start()
        report["wall_s"] = time.monotonic() - t0
        return report

    def stop(self, grace: float = 15.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def attach_in_process(data_dir: Path, hms_uri: str, db: str) -> Any:
    from catalog.config import Settings
    from catalog.service import CatalogService

    service = CatalogService(Settings(data_dir=data_dir, sync_interval_s=0))
    try:
        return service.attach_database("hive", hms_uri, db)
    finally:
        service.close()


# -- load generator (client processes) ------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    op: str  # get_table | get_partitions_by_names
    clients: int
    per_call_connection: bool = False
    lean: bool = False  # decode only the partition values (see _LeanResult)


class _LeanPartition:
    """Only field 1 (``values``) of a Partition; the C decoder skips every other field."""

    thrift_spec: Any = (None, (1, TType.LIST, "values", (TType.STRING, "UTF8", False), None))

    def __init__(self, values: list[str] | None = None) -> None:
        self.values = values


class _LeanResult:
    """``get_partitions_by_names_result`` with lean partitions (exceptions are skipped too)."""

    thrift_spec: Any = ((0, TType.LIST, "success",
                         (TType.STRUCT, [_LeanPartition, _LeanPartition.thrift_spec], False),
                         None),)

    def __init__(self, success: list[_LeanPartition] | None = None) -> None:
        self.success = success


def lean_get_partitions_by_names(client: Any, db: str, table: str,
                                 names: list[str]) -> list[_LeanPartition]:
    """The generated client's request; the reply read in C, keeping only partition values.

    A load generator on a 2-core machine that builds ~60 Python objects per partition
    (full decoding, ~3 ms per 200 partitions) measures itself rather than the server.
    """
    client.send_get_partitions_by_names(db, table, names)
    iprot = client._iprot
    _, mtype, _ = iprot.readMessageBegin()
    if mtype == TMessageType.EXCEPTION:
        x = TApplicationException()
        x.read(iprot)
        iprot.readMessageEnd()
        raise x
    result = _LeanResult()
    fastbinary.decode_binary(result, iprot, [_LeanResult, _LeanResult.thrift_spec])
    iprot.readMessageEnd()
    if result.success is None:
        raise RuntimeError("get_partitions_by_names failed (exception reply)")
    return result.success


def _one_call(client: Any, op: str, names: list[str], lean: bool = False) -> None:
    if op == "get_table":
        t = client.get_table(LOAD_DB, BIG_TABLE)
        if t.sd is None or len(t.sd.cols) != len(EVENT_COLUMNS):
            raise RuntimeError("get_table answered an unexpected table")
    else:
        if lean:
            parts: list[Any] = lean_get_partitions_by_names(client, LOAD_DB, BIG_TABLE, names)
        else:
            parts = client.get_partitions_by_names(LOAD_DB, BIG_TABLE, names)
        if len(parts) != len(names) or parts[0].values is None:
            raise RuntimeError(f"get_partitions_by_names answered {len(parts)} of "
                               f"{len(names)} partitions")


def _worker(port: int, op: str, names: list[str], per_call: bool, lean: bool, warmup_s: float,
            seconds: float, barrier: Any, results: Any, idx: int) -> None:
    """One client process: warm up, wait for the others, call for ``seconds``, report."""
    lat = array.array("d")
    error = None
    calls = 0
    elapsed = 0.0
    conn: Conn | None = None
    try:
        if per_call:
            def call() -> None:
                c = Conn(port, timeout_s=60)
                try:
                    _one_call(c.client, op, names, lean)
                finally:
                    c.close()
        else:
            conn = Conn(port, timeout_s=300)
            client = conn.client

            def call() -> None:
                _one_call(client, op, names, lean)

        end = time.perf_counter() + warmup_s
        n = 0
        while n < 3 or time.perf_counter() < end:
            call()
            n += 1
        barrier.wait(timeout=600)
        pc = time.perf_counter
        start = pc()
        deadline = start + seconds
        now = start
        while now < deadline:
            t0 = pc()
            call()
            now = pc()
            lat.append((now - t0) * 1000.0)
        elapsed = now - start
        calls = len(lat)
    except Exception as e:  # noqa: BLE001 - reported to the parent
        error = f"{type(e).__name__}: {e}"
        try:
            barrier.abort()
        except Exception:  # noqa: BLE001
            pass
    finally:
        if conn is not None:
            conn.close()
    results.put((idx, calls, elapsed, lat.tobytes(), error))


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def run_case(port: int, case: Case, names: list[str], warmup_s: float,
             seconds: float) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(case.clients + 1)
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, daemon=True, args=(
        port, case.op, names, case.per_call_connection, case.lean, warmup_s, seconds, barrier,
        results, i))
        for i in range(case.clients)]
    for p in procs:
        p.start()
    try:
        try:
            barrier.wait(timeout=600)
        except Exception:  # noqa: BLE001 - a worker failed: its error comes below
            pass
        got: list[tuple[int, int, float, bytes, str | None]] = []
        deadline = time.monotonic() + seconds + 600
        while len(got) < case.clients:
            got.append(results.get(timeout=max(1.0, deadline - time.monotonic())))
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join(timeout=10)
    errors = [e for *_, e in got if e]
    if errors:
        raise RuntimeError(f"{case.label}: client failed: {errors[0]}")
    lat: list[float] = []
    rate = 0.0
    calls = 0
    for _, n, elapsed, raw, _ in got:
        a = array.array("d")
        a.frombytes(raw)
        lat.extend(a)
        calls += n
        rate += n / elapsed if elapsed > 0 else 0.0
    lat.sort()
    return {"calls_per_s": rate, "calls": calls, "p50_ms": percentile(lat, 50),
            "p99_ms": percentile(lat, 99), "mean_ms": statistics.fmean(lat) if lat else math.nan}


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


# -- attach vs. a bare Thrift loop ----------------------------------------------------------------


def bare_loop(port: int, db: str, threads: int = 1, hms_pid: int | None = None
              ) -> dict[str, float]:
    """What attach reads, with plain Thrift calls: tables, partitions, table/partition stats."""
    t0 = time.monotonic()
    cpu0 = cpu_seconds()
    hms0 = cpu_seconds(hms_pid) if hms_pid else 0.0
    with Conn(port) as c:
        names = c.get_all_tables(db)
    conns = ThreadConns(port)

    def one(name: str) -> int:
        c = conns.client()
        t = c.get_table(db, name)
        cols = [f.name for f in t.sd.cols]
        c.get_table_statistics_req(hms.TableStatsRequest(dbName=db, tblName=name, colNames=cols))
        if not t.partitionKeys:
            return 0
        parts = c.get_partitions(db, name, -1)
        keys = [k.name for k in t.partitionKeys]
        pnames = ["/".join(f"{k}={v}" for k, v in zip(keys, p.values)) for p in parts]
        for start in range(0, len(pnames), 1000):
            c.get_partitions_statistics_req(hms.PartitionsStatsRequest(
                dbName=db, tblName=name, colNames=cols, partNames=pnames[start:start + 1000]))
        return len(parts)

    with conns:
        if threads <= 1:
            total = sum(one(n) for n in names)
        else:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                total = sum(pool.map(one, names))
    out = {"seconds": time.monotonic() - t0, "tables": len(names), "partitions": total,
           "cpu_s": cpu_seconds() - cpu0}
    if hms_pid:
        out["hms_cpu_s"] = cpu_seconds(hms_pid) - hms0
    return out


class StackSampler:
    """A poor man's py-spy: samples every thread's Python stack every ``interval`` seconds.

    cProfile only sees the thread that enabled it, and attach reads on a thread pool. Samples are
    taken when the sampler gets the GIL, so a thread blocked in C (socket read, SQLite) shows up
    in its last Python frame, which is what we want: wall time by place, over all threads.
    """

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.samples = 0
        self.self_counts: dict[str, int] = {}
        self.incl_counts: dict[str, int] = {}
        self.thread_samples: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    @staticmethod
    def _where(frame: Any) -> str:
        code = frame.f_code
        name = code.co_filename
        for prefix in (str(REPO) + "/", sys.prefix + "/lib/"):
            if name.startswith(prefix):
                name = name[len(prefix):]
        name = name.split("site-packages/")[-1]
        return f"{name}:{code.co_name}"

    def _run(self) -> None:
        me = threading.get_ident()
        names: dict[int, str] = {}
        while not self._stop.wait(self.interval):
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                stack = []
                f: Any = frame
                while f is not None:
                    stack.append(self._where(f))
                    f = f.f_back
                leaf = stack[0]
                # Idle: pool workers waiting for work, the main thread waiting for results.
                if leaf.endswith(("thread.py:_worker", "threading.py:wait")):
                    continue
                if ident not in names:
                    t = next((t for t in threading.enumerate() if t.ident == ident), None)
                    names[ident] = (t.name.split("_")[0] if t is not None else str(ident))
                self.samples += 1
                self.thread_samples[names[ident]] = self.thread_samples.get(names[ident], 0) + 1
                self.self_counts[leaf] = self.self_counts.get(leaf, 0) + 1
                for where in set(stack):
                    self.incl_counts[where] = self.incl_counts.get(where, 0) + 1

    def __enter__(self) -> StackSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def report(self, top: int = 30) -> str:
        total = max(1, self.samples)
        lines = [f"{self.samples} busy thread-samples every {self.interval * 1000:g} ms "
                 "(idle pool workers excluded); by thread: "
                 + ", ".join(f"{k} {v / total:.0%}" for k, v in
                             sorted(self.thread_samples.items(), key=lambda kv: -kv[1]))]
        lines.append("\nself (leaf Python frame; C calls such as socket reads and SQLite show "
                     "in their caller):")
        for where, n in sorted(self.self_counts.items(), key=lambda kv: -kv[1])[:top]:
            lines.append(f"  {n / total:6.1%}  {where}")
        lines.append("\ninclusive:")
        for where, n in sorted(self.incl_counts.items(), key=lambda kv: -kv[1])[:top]:
            lines.append(f"  {n / total:6.1%}  {where}")
        return "\n".join(lines)


def timed_attach(work: Path, hms_uri: str, db: str, sampler: StackSampler | None = None,
                 hms_pid: int | None = None) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="attach-", dir=work))
    try:
        t0 = time.monotonic()
        cpu0 = cpu_seconds()
        hms0 = cpu_seconds(hms_pid) if hms_pid else 0.0
        if sampler is not None:
            with sampler:
                report = attach_in_process(data_dir, hms_uri, db)
        else:
            report = attach_in_process(data_dir, hms_uri, db)
        seconds = time.monotonic() - t0
        cpu = cpu_seconds() - cpu0
        hms_cpu = cpu_seconds(hms_pid) - hms0 if hms_pid else None
        files = {p.name: p.stat().st_size for p in data_dir.iterdir() if p.is_file()}
        out = {"seconds": seconds, "tables": report.tables.added,
               "partitions": report.partitions.added, "store_files": files,
               "store_bytes": sum(files.values()), "cpu_s": cpu}
        if hms_cpu is not None:
            out["hms_cpu_s"] = hms_cpu
        return out
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def profile_attach(work: Path, hms_uri: str, db: str, dest: Path) -> dict[str, Any]:
    """One more attach under the stack sampler, then one under cProfile (main thread + totals)."""
    sampler = StackSampler()
    r = timed_attach(work, hms_uri, db, sampler=sampler)
    text = [f"== attach under the stack sampler: {r['seconds']:.2f}s ==", sampler.report()]
    # cProfile per thread (one Profile object per thread: they are not thread-safe), merged.
    profs: list[cProfile.Profile] = []
    guard = threading.Lock()

    def start_thread_profile(*_: object) -> None:
        p = cProfile.Profile()
        with guard:
            profs.append(p)
        p.enable()

    threading.setprofile(start_thread_profile)
    main_prof = cProfile.Profile()
    main_prof.enable()
    t0 = time.monotonic()
    try:
        data_dir = Path(tempfile.mkdtemp(prefix="attach-", dir=work))
        try:
            attach_in_process(data_dir, hms_uri, db)
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
    finally:
        main_prof.disable()
        threading.setprofile(None)  # type: ignore[arg-type]
    seconds = time.monotonic() - t0
    out = io.StringIO()
    st = pstats.Stats(main_prof, stream=out)
    for p in profs:
        st.add(p)
    st.sort_stats("tottime").print_stats(30)
    st.sort_stats("cumulative").print_stats(30)
    text.append(f"\n== attach under cProfile, all threads summed: {seconds:.2f}s wall "
                "(profiling overhead included) ==")
    text.append(out.getvalue())
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("\n".join(text), encoding="utf-8")
    return {"sampled_attach_s": r["seconds"], "cprofile_attach_s": seconds,
            "profile_file": str(dest)}


def read_all_partitions(port: int, db: str, tables: Sequence[str]) -> dict[str, float]:
    t0 = time.monotonic()
    total = 0
    with Conn(port) as c:
        for name in tables:
            total += len(c.get_partitions(db, name, -1))
    return {"seconds": time.monotonic() - t0, "partitions": total}


# -- main ---------------------------------------------------------------------------------------


@dataclass
class Results:
    config: dict[str, Any]
    environment: dict[str, Any]
    cases: list[dict[str, Any]] = field(default_factory=list)
    attach: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)
    targets: dict[str, Any] = field(default_factory=dict)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 200 partitions, 1 repeat, 2 s per case, attach 50x10")
    p.add_argument("--partitions", type=int, default=2000,
                   help="partitions of bench_load.events (load tests)")
    p.add_argument("--names", type=int, default=1000,
                   help="partition names per get_partitions_by_names call")
    p.add_argument("--clients", type=int, default=8, help="concurrent client processes")
    p.add_argument("--seconds", type=float, default=5.0, help="measured duration per case")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per client")
    p.add_argument("--repeats", type=int, default=3, help="runs per case (median reported)")
    p.add_argument("--server-warmup", type=float, default=10.0,
                   help="untimed seconds of load on each server before the cases (HMS JIT)")
    p.add_argument("--no-lean", dest="lean", action="store_false",
                   help="skip the get_partitions_by_names cases whose clients decode only the "
                        "partition values")
    p.add_argument("--attach-tables", type=int, default=1000)
    p.add_argument("--attach-partitions", type=int, default=100_000,
                   help="partitions in total over the attach tables")
    p.add_argument("--attach-repeats", type=int, default=None,
                   help="timed attach/bare runs (default: --repeats)")
    p.add_argument("--populate-threads", type=int, default=2,
                   help="Thrift connections used to create the attach database")
    p.add_argument("--bare-threads", type=int, default=4,
                   help="also time the bare loop on this many connections (0: skip); attach "
                        "itself reads on udb_pool_size (4) connections")
    p.add_argument("--populate-only", action="store_true",
                   help="only create the databases in the HMS of --work-dir, then stop (later "
                        "runs with the same --work-dir and sizes reuse them)")
    p.add_argument("--skip-load", action="store_true", help="skip the throughput/latency cases")
    p.add_argument("--skip-attach", action="store_true", help="skip attach time and memory")
    p.add_argument("--profile", action="store_true",
                   help="profile one extra in-process attach (cProfile) and print the top")
    p.add_argument("--launcher", choices=("cli", "inline"), default="cli",
                   help="how Strata is started: catalogctl serve, or CatalogService+ThriftServer "
                        "from python -c")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="keep the HMS (Derby) and data here and reuse populated databases "
                        "(default: a temporary directory, removed at the end)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results")
    args = p.parse_args(argv)
    if args.quick:
        args.partitions = min(args.partitions, 200)
        args.repeats = 1
        args.seconds = min(args.seconds, 2.0)
        args.warmup = min(args.warmup, 0.5)
        args.server_warmup = min(args.server_warmup, 2.0)
        args.attach_tables = min(args.attach_tables, 50)
        args.attach_partitions = min(args.attach_partitions, 500)
    if args.attach_repeats is None:
        args.attach_repeats = args.repeats
    if args.partitions < 1 or args.attach_tables < 1 or args.repeats < 1:
        p.error("--partitions, --attach-tables and --repeats must be >= 1")
    args.names = min(args.names, args.partitions)
    return args


def environment() -> dict[str, Any]:
    import thrift

    info: dict[str, Any] = {
        "python": sys.version.split()[0], "platform": platform.platform(),
        "cpus": os.cpu_count(), "loadavg_start": os.getloadavg(),
        "thrift": getattr(thrift, "__version__", "?"),
    }
    try:
        mem = Path("/proc/meminfo").read_text().split("\n")[0]
        info["memtotal"] = " ".join(mem.split()[1:])
    except OSError:
        pass
    return info



def stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the servers a benchmark started are stopped by pid."""

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)


def start_metastore(metastore: Any) -> None:
    """Start a ``tests.support.hms.HiveMetastore`` and say so."""
    t0 = time.monotonic()
    metastore.start()
    log(f"HMS 2.3.10 up on {metastore.uri} (pid {metastore.pid}, "
        f"{time.monotonic() - t0:.1f}s)")

def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.populate_only and args.work_dir is None:
        raise SystemExit("--populate-only needs --work-dir")
    import logging

    # thrift logs every refused connection while we poll for Strata's port.
    logging.getLogger("thrift").setLevel(logging.CRITICAL)
    from tests.support.hms import HiveMetastore

    cfg = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    res = Results(config=cfg, environment=environment())
    temp_work = args.work_dir is None
    work = Path(tempfile.mkdtemp(prefix="strata-bench-")) if temp_work else args.work_dir
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    log(f"work dir {work}")
    metastore = HiveMetastore(work / "hms")
    strata: StrataProcess | None = None
    interrupted = False
    stop_on_sigterm()
    try:
        start_metastore(metastore)
        data = work / "data"
        populate_load_db(metastore.port, data, args.partitions)
        if args.populate_only:
            t0 = time.monotonic()
            populate_attach_db(metastore.port, data, args.attach_tables, args.attach_partitions,
                               threads=args.populate_threads)
            log(f"populated in {time.monotonic() - t0:.0f}s; --populate-only: stopping")
            return 0

        strata_dir = work / "strata-server"
        shutil.rmtree(strata_dir, ignore_errors=True)
        strata = StrataProcess(strata_dir, work / "strata.log", args.launcher)
        try:
            strata.start()
        except RuntimeError as e:
            if args.launcher != "cli":
                raise
            log(f"catalogctl serve failed ({str(e)[:300]}); falling back to the inline launcher")
            strata = StrataProcess(strata_dir, work / "strata.log", "inline")
            strata.start()
            res.config["launcher"] = "inline"
        rss_empty = rss_bytes(strata.pid)
        log(f"Strata up ({strata.launcher}, pid {strata.pid}, thrift port {strata.thrift_port})")
        report = strata.attach(metastore.uri, LOAD_DB)
        log(f"attached {LOAD_DB} to Strata: {report['tables']['added']} tables, "
            f"{report['partitions']['added']} partitions in {report['wall_s']:.2f}s")

        all_names = [part_name(v) for v in partition_values(args.partitions)]
        names = random.Random(7).sample(all_names, args.names)
        res.verification = verify(metastore.port, strata.thrift_port, names)

        if not args.skip_load:
            res.cases = run_load(args, strata.thrift_port, metastore.port, names)

        if not args.skip_attach:
            res.attach, res.memory = run_attach(args, work, data, metastore, strata)
        res.memory["strata_rss_empty_bytes"] = rss_empty
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: stopping servers")
    finally:
        if strata is not None:
            strata.stop()
        metastore.stop()
        if temp_work:
            shutil.rmtree(work, ignore_errors=True)
    if interrupted:
        return 130
    res.environment["loadavg_end"] = os.getloadavg()
    res.targets = evaluate_targets(res)
    print_report(res)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(vars(res), indent=2, default=str) + "\n", encoding="utf-8")
    log(f"results written to {args.out}")
    return 0


def verify(hms_port: int, strata_port: int, names: list[str]) -> dict[str, Any]:
    """Both servers answer the same table and partitions (the benchmark compares like with like)."""
    out: dict[str, Any] = {}
    with Conn(hms_port) as h, Conn(strata_port) as s:
        th, ts = h.get_table(LOAD_DB, BIG_TABLE), s.get_table(LOAD_DB, BIG_TABLE)
        out["table_same"] = (th.sd.cols == ts.sd.cols and th.partitionKeys == ts.partitionKeys
                             and th.sd.location == ts.sd.location
                             and th.parameters == ts.parameters
                             and th.sd.serdeInfo == ts.sd.serdeInfo)
        ph = h.get_partitions_by_names(LOAD_DB, BIG_TABLE, names)
        ps = s.get_partitions_by_names(LOAD_DB, BIG_TABLE, names)
        key = {tuple(p.values): p for p in ph}
        out["partitions_hms"] = len(ph)
        out["partitions_strata"] = len(ps)
        out["partitions_same"] = len(ph) == len(ps) and all(
            (k := key.get(tuple(p.values))) is not None and k.sd.location == p.sd.location
            and k.parameters == p.parameters and k.sd.cols == p.sd.cols for p in ps)
        out["table_bytes_hms"] = _encoded_size(th)
        out["table_bytes_strata"] = _encoded_size(ts)
        out["partitions_bytes_hms"] = sum(_encoded_size(p) for p in ph)
        out["partitions_bytes_strata"] = sum(_encoded_size(p) for p in ps)
    if not (out["table_same"] and out["partitions_same"]):
        log(f"WARNING: Strata and the HMS answer differently: {out}")
    else:
        log(f"verified: same table and {len(ps)} partitions from both servers "
            f"(answer sizes: table {out['table_bytes_strata']} B vs {out['table_bytes_hms']} B, "
            f"partitions {out['partitions_bytes_strata']} B vs {out['partitions_bytes_hms']} B)")
    return out


def _encoded_size(obj: Any) -> int:
    from thrift.protocol import fastbinary

    return len(fastbinary.encode_binary(obj, [obj.__class__, obj.thrift_spec]))


def run_load(args: argparse.Namespace, strata_port: int, hms_port: int,
             names: list[str]) -> list[dict[str, Any]]:
    n = args.clients
    cases = [
        Case("get_table_1", "get_table, 1 client", "get_table", 1),
        Case(f"get_table_{n}", f"get_table, {n} clients", "get_table", n),
        Case(f"get_table_{n}_per_call", f"get_table, {n} clients, conn/call", "get_table", n,
             per_call_connection=True),
        Case("gpbn_1", f"get_partitions_by_names({len(names)}), 1 client",
             "get_partitions_by_names", 1),
        Case(f"gpbn_{n}", f"get_partitions_by_names({len(names)}), {n} clients",
             "get_partitions_by_names", n),
    ]
    if args.lean:
        cases += [
            Case("gpbn_1_lean", f"get_partitions_by_names({len(names)}), 1 client, lean",
                 "get_partitions_by_names", 1, lean=True),
            Case(f"gpbn_{n}_lean", f"get_partitions_by_names({len(names)}), {n} clients, lean",
                 "get_partitions_by_names", n, lean=True),
        ]
    if args.server_warmup > 0:
        # The HMS JIT needs far more calls than a per-case warm-up gives it; Strata fills its
        # encoded cache. Untimed, both servers, both calls.
        log(f"warming both servers up ({args.server_warmup:g}s each)")
        for port in (strata_port, hms_port):
            for op in ("get_table", "get_partitions_by_names"):
                run_case(port, Case("warmup", "warm-up", op, 2), names, 0.0,
                         args.server_warmup / 2)
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    for rep in range(args.repeats):
        for case in cases:
            # Alternate which server goes first so that slow drifts of the machine even out.
            order = (("strata", strata_port), ("hms", hms_port))
            if rep % 2:
                order = order[::-1]
            for target, port in order:
                r = run_case(port, case, names, args.warmup, args.seconds)
                runs.setdefault((case.key, target), []).append(r)
                log(f"run {rep + 1}/{args.repeats} {case.label:<44} {target:<6} "
                    f"{r['calls_per_s']:9.1f} calls/s  p50 {r['p50_ms']:8.3f} ms  "
                    f"p99 {r['p99_ms']:8.3f} ms  ({r['calls']} calls)")
    out = []
    for case in cases:
        s, h = runs[(case.key, "strata")], runs[(case.key, "hms")]
        sm, hm = median_of(s), median_of(h)
        out.append({"key": case.key, "case": case.label, "op": case.op, "clients": case.clients,
                    "connection_per_call": case.per_call_connection, "lean_decode": case.lean,
                    "names": len(names) if case.op != "get_table" else None,
                    "strata": {"median": sm, "runs": s}, "hms": {"median": hm, "runs": h},
                    "ratio": sm["calls_per_s"] / hm["calls_per_s"] if hm["calls_per_s"] else None})
    return out


def run_attach(args: argparse.Namespace, work: Path, data: Path, metastore: Any,
               strata: StrataProcess) -> tuple[dict[str, Any], dict[str, Any]]:
    t0 = time.monotonic()
    populated_now = populate_attach_db(metastore.port, data, args.attach_tables,
                                       args.attach_partitions, threads=args.populate_threads)
    populate_s = time.monotonic() - t0
    uri = metastore.uri
    log("attach: warm-up pass (bare loop, untimed)")
    warm = bare_loop(metastore.port, ATTACH_DB)
    log(f"  warm-up read {warm['tables']} tables, {warm['partitions']} partitions in "
        f"{warm['seconds']:.1f}s")
    bare_runs: list[dict[str, float]] = []
    bare_par_runs: list[dict[str, float]] = []
    attach_runs: list[dict[str, Any]] = []
    for rep in range(args.attach_repeats):
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("bare", lambda: bare_runs.append(bare_loop(metastore.port, ATTACH_DB,
                                                        hms_pid=metastore.pid))),
            ("attach", lambda: attach_runs.append(timed_attach(work, uri, ATTACH_DB,
                                                               hms_pid=metastore.pid))),
        ]
        if args.bare_threads > 1:
            steps.append((f"bare x{args.bare_threads}", lambda: bare_par_runs.append(
                bare_loop(metastore.port, ATTACH_DB, threads=args.bare_threads,
                          hms_pid=metastore.pid))))
        if rep % 2:
            steps = steps[::-1]
        for label, step in steps:
            step()
            last = {"bare": bare_runs, "attach": attach_runs}.get(label, bare_par_runs)[-1]
            log(f"  run {rep + 1}/{args.attach_repeats} {label:<9} {last['seconds']:8.2f}s "
                f"({last['tables']} tables, {last['partitions']} partitions; CPU: this process "
                f"{last['cpu_s']:.1f}s, HMS {last.get('hms_cpu_s', math.nan):.1f}s)")
    attach_s = statistics.median(r["seconds"] for r in attach_runs)
    bare_s = statistics.median(r["seconds"] for r in bare_runs)
    attach_res: dict[str, Any] = {
        "tables": args.attach_tables, "partitions": args.attach_partitions,
        "populate_s": populate_s, "populated_now": populated_now, "attach_s": attach_s,
        "bare_s": bare_s, "ratio": attach_s / bare_s,
        "attach_cpu_s": statistics.median(r["cpu_s"] for r in attach_runs),
        "bare_cpu_s": statistics.median(r["cpu_s"] for r in bare_runs),
        "attach_hms_cpu_s": statistics.median(r.get("hms_cpu_s", math.nan) for r in attach_runs),
        "bare_hms_cpu_s": statistics.median(r.get("hms_cpu_s", math.nan) for r in bare_runs),
        "attach_runs": attach_runs, "bare_runs": bare_runs,
    }
    if bare_par_runs:
        attach_res["bare_threads"] = args.bare_threads
        attach_res["bare_parallel_s"] = statistics.median(r["seconds"] for r in bare_par_runs)
        attach_res["bare_parallel_runs"] = bare_par_runs
        attach_res["ratio_parallel"] = attach_s / attach_res["bare_parallel_s"]
    if args.profile:
        dest = args.out.with_suffix(".attach-profile.txt")
        log("attach: profiling two more in-process attaches (stack sampler, then cProfile)")
        attach_res["profile"] = profile_attach(work, uri, ATTACH_DB, dest)
        log(f"  profile written to {dest}")

    store_bytes = statistics.median(r["store_bytes"] for r in attach_runs)
    memory: dict[str, Any] = {
        "state_store_bytes": store_bytes,
        "state_store_bytes_per_partition": store_bytes / max(1, args.attach_partitions),
    }
    # Server side: attach over REST, restart (a clean heap with the state loaded), then serve
    # every partition once so the encoded cache holds them all.
    log(f"attach over {'REST' if strata.launcher == 'cli' else 'the inline launcher'} to the "
        "Strata server")
    rest = strata.attach(uri, ATTACH_DB)
    memory["server_attach_s"] = rest["wall_s"]
    log(f"  {rest['partitions']['added']} partitions in {rest['wall_s']:.1f}s; restarting Strata")
    strata.stop()
    strata.start()
    time.sleep(1.0)
    rss0 = rss_bytes(strata.pid)
    tables = [n for n, _ in attach_layout(args.attach_tables, args.attach_partitions)]
    cold = read_all_partitions(strata.thrift_port, ATTACH_DB, tables)
    rss1 = rss_bytes(strata.pid)
    warm_read = read_all_partitions(strata.thrift_port, ATTACH_DB, tables)
    rss2 = rss_bytes(strata.pid)
    hms_read = read_all_partitions(metastore.port, ATTACH_DB, tables)
    memory.update({
        "strata_rss_after_restart_bytes": rss0,
        "strata_rss_after_get_partitions_bytes": rss1,
        "strata_rss_after_second_pass_bytes": rss2,
        "rss_growth_bytes": rss1 - rss0,
        "rss_growth_per_partition": (rss1 - rss0) / max(1, cold["partitions"]),
        "get_partitions_all_strata_cold_s": cold["seconds"],
        "get_partitions_all_strata_warm_s": warm_read["seconds"],
        "get_partitions_all_hms_s": hms_read["seconds"],
        "partitions_read": cold["partitions"],
    })
    log(f"  RSS {rss0 / 2**20:.0f} MiB -> {rss1 / 2**20:.0f} MiB after get_partitions of "
        f"{cold['partitions']} partitions ({memory['rss_growth_per_partition']:.0f} B/partition); "
        f"read all: Strata cold {cold['seconds']:.1f}s, warm {warm_read['seconds']:.1f}s, "
        f"HMS {hms_read['seconds']:.1f}s")
    return attach_res, memory


def evaluate_targets(res: Results) -> dict[str, Any]:
    t: dict[str, Any] = {}
    by_key = {c["key"]: c for c in res.cases}
    for c in res.cases:
        if c["clients"] > 1 and c["ratio"] is not None:
            t[f"ratio_{c['key']}"] = {"value": c["ratio"],
                                      "target": f">= {TARGETS['throughput_ratio_8_clients']:g}x",
                                      "ok": c["ratio"] >= TARGETS["throughput_ratio_8_clients"]}
    if "get_table_1" in by_key:
        p99 = by_key["get_table_1"]["strata"]["median"]["p99_ms"]
        t["get_table_p99_1_client_ms"] = {
            "value": p99, "target": f"<= {TARGETS['get_table_p99_ms_1_client']:g} ms",
            "ok": p99 <= TARGETS["get_table_p99_ms_1_client"]}
    if res.attach:
        t["attach_over_bare"] = {"value": res.attach["ratio"],
                                 "target": f"<= {TARGETS['attach_over_bare']:g}x",
                                 "ok": res.attach["ratio"] <= TARGETS["attach_over_bare"]}
    return t


def _fmt_rate(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"


def _fmt_ms(v: float) -> str:
    return f"{v:.2f}" if v < 100 else f"{v:.0f}"


def print_report(res: Results) -> None:
    print()
    cfg = res.config
    print(f"Strata vs Hive Metastore 2.3.10 -- {cfg['seconds']:g}s per case, median of "
          f"{cfg['repeats']} run(s); {res.environment['cpus']} CPUs, load average "
          f"{' '.join(f'{x:.1f}' for x in res.environment['loadavg_start'])} at start")
    if res.cases:
        headers = ["case", "Strata calls/s", "HMS calls/s", "ratio", "Strata p50/p99 ms",
                   "HMS p50/p99 ms", "target"]
        rows = []
        for c in res.cases:
            s, h = c["strata"]["median"], c["hms"]["median"]
            target = ""
            if c["clients"] > 1:
                goal = TARGETS["throughput_ratio_8_clients"]
                target = f">= {goal:g}x: {'ok' if c['ratio'] >= goal else 'MISSED'}"
            elif c["key"] == "get_table_1":
                goal = TARGETS["get_table_p99_ms_1_client"]
                target = f"p99 <= {goal:g} ms: {'ok' if s['p99_ms'] <= goal else 'MISSED'}"
            rows.append([c["case"], _fmt_rate(s["calls_per_s"]), _fmt_rate(h["calls_per_s"]),
                         f"{c['ratio']:.1f}x", f"{_fmt_ms(s['p50_ms'])} / {_fmt_ms(s['p99_ms'])}",
                         f"{_fmt_ms(h['p50_ms'])} / {_fmt_ms(h['p99_ms'])}", target])
        widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
        line = "  ".join("-" * w for w in widths)
        print(line)
        for i, r in enumerate([headers, *rows]):
            print("  ".join(str(v).ljust(w) if j in (0, 6) else str(v).rjust(w)
                            for j, (v, w) in enumerate(zip(r, widths))).rstrip())
            if i == 0:
                print(line)
        print(line)
    if res.attach:
        a = res.attach
        goal = TARGETS["attach_over_bare"]
        print(f"\nattach of {a['tables']} tables / {a['partitions']} partitions "
              f"(median of {len(a['attach_runs'])}):")
        print(f"  Strata attach_database (in-process)   {a['attach_s']:8.2f} s   CPU: attach "
              f"{a['attach_cpu_s']:.1f} s, HMS {a['attach_hms_cpu_s']:.1f} s")
        print(f"  bare Thrift loop (1 connection)       {a['bare_s']:8.2f} s   CPU: loop "
              f"{a['bare_cpu_s']:.1f} s, HMS {a['bare_hms_cpu_s']:.1f} s")
        if "bare_parallel_s" in a:
            print(f"  bare Thrift loop ({a['bare_threads']} connections)      "
                  f"{a['bare_parallel_s']:8.2f} s   (attach/this = {a['ratio_parallel']:.2f}x)")
        print(f"  attach / bare = {a['ratio']:.2f}x   target <= {goal:g}x: "
              f"{'ok' if a['ratio'] <= goal else 'MISSED'}")
        if a["populated_now"]:
            print(f"  (populating the HMS took {a['populate_s']:.0f} s)")
        else:
            print("  (the HMS databases were reused from --work-dir)")
    m = res.memory
    if "state_store_bytes" in m:
        print("\nmemory:")
        print(f"  state store file            {m['state_store_bytes'] / 2**20:8.1f} MiB = "
              f"{m['state_store_bytes_per_partition']:.0f} B/partition")
        mib = 2**20
        print(f"  Strata RSS growth           {m['rss_growth_bytes'] / mib:8.1f} MiB = "
              f"{m['rss_growth_per_partition']:.0f} B/partition after get_partitions of all "
              f"{m['partitions_read']} partitions "
              f"(RSS {m['strata_rss_after_restart_bytes'] / mib:.0f}"
              f" -> {m['strata_rss_after_get_partitions_bytes'] / mib:.0f} MiB; empty server "
              f"{m['strata_rss_empty_bytes'] / mib:.0f} MiB)")
        print("  reading all partitions      Strata cold "
              f"{m['get_partitions_all_strata_cold_s']:.2f} s, warm "
              f"{m['get_partitions_all_strata_warm_s']:.2f} s; HMS "
              f"{m['get_partitions_all_hms_s']:.2f} s")
        print(f"  attach over the server      {m['server_attach_s']:.2f} s")
    if res.targets:
        missed = [k for k, v in res.targets.items() if not v["ok"]]
        print(f"\ntargets: {len(res.targets) - len(missed)}/{len(res.targets)} met"
              + (f"; missed: {', '.join(missed)}" if missed else ""))


if __name__ == "__main__":
    sys.exit(main())
