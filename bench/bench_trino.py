#!/usr/bin/env python3
"""What a Trino user feels on the metadata path: Trino 476 -> HMS vs. Trino 476 -> Strata.

One run:

1. starts a real HMS 2.3.10 (``tests.support.hms.HiveMetastore``) and fills it over Thrift only:
   database ``trino_bench`` with ``--tables`` small tables ``t00000``... (4-8 columns each) and
   one table ``events`` with ``--partitions`` partitions, keys ``day`` (string, one day per ten
   partitions) and ``bucket`` (int, 0-9), so ``day = '<d>'`` prunes to exactly 10 partitions;
2. starts Strata as a separate process (``python -m api.cli serve`` with its Trino listener,
   ``--trino-thrift-port``) and attaches ``trino_bench`` over REST;
3. starts one Trino 476 with catalogs ``hms`` (the HMS directly) and ``strata`` (Strata's Trino
   listener), both from the shipped ``trino-plugin-config/hive.properties`` with the metastore
   cache disabled (``hive.metastore-cache-ttl=0s``, ``hive.metastore-stats-cache-ttl=0s``), so
   every statement goes to the metastore; plus ``hms_tap`` / ``strata_tap``, the same metastores
   behind a timing :class:`~tests.support.thrift_tap.ThriftTap` (not timed; they show which
   Thrift calls Trino makes per statement and how long each takes);
4. times each statement in Trino (client wall time over the HTTP protocol), one warm-up and
   ``--repeats`` timed runs per catalog, alternating which catalog goes first; prints median and
   min/max, the ratio HMS / Strata (target >= 5x), and checks that both catalogs answer alike;
5. writes everything as JSON to ``--out`` (default ``bench/results/trino.json``).

Every process it starts (HMS, Strata, Trino) is stopped by pid before it exits.
Run from the repository root: ``python bench/bench_trino.py --quick`` (see bench/README.md).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import select
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
for p in (REPO, REPO / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from bench_metastore import (  # noqa: E402
    HOST,
    Conn,
    StrataProcess,
    ThreadConns,
    _ensure_database,
    environment,
    log,
    start_metastore,
    stop_on_sigterm,
    make_partitions,
    make_table,
)
from tests.support.thrift_tap import Message, ThriftTap, _Conn, decode_messages  # noqa: E402
from tests.support.trino import TrinoServer, trino_unavailable_reason  # noqa: E402

DB = "trino_bench"
PART_TABLE = "events"
BUCKETS = 10
DEFAULT_OUT = REPO / "bench" / "results" / "trino.json"
TARGET_RATIO = 5.0
CATALOGS = ("hms", "strata")

#: Columns of the small tables: table i has the first 4 + i % 5 of them.
SMALL_COLUMNS = (
    ("id", "bigint", "primary key"),
    ("name", "string", None),
    ("amount", "decimal(18,4)", "amount in the account currency"),
    ("created_at", "timestamp", None),
    ("country", "string", "ISO 3166 code"),
    ("active", "boolean", None),
    ("score", "double", None),
    ("tags", "array<string>", None),
)
EVENTS_COLUMNS = (
    ("event_id", "bigint", "unique id of the event"),
    ("user_id", "bigint", None),
    ("event_type", "string", "click, view, purchase, ..."),
    ("amount", "decimal(18,4)", None),
    ("event_ts", "timestamp", None),
)
EVENTS_KEYS = (("day", "string", "event date"), ("bucket", "int", "hash bucket of user_id"))

#: The metastore cache off: every statement reaches the metastore (what is measured).
NO_CACHE = {
    "hive.metastore-cache-ttl": "0s",
    "hive.metastore-stats-cache-ttl": "0s",
    "hive.metastore-refresh-interval": None,  # meaningless without a cache: removed
}


def table_names(tables: int) -> list[str]:
    return [f"t{i:05d}" for i in range(tables)]


def table_columns(i: int) -> tuple[tuple[str, str, str | None], ...]:
    return SMALL_COLUMNS[:4 + i % 5]


def expected_columns(tables: int) -> int:
    """Rows of information_schema.columns for the database (partition keys included)."""
    small = sum(len(table_columns(i)) for i in range(tables))
    return small + len(EVENTS_COLUMNS) + len(EVENTS_KEYS)


def partition_values(count: int) -> list[tuple[str, str]]:
    """``count`` (day, bucket) pairs: consecutive days from 2020-01-01 x buckets 0-9."""
    import datetime as dt

    start = dt.date(2020, 1, 1)
    return [((start + dt.timedelta(days=i // BUCKETS)).isoformat(), str(i % BUCKETS))
            for i in range(count)]


def filter_day(partitions: int) -> str:
    """A day in the middle of the table that has all ten buckets."""
    full_days = partitions // BUCKETS
    if full_days < 1:
        raise SystemExit(f"--partitions must be >= {BUCKETS}")
    return partition_values((full_days // 2 + 1) * BUCKETS)[-1][0]


# -- populating the HMS ---------------------------------------------------------------------------


def populate(port: int, data_dir: Path, tables: int, partitions: int, threads: int = 2,
             batch: int = 500) -> dict[str, Any]:
    """Create what is missing of ``trino_bench`` (resumable; a different size needs a new dir)."""
    import random

    db_dir = data_dir / f"{DB}.db"
    names = table_names(tables)
    with Conn(port) as c:
        _ensure_database(c, DB, "file://" + str(db_dir))
        existing = set(c.get_all_tables(DB))
    extra = existing - set(names) - {PART_TABLE}
    if extra:
        raise SystemExit(f"{DB} has {len(extra)} unexpected tables: use a fresh --work-dir")
    todo = [(i, n) for i, n in enumerate(names) if n not in existing]
    t0 = time.monotonic()
    if todo:
        log(f"creating {len(todo)} tables in {DB} ({threads} connections)")
        conns = ThreadConns(port)
        guard = threading.Lock()
        done = [0]

        def create(item: tuple[int, str]) -> None:
            i, name = item
            rng = random.Random(name)
            conns.client().create_table(make_table(DB, name, f"file://{db_dir}/{name}",
                                                table_columns(i), (), rng, parquet=i % 3 != 0))
            with guard:
                done[0] += 1
                n = done[0]
            if n % max(1, len(todo) // 10) == 0 or n == len(todo):
                log(f"  {n}/{len(todo)} tables ({time.monotonic() - t0:.0f}s)")

        with conns, ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(create, todo))
    tables_s = time.monotonic() - t0
    t1 = time.monotonic()
    rng = random.Random(PART_TABLE)
    with Conn(port) as c:
        if PART_TABLE not in existing:
            c.create_table(make_table(DB, PART_TABLE, f"file://{db_dir}/{PART_TABLE}",
                                      EVENTS_COLUMNS, EVENTS_KEYS, rng))
        table = c.get_table(DB, PART_TABLE)
        have = set(c.get_partition_names(DB, PART_TABLE, -1))
        if len(have) > partitions:
            raise SystemExit(f"{DB}.{PART_TABLE} has {len(have)} partitions, more than "
                             f"{partitions}: use a fresh --work-dir")
        values = [v for v in partition_values(partitions)
                  if f"day={v[0]}/bucket={v[1]}" not in have]
        if values:
            log(f"adding {len(values)} partitions to {DB}.{PART_TABLE} ({batch} per call)")
        step = max(batch, (len(values) // 10) // batch * batch)
        for start in range(0, len(values), batch):
            c.add_partitions(make_partitions(table, values[start:start + batch], rng,
                                             cols=EVENTS_COLUMNS))
            end = min(start + batch, len(values))
            if end % step == 0 or end == len(values):
                el = time.monotonic() - t1
                log(f"  {end}/{len(values)} partitions, {el:.0f}s ({end / max(el, 1e-9):.0f}/s)")
    out = {"tables_created": len(todo), "partitions_added": len(values),
           "tables_s": tables_s, "partitions_s": time.monotonic() - t1}
    if not todo and not values:
        log(f"{DB} already populated ({tables} + 1 tables, {partitions} partitions): reused")
    return out


# -- a tap that times every call ------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """One Thrift call seen by the tap: method, connection, request and reply times."""

    name: str
    connection: int
    start: float
    end: float


class TimedTap(ThriftTap):
    """A :class:`ThriftTap` that also records when each request went out and its reply came back.

    Requests are decoded (and time-stamped) before they are forwarded, replies right after, so a
    reply can never be seen before its request; a span is the server's time plus one loopback
    hop each way (the connect of a new connection is not included). No rewriting.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        super().__init__(upstream_host, upstream_port)
        self.spans: list[Span] = []
        self._open: dict[tuple[int, int, str], float] = {}
        self._guard = threading.Lock()

    def _pump(self, src: socket.socket, dst: socket.socket, conn: _Conn, is_request: bool) -> None:
        # Decoding is pure Python (~10 ms for a 100 KB reply), so every message is stamped with
        # the receive time of the chunk that completed it, and decoding waits until the stream
        # has been quiet for a moment (replies: 2 ms; they are forwarded at once anyway).
        # Requests are forwarded only after they were stamped, so that a reply can never be
        # seen before its request.
        buf = bytearray()
        held: list[bytes] = []  # request bytes not forwarded yet
        marks: list[tuple[int, float]] = []  # (stream offset after a chunk, its receive time)
        base = 0  # stream offset of buf[0]
        decoding = True
        quiet_ms = 0 if is_request else 2
        poller = select.poll()
        poller.register(src, select.POLLIN)
        try:
            while True:
                data = src.recv(65536)
                if data:
                    if not is_request or not decoding:
                        dst.sendall(data)
                    if decoding:
                        buf += data
                        marks.append((base + len(buf), time.perf_counter()))
                        if is_request:
                            held.append(data)
                    if poller.poll(quiet_ms):
                        continue  # more is coming: take it before the (slow) decoding
                if decoding and buf:
                    try:
                        messages = decode_messages(buf)
                    except Exception as e:  # noqa: BLE001 - not Thrift binary: forward only
                        self.errors.append(f"decode: {e!r}")
                        decoding, messages = False, []
                    for msg in messages:
                        base += len(msg.raw) + (4 if msg.framed else 0)
                        done = next((t for end, t in marks if end >= base), marks[-1][1])
                        marks = [m for m in marks if m[0] > base]
                        self._stamp(conn, msg, is_request, done)
                        self._record(conn, msg, is_request)
                if held:
                    dst.sendall(b"".join(held))
                    held.clear()
                if not data:
                    break
        except OSError:
            pass
        finally:
            self._pump_done(conn, src, dst)

    def _stamp(self, conn: _Conn, msg: Message, is_request: bool, now: float) -> None:
        key = (conn.index, msg.seqid, msg.name)
        with self._guard:
            if is_request:
                self._open[key] = now
            elif key in self._open:
                self.spans.append(Span(msg.name, conn.index, self._open.pop(key), now))

    def spans_since(self, t0: float, settle_s: float = 2.0) -> list[Span]:
        """Calls whose request went out after ``t0`` (waits briefly for replies in flight)."""
        deadline = time.perf_counter() + settle_s
        while True:
            with self._guard:
                if not self._open or time.perf_counter() > deadline:
                    return [s for s in self.spans if s.start >= t0]
            time.sleep(0.01)


