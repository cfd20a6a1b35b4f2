#!/usr/bin/env python3
"""Data fingerprints of many partitions on a real S3 server with added latency: OLD vs NEW.

What sync does to notice data changes is list every partition location recursively and digest
(relative path, size, mtime) of its visible files. This compares, on the same bucket, in the same
run:

* **old**: the code path before the namespace (``catalog/fs/fingerprint.py`` before commit
  2e6dd11): one location after another, a *new* file system per location
  (``pyarrow.fs.FileSystem.from_uri(location)``; ``from_uri`` cannot take an endpoint, so here a
  new ``pyarrow.fs.S3FileSystem(endpoint_override=..., scheme="http", keys, region)`` per
  location), ``get_file_info(FileSelector(path, recursive=True))``, visible files digested with
  :func:`catalog.fs.fingerprint.digest_entries`;
* **new**: ``Namespace(list_parallelism=N)`` with the bucket mounted (one cached
  ``S3FileSystem`` per mount) and ``ns.fingerprints(locations)``, in two variants
  (``--modes``): ``grouped``, as it ships (sibling partition folders come from one recursive
  listing of their parent, 1,000 keys per S3 request; commit de13af3), and ``per-location``
  (``group_listing`` off: one recursive listing per location, ``N`` threads in parallel).

One run:

1. starts moto's S3 server (``tests.support.s3.MotoS3Server``, a subprocess on 127.0.0.1) and
   fills bucket ``bench-fingerprint`` with ``--partitions`` partitions
   ``t/p=<i>/part-<j>.csv`` (``--files-per-partition`` small objects each) by parallel boto3
   puts straight to moto;
2. puts a ``tests.support.fault_proxy.FaultProxy`` in front of moto with ``--latency-ms`` added
   before every request chunk the client sends; everything measured goes through it;
3. one untimed warm-up of every path on a few partitions, then the old path once over all
   partitions and the new path for each mode and ``--parallelism`` (``--repeats`` runs each, one if the
   first run took longer than ``--repeat-limit-s``); every run's digests are checked against the
   old path's (any mismatch is printed and fails the run);
4. per run: wall seconds, partitions/s, S3 requests and connections the proxy counted, CPU
   seconds of moto (``/proc/<pid>/stat``) and of this process; says when moto's CPU is the
   bottleneck (moto is one Python process, so one core at most, and its ListObjectsV2 scans
   every key of the bucket per request);
5. prints a table and writes everything as JSON to ``--out``
   (default ``bench/results/fingerprint.json``).

Moto and the proxy are stopped (by pid / by their stop()) in finally blocks, also on Ctrl-C and
SIGTERM. Run from the repository root: ``python3 bench/bench_fingerprint.py --partitions 500``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Before any AWS SDK loads: never probe instance metadata (tests.support.s3 sets it too).
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

from tests.support.fault_proxy import FaultProxy  # noqa: E402
from tests.support.s3 import MotoS3Server, s3_options  # noqa: E402

BUCKET = "bench-fingerprint"
PREFIX = "t"
MOUNT = "/bench"
#: moto CPU / wall above this fraction of one core: moto is (close to) the bottleneck.
MOTO_BOUND = 0.7
TARGET = 10.0
_TICK = os.sysconf("SC_CLK_TCK")
#: New-path variants: label, Namespace keyword arguments besides list_parallelism.
MODES: dict[str, tuple[str, dict[str, int]]] = {
    # As it ships: siblings (>= group_listing of them under one parent) come from one recursive
    # listing of their parent, 1,000 keys per S3 request; the rest one listing each, in parallel.
    "grouped": ("new (Namespace.fingerprints)", {}),
    # One listing per location, in list_parallelism threads (grouping switched off).
    "per-location": ("new, one listing per location", {"group_listing": 10**9}),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--partitions", type=int, default=10_000)
    ap.add_argument("--files-per-partition", type=int, default=1)
    ap.add_argument("--latency-ms", type=float, default=20.0,
                    help="added by the proxy before every request chunk (default 20)")
    ap.add_argument("--parallelism", type=int, nargs="+", default=[16, 32, 64],
                    help="Namespace(list_parallelism=N) values of the new path")
    ap.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES),
                    help="new-path variants (default both): grouped = Namespace.fingerprints "
                         "as it ships; per-location = one listing per location")
    ap.add_argument("--repeats", type=int, default=3, help="runs per parallelism (median)")
    ap.add_argument("--repeat-limit-s", type=float, default=120.0,
                    help="only one run of a parallelism whose first run took longer")
    ap.add_argument("--populate-threads", type=int, default=32)
    ap.add_argument("--work-dir", type=Path, default=None,
                    help="moto's directory (log); a temporary one, removed, by default")
    ap.add_argument("--keep-data", action="store_true",
                    help="keep the work dir (moto log) after the run; moto keeps objects in "
                         "memory only, so every run populates the bucket again")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "fingerprint.json")
    args = ap.parse_args(argv)
    if args.partitions < 1 or args.files_per_partition < 1 or args.repeats < 1:
        ap.error("--partitions, --files-per-partition and --repeats must be >= 1")
    if any(p < 1 for p in args.parallelism):
        ap.error("--parallelism values must be >= 1")
    return args


# -- measuring -----------------------------------------------------------------------------------


def proc_cpu_s(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads), seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # fields 14 and 15 of stat(5)


def self_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


class Meter:
    """Wall time, proxy counters and CPU of moto and of this process around one run."""

    def __init__(self, proxy: FaultProxy, moto_pid: int) -> None:
        self.proxy, self.moto_pid = proxy, moto_pid

    def run(self, fn: Callable[[], dict[str, str | None]]) -> tuple[dict[str, str | None],
                                                                   dict[str, float]]:
        r0, c0 = self.proxy.requests, self.proxy.connections
        m0, s0 = proc_cpu_s(self.moto_pid), self_cpu_s()
        t0 = time.perf_counter()
        out = fn()
        wall = time.perf_counter() - t0
        m1, s1 = proc_cpu_s(self.moto_pid), self_cpu_s()
        return out, {
            "seconds": wall,
            "requests": self.proxy.requests - r0,
            "connections": self.proxy.connections - c0,
            "moto_cpu_s": m1 - m0,
            "bench_cpu_s": s1 - s0,
        }


# -- the two code paths --------------------------------------------------------------------------


def old_fingerprints(locations: list[str], endpoint: str, access_key: str, secret_key: str,
                     region: str, progress: int = 0) -> dict[str, str | None]:
    """The pre-namespace path: sequential, a new S3 file system per location.

    Verbatim in spirit of ``catalog/fs/fingerprint.py:_pyarrow_entries`` before 2e6dd11, with
    ``FileSystem.from_uri(location)`` replaced by the ``S3FileSystem`` it would have built,
    plus the endpoint and keys (which from_uri cannot take).
    """
    from pyarrow import fs as pafs

    from catalog.fs.fingerprint import digest_entries, hidden

    scheme, _, host = endpoint.partition("://")
    out: dict[str, str | None] = {}
    for location in locations:
        filesystem = pafs.S3FileSystem(endpoint_override=host, scheme=scheme,
                                       access_key=access_key, secret_key=secret_key,
                                       region=region)
        path = location.split("://", 1)[1]
        infos = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
        entries = []
        for info in infos:
            rel = info.path[len(path):].lstrip("/")
            if info.type == pafs.FileType.File and not any(hidden(p) for p in rel.split("/")):
                mtime = info.mtime_ns if info.mtime_ns is not None else 0
                entries.append((rel, info.size or 0, mtime))
        out[location] = digest_entries(entries)
        if progress and len(out) % progress == 0 and len(out) < len(locations):
            log(f"  old: {len(out):,} / {len(locations):,}")
    return out


def new_namespace(parallelism: int, options: dict[str, str], mode: str = "grouped") -> Any:
    import inspect

    from catalog.fs.namespace import Namespace

    kwargs = dict(MODES[mode][1])
    if kwargs and not all(k in inspect.signature(Namespace).parameters for k in kwargs):
        raise SystemExit(f"--modes {mode}: Namespace has no {', '.join(kwargs)} parameter")
    ns = Namespace(list_parallelism=parallelism, **kwargs)
    ns.mount(MOUNT, f"s3://{BUCKET}", options)
    return ns


# -- setup ---------------------------------------------------------------------------------------


def populate(s3: MotoS3Server, partitions: int, files: int, threads: int) -> list[str]:
    """Bucket with ``partitions`` x ``files`` small CSV objects; the partition locations."""
    s3.create_bucket(BUCKET)
    client = s3.client(max_pool_connections=max(threads, 10))
    keys = [f"{PREFIX}/p={i}/part-{j}.csv" for i in range(partitions) for j in range(files)]

    def put(key: str) -> None:
        client.put_object(Bucket=BUCKET, Key=key, Body=f"{key},1,2\n".encode())

    t0 = time.monotonic()
    done = 0
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="put") as pool:
        for _ in pool.map(put, keys):
            done += 1
            if done % 5000 == 0 and done < len(keys):
                log(f"  {done:,} / {len(keys):,} objects")
    log(f"populated s3://{BUCKET}/{PREFIX}/: {partitions:,} partitions x {files} file(s) = "
        f"{len(keys):,} objects in {time.monotonic() - t0:.1f}s")
    return [f"s3://{BUCKET}/{PREFIX}/p={i}" for i in range(partitions)]


def environment(s3: MotoS3Server) -> dict[str, Any]:
    import boto3
    import moto
    import pyarrow

    info: dict[str, Any] = {
        "python": sys.version.split()[0], "platform": platform.platform(),
        "nproc": os.cpu_count(), "affinity_cpus": len(os.sched_getaffinity(0)),
        "loadavg_start": os.getloadavg(),
        "pyarrow": pyarrow.__version__, "moto": moto.__version__, "boto3": boto3.__version__,
        "pyarrow_io_thread_count": pyarrow.io_thread_count(),
        "pyarrow_cpu_count": pyarrow.cpu_count(),
        "moto_pid": s3.pid,
    }
    try:
        info["memtotal"] = " ".join(Path("/proc/meminfo").read_text().split("\n")[0].split()[1:])
    except OSError:
        pass
    return info


def check(name: str, got: dict[str, str | None], want: dict[str, str | None],
          files: int) -> list[str]:
    """Mismatches of ``got`` vs ``want`` (and digests that do not count ``files`` files)."""
    bad = []
    for loc, digest in want.items():
        if got.get(loc) != digest:
            bad.append(f"{name}: {loc}: {got.get(loc)!r} != old {digest!r}")
        elif not str(digest).startswith(f"{files}:"):
            bad.append(f"{name}: {loc}: digest {digest!r} does not count {files} file(s)")
    for loc in got.keys() - want.keys():
        bad.append(f"{name}: unexpected location {loc}")
    return bad


def summarize(run: dict[str, float], partitions: int) -> dict[str, float]:
    s = run["seconds"]
    return {
        **run,
        "partitions_per_s": partitions / s,
        "requests_per_partition": run["requests"] / partitions,
        "connections_per_partition": run["connections"] / partitions,
        "moto_cpu_ms_per_request": 1000 * run["moto_cpu_s"] / max(1, run["requests"]),
        "moto_core_share": run["moto_cpu_s"] / s,
        "bench_core_share": run["bench_cpu_s"] / s,
    }


# -- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)

    tmp = None
    work_dir = args.work_dir
    if work_dir is None:
        tmp = tempfile.mkdtemp(prefix="strata-bench-fp-")
        work_dir = Path(tmp)
    work_dir.mkdir(parents=True, exist_ok=True)

    n, files = args.partitions, args.files_per_partition
    latency = args.latency_ms / 1000.0
    res: dict[str, Any] = {
        "config": {"partitions": n, "files_per_partition": files,
                   "latency_ms": args.latency_ms, "parallelism": args.parallelism,
                   "repeats": args.repeats, "modes": args.modes, "repeat_limit_s": args.repeat_limit_s,
                   "bucket": BUCKET, "layout": f"{PREFIX}/p=<i>/part-<j>.csv"},
    }
    s3 = MotoS3Server(work_dir)
    proxy: FaultProxy | None = None
    namespaces: list[Any] = []
    failures: list[str] = []
    try:
        t0 = time.monotonic()
        s3.start()
        assert s3.pid is not None
        log(f"moto S3 server up on {s3.endpoint} (pid {s3.pid}, {time.monotonic() - t0:.1f}s)")
        res["environment"] = env = environment(s3)
        log(f"machine: {env['nproc']} CPUs, load {' '.join(f'{x:.1f}' for x in env['loadavg_start'])}; "
            f"pyarrow {env['pyarrow']} (io threads {env['pyarrow_io_thread_count']}), "
            f"moto {env['moto']}")
        m0 = proc_cpu_s(s3.pid)
        t0 = time.monotonic()
        locations = populate(s3, n, files, args.populate_threads)
        res["populate"] = {"seconds": time.monotonic() - t0,
                           "moto_cpu_s": proc_cpu_s(s3.pid) - m0}

        proxy = FaultProxy(s3.host, s3.port).start()
        proxy.latency_s = latency
        log(f"fault proxy on {proxy.endpoint} -> {s3.endpoint}, +{args.latency_ms:g} ms "
            "before every request chunk")
        meter = Meter(proxy, s3.pid)
        keys = (s3.access_key, s3.secret_key, s3.region)
        options = s3_options(proxy.endpoint, *keys)

        # Untimed warm-up: the AWS SDK's one-time init, moto's first requests, both paths once.
        few = locations[: min(20, n)]
        t0 = time.perf_counter()
        warm_old = old_fingerprints(few, proxy.endpoint, *keys)
        per_location = (time.perf_counter() - t0) / len(few)
        for mode in args.modes:
            ns = new_namespace(4, options, mode)
            failures += check(f"warm-up {mode}", ns.fingerprints(few), warm_old, files)
            ns.close()
        if failures:
            raise AssertionError("\n".join(failures))

        # The old path, once over everything.
        log(f"old path: sequential, new S3FileSystem per location, {n:,} locations "
            f"(expect ~{n * per_location:.0f}s from the warm-up) ...")
        old, run = meter.run(lambda: old_fingerprints(locations, proxy.endpoint, *keys,
                                                      progress=max(1000, n // 10)))
        old_row = summarize(run, n)
        res["old"] = old_row
        log(f"  old: {old_row['seconds']:.1f}s, {old_row['partitions_per_s']:.0f} partitions/s, "
            f"{old_row['requests_per_partition']:.2f} requests/partition, moto CPU "
            f"{old_row['moto_cpu_s']:.1f}s ({old_row['moto_cpu_ms_per_request']:.2f} ms/request)")

        # The new path per mode and parallelism.
        res["new"] = []
        for mode in args.modes:
            for par in args.parallelism:
                ns = new_namespace(par, options, mode)  # mount (one request) not timed
                namespaces.append(ns)
                runs = []
                for i in range(args.repeats):
                    got, run = meter.run(lambda: ns.fingerprints(locations))
                    bad = check(f"{mode} p={par} run {i + 1}", got, old, files)
                    failures += bad
                    row = summarize(run, n)
                    row["mismatches"] = len(bad)
                    runs.append(row)
                    log(f"  {mode} p={par} run {i + 1}: {row['seconds']:.2f}s, "
                        f"{row['partitions_per_s']:.0f} partitions/s, "
                        f"{row['requests']:,} requests ({row['requests_per_partition']:.3f}"
                        f"/partition), moto CPU {row['moto_cpu_s']:.1f}s = "
                        f"{row['moto_core_share']:.0%} of a core"
                        + (f", {len(bad)} MISMATCHES" if bad else ""))
                    if run["seconds"] > args.repeat_limit_s:
                        break
                med = {k: statistics.median(r[k] for r in runs)
                       for k in runs[0] if isinstance(runs[0][k], (int, float))}
                med["ratio_vs_old"] = old_row["seconds"] / med["seconds"]
                res["new"].append({"mode": mode, "label": MODES[mode][0], "parallelism": par,
                                   "runs": runs, "median": med})
                ns.close()
                namespaces.remove(ns)
    finally:
        for ns in namespaces:
            ns.close()
        if proxy is not None:
            proxy.stop()
        s3.stop()
        if tmp is not None and not args.keep_data:
            shutil.rmtree(tmp, ignore_errors=True)
    res["environment"]["loadavg_end"] = os.getloadavg()

    # -- report --------------------------------------------------------------------------------
    old_row = res["old"]
    summary: dict[str, Any] = {"target_ratio": TARGET, "mismatches": len(failures)}
    for mode in args.modes:
        rows_m = [r for r in res["new"] if r["mode"] == mode]
        best_m = max(rows_m, key=lambda r: r["median"]["ratio_vs_old"])
        summary[mode] = {
            "best_parallelism": best_m["parallelism"],
            "best_ratio": best_m["median"]["ratio_vs_old"],
            "target_met": best_m["median"]["ratio_vs_old"] >= TARGET,
            "moto_bound_parallelism": [r["parallelism"] for r in rows_m
                                       if r["median"]["moto_core_share"] >= MOTO_BOUND],
        }
    res["summary"] = summary
    print()
    print(f"fingerprints of {n:,} partitions x {files} file(s), +{args.latency_ms:g} ms per "
          f"request, {res['environment']['nproc']} CPUs (new: median of up to "
          f"{args.repeats} runs)")
    head = ("path", "parallelism", "seconds", "partitions/s", "ratio vs old", "requests",
            "req/part", "conn/part", "moto CPU s", "moto ms/req", "moto core", "bench core")

    def cells(label: str, par: str, m: dict[str, float], ratio: str) -> tuple[str, ...]:
        return (label, par, f"{m['seconds']:.2f}", f"{m['partitions_per_s']:,.0f}", ratio,
                f"{m['requests']:,.0f}", f"{m['requests_per_partition']:.3f}",
                f"{m['connections_per_partition']:.3f}", f"{m['moto_cpu_s']:.1f}",
                f"{m['moto_cpu_ms_per_request']:.2f}", f"{m['moto_core_share']:.0%}",
                f"{m['bench_core_share']:.0%}")

    rows = [cells("old (sequential, new fs each)", "1", old_row, "1.0x")]
    rows += [cells(r["label"], str(r["parallelism"]), r["median"],
                   f"{r['median']['ratio_vs_old']:.1f}x") for r in res["new"]]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    for row in [head, tuple("-" * w for w in widths), *rows]:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths))))
    print()
    for mode in args.modes:
        sm = summary[mode]
        verdict = "ok" if sm["target_met"] else "MISSED"
        print(f"{MODES[mode][0]}: best {sm['best_ratio']:.1f}x the old path (parallelism "
              f"{sm['best_parallelism']}); target >= {TARGET:g}x: {verdict}")
        if sm["moto_bound_parallelism"]:
            print(f"  moto-bound: moto used >= {MOTO_BOUND:.0%} of a core during the runs with "
                  f"parallelism {', '.join(map(str, sm['moto_bound_parallelism']))}: those runs "
                  "measure moto's CPU, not the listing (real S3 has no such ceiling).")
    print(f"moto: {old_row['moto_cpu_ms_per_request']:.2f} ms CPU per request on the old run "
          f"({old_row['moto_cpu_s']:.1f}s for {old_row['requests']:,} requests); it is one "
          "Python process (GIL: one core at most) and its ListObjectsV2 scans every key of "
          "the bucket per request, so N requests cost it ~N x that however many run at once.")
    if any(r["median"]["connections_per_partition"] > 0.9 for r in res["new"]):
        print("connections: the per-location runs opened one TCP connection per request too: "
              "moto's server (werkzeug) answers every request with 'Connection: close', so "
              "the cached S3FileSystem cannot keep connections alive here.")
    if failures:
        print(f"\n{len(failures)} DIGEST MISMATCHES:")
        for f in failures[:50]:
            print("  " + f)
    else:
        print(f"digests: every run of the new path matched the old path on all {n:,} locations")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    log(f"results written to {args.out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