# -- statements -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Statement:
    key: str
    label: str
    sql: str  # {c}: catalog, {db}: database, {day}: the pruning day
    target: bool = True  # counted against the >= 5x target


def statements(args: argparse.Namespace) -> list[Statement]:
    n = args.tables + 1
    return [
        Statement("select_1", "SELECT 1 (Trino floor, no metastore)", "SELECT 1", target=False),
        Statement("show_schemas", "SHOW SCHEMAS (one metastore call)", "SHOW SCHEMAS FROM {c}",
                  target=False),
        Statement("show_tables", f"SHOW TABLES ({n} tables)", "SHOW TABLES FROM {c}.{db}"),
        Statement("columns_count", "count(*) information_schema.columns",
                  "SELECT count(*) FROM {c}.information_schema.columns "
                  "WHERE table_schema = '{db}'"),
        Statement("columns_list", "table_name, column_name from i_s.columns",
                  "SELECT table_name, column_name FROM {c}.information_schema.columns "
                  "WHERE table_schema = '{db}'"),
        Statement("explain", f"EXPLAIN, {BUCKETS} of {args.partitions} partitions",
                  f"EXPLAIN SELECT bucket, count(*), sum(amount) FROM {{c}}.{{db}}.{PART_TABLE} "
                  "WHERE day = '{day}' GROUP BY bucket"),
    ]


def render(st: Statement, catalog: str, day: str) -> str:
    return st.sql.format(c=catalog, db=DB, day=day)


def timed(trino: TrinoServer, sql: str) -> tuple[float, list[tuple[Any, ...]], str | None]:
    """Client wall time (ms) of one statement, its rows and query id."""
    t0 = time.perf_counter()
    res = trino.execute(sql, timeout=1800.0)
    return (time.perf_counter() - t0) * 1000.0, res.rows, res.query_id


def summary(ms: list[float]) -> dict[str, float]:
    return {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms)}


def run_statements(trino: TrinoServer, args: argparse.Namespace, day: str
                   ) -> tuple[list[dict[str, Any]], dict[tuple[str, str], list[tuple[Any, ...]]]]:
    """Warm-up + ``--repeats`` timed runs of every statement on both catalogs."""
    sts = statements(args)
    answers: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    log("warm-up: every statement once per catalog")
    for st in sts:
        for cat in CATALOGS:
            ms, rows, _ = timed(trino, render(st, cat, day))
            answers[(st.key, cat)] = rows
            log(f"  warm-up {st.key:<14} {cat:<7} {ms:9.1f} ms ({len(rows)} rows)")
    runs: dict[tuple[str, str], list[float]] = {}
    for rep in range(args.repeats):
        order = CATALOGS if rep % 2 == 0 else CATALOGS[::-1]
        for st in sts:
            line = []
            for cat in order:
                ms, rows, _ = timed(trino, render(st, cat, day))
                if st.key != "select_1" and len(rows) != len(answers[(st.key, cat)]):
                    raise RuntimeError(f"{st.key} on {cat}: {len(rows)} rows, warm-up had "
                                       f"{len(answers[(st.key, cat)])}")
                runs.setdefault((st.key, cat), []).append(ms)
                line.append(f"{cat} {ms:8.1f} ms")
            log(f"run {rep + 1}/{args.repeats} {st.key:<14} " + "  ".join(line))
    out = []
    for st in sts:
        h, s = summary(runs[(st.key, "hms")]), summary(runs[(st.key, "strata")])
        ratio = h["median_ms"] / s["median_ms"] if s["median_ms"] else None
        out.append({"key": st.key, "label": st.label, "sql": render(st, "<catalog>", day),
                    "target": st.target, "hms": {**h, "runs_ms": runs[(st.key, "hms")]},
                    "strata": {**s, "runs_ms": runs[(st.key, "strata")]}, "ratio": ratio,
                    "ok": (ratio is not None and ratio >= TARGET_RATIO) if st.target else None})
    return out, answers


# -- answers must agree ---------------------------------------------------------------------------


def _explain_text(rows: list[tuple[Any, ...]], catalog: str) -> str:
    text = "\n".join(str(r[0]) for r in rows)
    return re.sub(rf"\b{catalog}([:.])", r"<catalog>\1", text)


def _explain_partitions(text: str) -> list[int]:
    """Partition counts the plan mentions, if any (e.g. ``partitions: 10``)."""
    return [int(x) for x in re.findall(r"(?i)partitions?\s*[:=]\s*(\d+)", text)]


def verify(trino: TrinoServer, answers: dict[tuple[str, str], list[tuple[Any, ...]]],
           args: argparse.Namespace, day: str) -> dict[str, Any]:
    """Same tables, same columns, same plan from both catalogs, and the expected sizes."""
    v: dict[str, Any] = {}
    tables = {c: sorted(r[0] for r in answers[("show_tables", c)]) for c in CATALOGS}
    v["tables"] = {c: len(t) for c, t in tables.items()}
    v["tables_expected"] = args.tables + 1
    v["tables_same"] = tables["hms"] == tables["strata"]
    counts = {c: answers[("columns_count", c)][0][0] for c in CATALOGS}
    v["columns_count"] = counts
    v["columns_expected"] = expected_columns(args.tables)
    lists = {c: sorted(map(tuple, answers[("columns_list", c)])) for c in CATALOGS}
    v["columns_list_rows"] = {c: len(x) for c, x in lists.items()}
    v["columns_list_same"] = lists["hms"] == lists["strata"]
    plans = {c: _explain_text(answers[("explain", c)], c) for c in CATALOGS}
    v["explain_same"] = plans["hms"] == plans["strata"]
    v["explain_partitions"] = {c: _explain_partitions(p) for c, p in plans.items()}
    v["explain_text"] = plans
    # The pruned partition count itself, from the $partitions system table of each catalog.
    v["pruned_partitions"] = {c: trino.query(
        f'SELECT count(*) FROM {c}.{DB}."{PART_TABLE}$partitions" WHERE day = \'{day}\'')[0][0]
        for c in CATALOGS}
    v["ok"] = (v["tables_same"] and v["tables"]["hms"] == v["tables_expected"]
               and counts["hms"] == counts["strata"] == v["columns_expected"]
               and v["columns_list_same"] and v["columns_list_rows"]["hms"] == counts["hms"]
               and v["explain_partitions"]["hms"] == v["explain_partitions"]["strata"]
               and v["pruned_partitions"]["hms"] == v["pruned_partitions"]["strata"] == BUCKETS)
    if v["ok"]:
        log(f"verified: {v['tables']['hms']} tables, {counts['hms']} columns, "
            f"{v['pruned_partitions']['hms']} pruned partitions from both catalogs; plans "
            f"{'identical' if v['explain_same'] else 'DIFFER (see JSON explain_text)'}")
    else:
        log(f"WARNING: the catalogs answer differently or not as expected: "
            f"{ {k: x for k, x in v.items() if k != 'explain_text'} }")
    return v


# -- which Thrift calls Trino makes ---------------------------------------------------------------


def call_profile(trino: TrinoServer, taps: dict[str, TimedTap], args: argparse.Namespace,
                 day: str) -> list[dict[str, Any]]:
    """Each statement once more through the tapped catalogs: calls, connections, tap time."""
    out = []
    for st in statements(args):
        if st.key == "select_1":
            continue
        entry: dict[str, Any] = {"key": st.key}
        for cat, tap in taps.items():
            timed(trino, render(st, cat, day))  # warm
            t0 = time.perf_counter()
            ms, _, _ = timed(trino, render(st, cat, day))
            spans = tap.spans_since(t0)
            by_method: dict[str, dict[str, float]] = {}
            for s in spans:
                m = by_method.setdefault(s.name, {"calls": 0, "total_ms": 0.0, "max_ms": 0.0})
                d = (s.end - s.start) * 1000.0
                m["calls"] += 1
                m["total_ms"] += d
                m["max_ms"] = max(m["max_ms"], d)
            for m in by_method.values():
                m["mean_ms"] = m["total_ms"] / m["calls"]
            busy = _union_ms([(s.start, s.end) for s in spans])
            entry[cat.removesuffix("_tap")] = {
                "statement_ms": ms, "calls": len(spans),
                "connections": len({s.connection for s in spans}),
                "in_calls_ms": busy, "methods": by_method}
        h, t = entry["hms"]["in_calls_ms"], entry["strata"]["in_calls_ms"]
        entry["in_calls_ratio"] = h / t if t > 0 else None
        out.append(entry)
    return out


def _union_ms(intervals: list[tuple[float, float]]) -> float:
    """Wall time covered by at least one call (calls may overlap)."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total * 1000.0


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 50 tables, 200 partitions, 2 repeats")
    p.add_argument("--tables", type=int, default=1000, help="small tables in the database")
    p.add_argument("--partitions", type=int, default=10_000,
                   help=f"partitions of {DB}.{PART_TABLE} (multiple of {BUCKETS})")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per statement and catalog")
    p.add_argument("--populate-threads", type=int, default=2,
                   help="Thrift connections creating the small tables")
    p.add_argument("--no-profile", dest="profile", action="store_false",
                   help="skip the per-statement Thrift call profile through the taps")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="keep the HMS (Derby) here and reuse/resume the populated database "
                        "(default: a temporary directory, removed at the end)")
    p.add_argument("--populate-only", action="store_true",
                   help="only create the database in --work-dir's HMS, then stop")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results")
    args = p.parse_args(argv)
    if args.quick:
        args.tables = min(args.tables, 50)
        args.partitions = min(args.partitions, 200)
        args.repeats = min(args.repeats, 2)
    if args.tables < 1 or args.repeats < 1 or args.partitions < BUCKETS:
        p.error(f"--tables and --repeats must be >= 1, --partitions >= {BUCKETS}")
    if args.populate_only and args.work_dir is None:
        p.error("--populate-only needs --work-dir")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reason = trino_unavailable_reason()
    if reason and not args.populate_only:
        raise SystemExit(f"Trino unavailable: {reason}")
    import logging

    logging.getLogger("thrift").setLevel(logging.CRITICAL)
    from tests.support.hms import HiveMetastore

    res: dict[str, Any] = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "environment": environment(), "catalog_overrides": NO_CACHE}
    temp_work = args.work_dir is None
    work = (Path(tempfile.mkdtemp(prefix="strata-bench-trino-")) if temp_work
            else args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    log(f"work dir {work}")
    day = filter_day(args.partitions)
    metastore = HiveMetastore(work / "hms")
    strata: StrataProcess | None = None
    trino: TrinoServer | None = None
    taps: dict[str, TimedTap] = {}
    pool = ThreadPoolExecutor(max_workers=1)
    booting: Future[TrinoServer] | None = None
    interrupted = False
    stop_on_sigterm()
    try:
        start_metastore(metastore)
        if not args.populate_only:
            strata_dir = work / "strata-server"
            shutil.rmtree(strata_dir, ignore_errors=True)
            strata = StrataProcess(strata_dir, work / "strata.log", "cli", trino_listener=True)
            taps = {"hms_tap": TimedTap(HOST, metastore.port),
                    "strata_tap": TimedTap(HOST, strata.trino_thrift_port)}
            for tap in taps.values():
                tap.start()
            trino_dir = work / "trino"
            shutil.rmtree(trino_dir, ignore_errors=True)
            trino = TrinoServer(trino_dir, {
                "hms": metastore.uri,
                "strata": f"thrift://{HOST}:{strata.trino_thrift_port}",
                **{name: f"thrift://{HOST}:{tap.port}" for name, tap in taps.items()},
            }, catalog_overrides=NO_CACHE, startup_timeout=600.0, user="strata-bench")
            log("starting Trino 476 in the background")
            booting = pool.submit(trino.start)
        t0 = time.monotonic()
        res["populate"] = populate(metastore.port, work / "data", args.tables, args.partitions,
                                   threads=args.populate_threads)
        log(f"population done in {time.monotonic() - t0:.0f}s")
        if args.populate_only:
            return 0
        assert strata is not None and trino is not None and booting is not None
        strata.start()
        log(f"Strata up (pid {strata.pid}, thrift {strata.thrift_port}, Trino listener "
            f"{strata.trino_thrift_port})")
        report = strata.attach(metastore.uri, DB)
        res["attach"] = {"tables": report["tables"]["added"],
                         "partitions": report["partitions"]["added"], "wall_s": report["wall_s"]}
        log(f"attached {DB}: {report['tables']['added']} tables, "
            f"{report['partitions']['added']} partitions in {report['wall_s']:.2f}s")
        booting.result()
        log(f"Trino up on {trino.url} (pid {trino.pid}, {trino.startup_seconds:.0f}s)")
        for _ in range(3):
            trino.query("SELECT 1")
        res["statements"], answers = run_statements(trino, args, day)
        res["verification"] = verify(trino, answers, args, day)
        if args.profile:
            log("Thrift call profile: each statement once more through the taps")
            res["calls"] = call_profile(trino, taps, args, day)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: stopping servers")
    finally:
        if booting is not None:
            try:
                booting.result(timeout=660)
            except BaseException:  # noqa: BLE001 - stopped below either way
                pass
        pool.shutdown(wait=True)
        if trino is not None:
            trino.stop()
        for tap in taps.values():
            tap.stop()
        if strata is not None:
            strata.stop()
        metastore.stop()
        if temp_work:
            shutil.rmtree(work, ignore_errors=True)
    if interrupted:
        return 130
    if args.populate_only:
        return 0
    res["environment"]["loadavg_end"] = os.getloadavg()
    print_report(res, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2, default=str) + "\n", encoding="utf-8")
    log(f"results written to {args.out}")
    return 0


def _ms(v: float) -> str:
    return f"{v:,.1f}" if v < 100 else f"{v:,.0f}"


def _table(headers: list[str], rows: list[list[str]], left: tuple[int, ...] = (0,)) -> None:
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    line = "  ".join("-" * w for w in widths)
    print(line)
    for i, r in enumerate([headers, *rows]):
        print("  ".join(v.ljust(w) if j in left else v.rjust(w)
                        for j, (v, w) in enumerate(zip(r, widths))).rstrip())
        if i == 0:
            print(line)
    print(line)


def print_report(res: dict[str, Any], args: argparse.Namespace) -> None:
    env = res["environment"]
    print()
    print(f"Trino 476 metadata path: Trino->HMS 2.3.10 vs Trino->Strata -- {args.tables} + 1 "
          f"tables, {args.partitions} partitions; metastore cache off; median (min-max) of "
          f"{args.repeats} runs, ms; {env['cpus']} CPUs, load average "
          f"{' '.join(f'{x:.1f}' for x in env['loadavg_start'])} at start")
    rows = []
    for s in res["statements"]:
        h, t = s["hms"], s["strata"]
        target = ""
        if s["target"]:
            target = f">= {TARGET_RATIO:g}x: {'ok' if s['ok'] else 'MISSED'}"
        rows.append([s["label"], f"{_ms(h['median_ms'])} ({_ms(h['min_ms'])}-{_ms(h['max_ms'])})",
                     f"{_ms(t['median_ms'])} ({_ms(t['min_ms'])}-{_ms(t['max_ms'])})",
                     f"{s['ratio']:.1f}x", target])
    _table(["statement", "Trino->HMS ms", "Trino->Strata ms", "ratio", "target"], rows, (0, 4))
    v = res["verification"]
    print(f"answers: tables {v['tables']['hms']} / {v['tables']['strata']} (expected "
          f"{v['tables_expected']}), columns {v['columns_count']['hms']} / "
          f"{v['columns_count']['strata']} (expected {v['columns_expected']}), pruned partitions "
          f"{v['pruned_partitions']['hms']} / {v['pruned_partitions']['strata']}, plans "
          f"{'identical' if v['explain_same'] else 'differ'} -> "
          f"{'same' if v['ok'] else 'MISMATCH'}")
    if res.get("calls"):
        print("\nThrift calls per statement (one more run through a timing tap; 'in calls' = wall "
              "time with a call outstanding at the tap, ratio = HMS / Strata in calls; "
              "'outside' = the rest: Trino itself, connects, the tap):")
        crow = []
        for e in res["calls"]:
            for cat in CATALOGS:
                c = e[cat]
                top = sorted(c["methods"].items(), key=lambda kv: -kv[1]["total_ms"])[:3]
                ratio = e.get("in_calls_ratio") if cat == "strata" else None
                crow.append([e["key"] if cat == "hms" else "", cat, _ms(c["statement_ms"]),
                             str(c["calls"]), str(c["connections"]), _ms(c["in_calls_ms"]),
                             f"{ratio:.1f}x" if ratio else "",
                             _ms(c["statement_ms"] - c["in_calls_ms"]),
                             ", ".join(f"{m} x{int(d['calls'])} {d['mean_ms']:.2f}ms"
                                       for m, d in top)])
        _table(["statement", "via", "ms", "calls", "conns", "in calls ms", "ratio",
                "outside ms", "top methods (calls, mean per call)"], crow, (0, 1, 8))
    missed = [s["key"] for s in res["statements"] if s["target"] and not s["ok"]]
    n = sum(1 for s in res["statements"] if s["target"])
    print(f"\ntargets (Strata >= {TARGET_RATIO:g}x faster): {n - len(missed)}/{n} met"
          + (f"; missed: {', '.join(missed)}" if missed else ""))


if __name__ == "__main__":
    sys.exit(main())
