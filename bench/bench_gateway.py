#!/usr/bin/env python3
"""GET throughput of the S3 gateway: warm (from the block store) vs moto vs the local disk, and
cold vs warm from a WAN-like remote under storage.

One run, everything on 127.0.0.1, boto3 as the client (and a lean client for comparison):

1. writes the objects into a local folder: one ``--big-mib`` (64) MiB object and
   ``--small-count`` objects of ``--small-kib`` (100) KiB, random bytes;
2. starts moto's S3 server (``tests.support.s3.MotoS3Server``) and puts the same bytes into
   bucket ``bench-gw``; a ``tests.support.fault_proxy.FaultProxy`` in front of it adds
   ``--latency-ms`` (20) before every request chunk a client sends (the WAN-like store);
3. starts Strata in its own process (``python -m api.cli serve --s3-port ...``, signed requests
   only, the block store one ``MEM`` tier in ``/dev/shm``), mounts the local folder at
   ``/local`` and the bucket, through the proxy, at ``/wan`` (over REST);
4. measures, each case ``--repeats`` times (the median is reported):

   * **local**: Python reading the files from the page cache (4 MiB reads; open/read/close per
     small file): the limit;
   * **boto3 ceiling**: boto3 GETting the objects from a bare socket server that holds them
     in memory: what the client itself can take;
   * **moto**: boto3 GETs straight from moto (no proxy): the peer;
   * **gateway cold** (``/wan``): the first GETs of the objects, every block fetched from moto
     through the proxy and cached (the cache is freed over REST before every repeat);
   * **gateway warm** (``/wan`` and ``/local``): GETs whose bytes come from the block store
     (the lookup of a ``/wan`` object still asks moto, through the proxy: see the note printed);

   the big object: sequential GETs streamed in 4 MiB chunks (MB/s); the small ones: sequential
   GETs from one client (GETs/s), and ``--clients`` client processes at once for ``--seconds``;
   and again with the **lean client** (``LeanClient``: presigned GETs on one raw keep-alive
   socket, bodies received into one reused buffer), for the bare server, moto and the warm
   gateway: the servers' own rates with boto3's per-request cost (~4 ms of client CPU per GET
   here) out of the way;
5. reads the CPU time of the Strata process (``/proc/<pid>/stat``) around every gateway case:
   CPU seconds per GB served;
6. prints the ratios against the targets (64 MiB warm >= 1.5x moto and within 2x of the local
   read; 100 KiB warm GETs/s >= 2x moto; warm >= 5x cold from the WAN-like store) and writes
   everything to ``--out`` (default ``bench/results/gateway.json``).

``--profile`` also samples the Strata process with ``py-spy --gil`` during a second pass of every
warm gateway case (not timed): the functions where its threads spend their Python CPU, printed and
kept in the JSON (``profiles``).

Every process started here (moto, Strata, the client processes) is stopped by pid in finally
blocks, also on Ctrl-C and SIGTERM. Run from the repository root:
``python3 bench/bench_gateway.py``.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

from tests.support.fault_proxy import FaultProxy  # noqa: E402
from tests.support.ports import LOOPBACK, free_port, log_tail, stop_process  # noqa: E402
from tests.support.s3 import MotoS3Server, s3_client, s3_options  # noqa: E402

BUCKET = "bench-gw"
BIG = "big.bin"
MiB = 1024 * 1024
#: Client read size (boto3 iter_chunks, local reads): boto3 reads faster in larger pieces.
READ_CHUNK = 4 * MiB
#: The client's own limit: a bare socket server sending a file's bytes from memory as the
#: answer to every request on a connection (keep-alive), no parsing beyond the blank line.
RAW_SERVER = r"""
import socket, sys, threading
answers = {}
for name, path in (("big", sys.argv[2]), ("small", sys.argv[3])):
    body = open(path, "rb").read()
    answers[name] = (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                     b"ETag: \"x\"\r\nLast-Modified: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body), body)
def serve(conn):
    buf = b""
    try:
        while data := conn.recv(65536):
            buf += data
            while b"\r\n\r\n" in buf:
                request, buf = buf.split(b"\r\n\r\n", 1)
                head, body = answers["small" if b"/small/" in request.split(b"\r\n")[0]
                                     else "big"]
                conn.sendall(head)
                conn.sendall(body)
    except OSError:
        pass
    conn.close()
srv = socket.create_server(("127.0.0.1", int(sys.argv[1])))
while True:
    threading.Thread(target=serve, args=(srv.accept()[0],), daemon=True).start()
"""
GW_ACCESS, GW_SECRET = "BENCHGATEWAYKEY", "bench-gateway-secret-" + "x" * 16
TOKEN = "bench-gateway-token-" + secrets.token_hex(8)
_TICK = os.sysconf("SC_CLK_TCK")
TARGETS = {"big_warm_vs_moto": 1.5, "big_warm_vs_local": 0.5, "small_warm_vs_moto": 2.0,
           "warm_vs_cold": 5.0}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--big-mib", type=int, default=64)
    ap.add_argument("--small-kib", type=int, default=100)
    ap.add_argument("--small-count", type=int, default=200, help="small objects (default 200)")
    ap.add_argument("--repeats", type=int, default=5, help="runs per case (median)")
    ap.add_argument("--clients", type=int, default=2,
                    help="client processes of the concurrent small-GET case (0: skip it)")
    ap.add_argument("--seconds", type=float, default=5.0,
                    help="duration of the concurrent small-GET case")
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--cache-dir", type=Path, default=None,
                    help="the MEM tier's directory (default: under /dev/shm, else the work dir)")
    ap.add_argument("--profile", action="store_true",
                    help="also sample the Strata process with py-spy --gil during the warm "
                         "cases (a second, untimed pass)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "gateway.json")
    args = ap.parse_args(argv)
    if min(args.big_mib, args.small_kib, args.small_count, args.repeats) < 1:
        ap.error("sizes, --small-count and --repeats must be >= 1")
    return args


# -- measuring -----------------------------------------------------------------------------------


def proc_cpu_s(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads), seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def get_all(client: Any, bucket: str, key: str) -> int:
    """One boto3 GET, the body streamed in READ_CHUNK pieces and dropped; the bytes read."""
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    n = 0
    for chunk in body.iter_chunks(READ_CHUNK):
        n += len(chunk)
    return n


def read_local(path: Path) -> int:
    n = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            data = f.read(READ_CHUNK)
            if not data:
                return n
            n += len(data)


#: The lean client's receive buffer, reused: 64 KiB (here, larger reused buffers receive and
#: read at a third of the speed).
_LEAN_BUFFER = bytearray(64 * 1024)


class LeanClient:
    """GETs of presigned URLs on one keep-alive connection, each body received into one reused
    buffer (``recv_into``): a client that costs next to nothing, so that the servers' own rates
    show with boto3's cost (its request pipeline, its copies) out of the way."""

    def __init__(self, endpoint: str) -> None:
        self.netloc = endpoint.split("://", 1)[1].rstrip("/")
        host, _, port = self.netloc.rpartition(":")
        self.address = (host, int(port))
        self.sock: socket.socket | None = None
        self.view = memoryview(_LEAN_BUFFER)

    def get(self, url: str) -> int:
        """GET ``url`` (presigned, on this endpoint); the body's length. Anything but a 200 with
        a Content-Length is an error."""
        if self.sock is None:
            self.sock = socket.create_connection(self.address, timeout=60)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        target = url.split(self.netloc, 1)[1]
        self.sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {self.netloc}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            head += data
        head, _, rest = head.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        if b" 200 " not in lines[0] + b" ":
            raise RuntimeError(f"lean GET {target[:80]}: {lines[0]!r}")
        length = next(int(v) for k, _, v in (ln.partition(b":") for ln in lines[1:])
                      if k.strip().lower() == b"content-length")
        n = len(rest)
        while n < length:
            got = self.sock.recv_into(self.view[:min(len(self.view), length - n)])
            if not got:
                raise ConnectionError("the server closed the connection mid-body")
            n += got
        if any(ln.lower().replace(b" ", b"") == b"connection:close" for ln in lines[1:]):
            self.close()  # moto's server (werkzeug) answers one request per connection
        return length

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class Case:
    """Runs of one case: wall seconds, bytes and GETs per run, server CPU if a pid is given."""

    def __init__(self, name: str, pid: int | None = None) -> None:
        self.name, self.pid = name, pid
        self.runs: list[dict[str, float]] = []

    def run(self, fn: Callable[[], tuple[int, int]]) -> dict[str, float]:
        c0 = proc_cpu_s(self.pid) if self.pid else 0.0
        t0 = time.perf_counter()
        nbytes, gets = fn()
        wall = time.perf_counter() - t0
        row = {"seconds": wall, "bytes": nbytes, "gets": gets, "mb_per_s": nbytes / wall / 1e6,
               "gets_per_s": gets / wall}
        if self.pid:
            cpu = proc_cpu_s(self.pid) - c0
            row["server_cpu_s"] = cpu
            row["server_cpu_s_per_gb"] = cpu / (nbytes / 1e9) if nbytes else 0.0
        self.runs.append(row)
        return row

    def median(self) -> dict[str, float]:
        keys = self.runs[0].keys()
        return {k: statistics.median(r[k] for r in self.runs) for k in keys}

    def out(self) -> dict[str, Any]:
        return {"name": self.name, "runs": self.runs, "median": self.median()}


def _worker(endpoint: str, access: str, secret: str, bucket: str, keys: list[str],
            start_at: float, seconds: float) -> tuple[int, int, float]:
    """A client process: GETs of ``keys`` round robin for ``seconds`` from ``start_at``."""
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    client = s3_client(endpoint, access, secret)
    get_all(client, bucket, keys[0])  # connection and botocore warm-up, untimed
    time.sleep(max(0.0, start_at - time.time()))
    t0 = time.perf_counter()
    n = total = 0
    while time.perf_counter() - t0 < seconds:
        total += get_all(client, bucket, keys[n % len(keys)])
        n += 1
    return n, total, time.perf_counter() - t0


def concurrent_gets(pool: Any, clients: int, endpoint: str, access: str, secret: str,
                    bucket: str, keys: list[str], seconds: float, pid: int | None
                    ) -> dict[str, float]:
    """``clients`` processes GETting ``keys`` at once; GETs/s and the server's CPU."""
    start_at = time.time() + 3.0
    futures = [pool.apply_async(_worker, (endpoint, access, secret, bucket,
                                          keys[i::clients] or keys, start_at, seconds))
               for i in range(clients)]
    time.sleep(max(0.0, start_at - time.time()))
    c0 = proc_cpu_s(pid) if pid else 0.0
    results = [f.get(timeout=seconds + 120) for f in futures]
    cpu = proc_cpu_s(pid) - c0 if pid else 0.0
    gets, nbytes = sum(r[0] for r in results), sum(r[1] for r in results)
    wall = max(r[2] for r in results)
    row = {"clients": clients, "seconds": wall, "gets": gets, "bytes": nbytes,
           "gets_per_s": gets / wall, "mb_per_s": nbytes / wall / 1e6}
    if pid:
        row["server_cpu_s"] = cpu
        row["server_cpu_s_per_gb"] = cpu / (nbytes / 1e9) if nbytes else 0.0
    return row


# -- setup ---------------------------------------------------------------------------------------


def make_objects(folder: Path, big_mib: int, small_kib: int, count: int) -> list[str]:
    """The big object and the small ones in ``folder``; the small keys."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / BIG, "wb") as f:
        for _ in range(big_mib):
            f.write(os.urandom(MiB))
    keys = [f"small/obj-{i:05d}.bin" for i in range(count)]
    (folder / "small").mkdir(exist_ok=True)
    for key in keys:
        (folder / key).write_bytes(os.urandom(small_kib * 1024))
    return keys


class Strata:
    """``python -m api.cli serve`` as a subprocess (REST, Thrift, S3 gateway) until stop()."""

    def __init__(self, work: Path, cache_dir: Path, quota: int) -> None:
        self.data_dir = work / "strata-data"
        self.log_file = work / "strata.log"
        self.rest_port, self.s3_port = free_port(), free_port()
        self.thrift_port = free_port()
        tiers = {"block_size": "64MiB",
                 "tiers": [{"alias": "MEM", "dirs": [{"path": str(cache_dir), "quota": quota}]}]}
        self.env = {**os.environ, "CATALOG_CACHE_TIERS": json.dumps(tiers),
                    "CATALOG_S3_ACCESS_KEY": GW_ACCESS, "CATALOG_S3_SECRET_KEY": GW_SECRET,
                    "CATALOG_API_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.s3_port}"

    @property
    def rest(self) -> str:
        return f"http://{LOOPBACK}:{self.rest_port}"

    def start(self, timeout: float = 60.0) -> Strata:
        cmd = [sys.executable, "-m", "api.cli", "serve", "--data-dir", str(self.data_dir),
               "--host", LOOPBACK, "--rest-port", str(self.rest_port),
               "--thrift-port", str(self.thrift_port), "--trino-thrift-port", "0",
               "--s3-port", str(self.s3_port), "--sync-interval", "0"]
        with open(self.log_file, "wb") as logf:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=logf,
                                         stderr=subprocess.STDOUT)
        import httpx

        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Strata exited ({self.proc.returncode}):\n"
                                   f"{log_tail(self.log_file)}")
            try:
                if httpx.get(f"{self.rest}/health", timeout=2).status_code == 200:
                    st = httpx.get(f"{self.rest}/api/v1/status", timeout=5).json()
                    if any(li["name"] == "s3" for li in st["listeners"]):
                        return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"Strata did not start:\n{log_tail(self.log_file)}")
            time.sleep(0.2)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        stop_process(self.proc)


def environment() -> dict[str, Any]:
    import boto3
    import moto

    info: dict[str, Any] = {
        "python": sys.version.split()[0], "platform": platform.platform(),
        "nproc": os.cpu_count(), "affinity_cpus": len(os.sched_getaffinity(0)),
        "loadavg_start": os.getloadavg(), "moto": moto.__version__, "boto3": boto3.__version__,
    }
    for mod in ("uvicorn", "starlette", "h11", "httptools", "uvloop"):
        try:
            info[mod] = __import__(mod).__version__
        except (ImportError, AttributeError):
            info[mod] = None
    return info


# -- profiling -----------------------------------------------------------------------------------


class Profiler:
    """``py-spy record --gil`` of the Strata process during one case (``--profile``): collapsed
    stacks in ``<folder>/profile.<case>.raw``, summarised by :func:`summarize_stacks`."""

    def __init__(self, pid: int, folder: Path, name: str) -> None:
        self.raw = folder / f"profile.{name.replace(' ', '-')}.raw"
        exe = shutil.which("py-spy")
        if exe is None:
            raise SystemExit("--profile needs py-spy (pip install py-spy)")
        self.proc = subprocess.Popen([exe, "record", "--pid", str(pid), "--rate", "250", "--gil",
                                      "--format", "raw", "--output", str(self.raw)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # attached

    def stop(self) -> str:
        os.kill(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            stop_process(self.proc)
        return summarize_stacks(self.raw)


def summarize_stacks(raw: Path, top: int = 30) -> str:
    """Self and inclusive samples per function of py-spy's collapsed stacks."""
    from collections import Counter

    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    if not raw.exists():
        return "(no samples)"
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1]
                  + ")" for f in stack.split(";")]
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    lines = [f"{total} samples holding the GIL (Python CPU; I/O and waits not shown)", "",
             "self:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines += ["", "inclusive:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in incl.most_common(top)]
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    work = Path(tempfile.mkdtemp(prefix="strata-bench-gw-"))
    shm = Path("/dev/shm")
    cache_dir = args.cache_dir or ((shm if shm.is_dir() else work) /
                                   f"strata-bench-gw-{os.getpid()}")
    folder = work / "lake"
    big_bytes = args.big_mib * MiB
    quota = 2 * (big_bytes + args.small_count * args.small_kib * 1024) + 64 * MiB
    res: dict[str, Any] = {"config": {
        "big_mib": args.big_mib, "small_kib": args.small_kib, "small_count": args.small_count,
        "repeats": args.repeats, "clients": args.clients, "seconds": args.seconds,
        "latency_ms": args.latency_ms, "read_chunk": READ_CHUNK, "cache_dir": str(cache_dir),
        "cache_quota": quota, "block_size": 64 * MiB}, "environment": environment()}
    s3 = MotoS3Server(work / "moto")
    proxy: FaultProxy | None = None
    strata: Strata | None = None
    pool: Any = None
    try:
        t0 = time.monotonic()
        small = make_objects(folder, args.big_mib, args.small_kib, args.small_count)
        log(f"objects: 1 x {args.big_mib} MiB, {args.small_count} x {args.small_kib} KiB in "
            f"{folder} ({time.monotonic() - t0:.1f}s)")
        s3.start()
        assert s3.pid is not None
        moto = s3.client()
        s3.create_bucket(BUCKET)
        for key in [BIG, *small]:
            moto.upload_file(str(folder / key), BUCKET, key)
        log(f"moto on {s3.endpoint} (pid {s3.pid}), bucket {BUCKET} filled")
        proxy = FaultProxy(s3.host, s3.port).start()
        proxy.latency_s = args.latency_ms / 1000
        strata = Strata(work, cache_dir, quota).start()
        log(f"Strata pid {strata.pid}: REST {strata.rest}, S3 {strata.endpoint}, cache "
            f"{cache_dir} ({quota / MiB:.0f} MiB)")
        from api.client import CatalogClient

        strata_pid = strata.pid

        rest = CatalogClient(strata.rest, token=TOKEN)
        rest.mount("/local", f"file://{folder}")
        rest.mount("/wan", f"s3://{BUCKET}",
                   {**s3_options(proxy.endpoint, s3.access_key, s3.secret_key, s3.region),
                    "readonly": "true"})
        gw = s3_client(strata.endpoint, GW_ACCESS, GW_SECRET)
        # botocore and connection warm-up on every endpoint (one small GET each, untimed)
        for client, bucket in ((moto, BUCKET), (gw, "local")):
            get_all(client, bucket, small[0])
        assert gw.get_object(Bucket="wan", Key=BIG)["ContentLength"] == big_bytes
        rest.cache_action("free", "/wan")
        expected = {BIG: big_bytes, **{k: args.small_kib * 1024 for k in small}}

        def big(client: Any, bucket: str) -> Callable[[], tuple[int, int]]:
            def run() -> tuple[int, int]:
                n = get_all(client, bucket, BIG)
                assert n == big_bytes, (bucket, n)
                return n, 1
            return run

        def smalls(client: Any, bucket: str) -> Callable[[], tuple[int, int]]:
            def run() -> tuple[int, int]:
                n = sum(get_all(client, bucket, k) for k in small)
                assert n == args.small_count * args.small_kib * 1024, (bucket, n)
                return n, len(small)
            return run

        cases: dict[str, Case] = {}

        profiles: dict[str, str] = {}

        def measure(name: str, fn: Callable[[], tuple[int, int]], pid: int | None = None,
                    before: Callable[[], None] | None = None, repeats: int = args.repeats
                    ) -> dict[str, float]:
            case = cases.setdefault(name, Case(name, pid))
            for _ in range(repeats):
                if before is not None:
                    before()
                case.run(fn)
            if args.profile and pid is not None and pid == strata_pid and "warm" in name:
                prof = Profiler(pid, work, name)
                for _ in range(repeats):
                    fn()
                profiles[name] = prof.stop()
            m = case.median()
            log(f"  {name}: {m['mb_per_s']:,.0f} MB/s, {m['gets_per_s']:,.1f} GETs/s"
                + (f", server {m['server_cpu_s_per_gb']:.2f} CPU s/GB"
                   if "server_cpu_s_per_gb" in m else ""))
            return m

        def free_wan() -> None:
            rest.cache_action("free", "/wan")

        def lean_big(lean: LeanClient, url: str) -> Callable[[], tuple[int, int]]:
            def run() -> tuple[int, int]:
                n = lean.get(url)
                assert n == big_bytes, n
                return n, 1
            return run

        def lean_smalls(lean: LeanClient, urls: list[str]) -> Callable[[], tuple[int, int]]:
            def run() -> tuple[int, int]:
                n = sum(lean.get(u) for u in urls)
                assert n == args.small_count * args.small_kib * 1024, n
                return n, len(urls)
            return run

        def presigned(endpoint: str, access: str, secret: str, bucket: str, keys: list[str]
                      ) -> list[str]:
            import boto3
            from botocore.config import Config

            signer = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access,
                                  aws_secret_access_key=secret, region_name=s3.region,
                                  config=Config(signature_version="s3v4",
                                                s3={"addressing_style": "path"}))
            return [signer.generate_presigned_url("get_object", Params={
                "Bucket": bucket, "Key": k}, ExpiresIn=3600) for k in keys]

        log("the limit: local reads from the page cache")
        measure("local big", lambda: (read_local(folder / BIG), 1))
        measure("local small", lambda: (sum(read_local(folder / k) for k in small), len(small)))
        log("the clients' ceilings: a bare socket server (bytes in memory)")
        raw_port = free_port()
        raw = subprocess.Popen([sys.executable, "-c", RAW_SERVER, str(raw_port),
                                str(folder / BIG), str(folder / small[0])])
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    socket.create_connection((LOOPBACK, raw_port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.1)
            ceiling = s3_client(f"http://{LOOPBACK}:{raw_port}")
            get_all(ceiling, BUCKET, BIG)
            measure("boto3 ceiling big", big(ceiling, BUCKET))
            measure("boto3 ceiling small", smalls(ceiling, BUCKET))
            raw_endpoint = f"http://{LOOPBACK}:{raw_port}"
            lean = LeanClient(raw_endpoint)
            measure("lean ceiling big", lean_big(lean, presigned(
                raw_endpoint, GW_ACCESS, GW_SECRET, BUCKET, [BIG])[0]))
            measure("lean ceiling small", lean_smalls(lean, presigned(
                raw_endpoint, GW_ACCESS, GW_SECRET, BUCKET, small)))
            lean.close()
        finally:
            stop_process(raw)
        log("the peer: moto")
        measure("moto big", big(moto, BUCKET), s3.pid)
        measure("moto small", smalls(moto, BUCKET), s3.pid)
        lean = LeanClient(s3.endpoint)
        moto_urls = presigned(s3.endpoint, s3.access_key, s3.secret_key, BUCKET, [BIG, *small])
        measure("lean moto big", lean_big(lean, moto_urls[0]), s3.pid)
        measure("lean moto small", lean_smalls(lean, moto_urls[1:]), s3.pid)
        lean.close()
        log(f"gateway cold: /wan (moto + {args.latency_ms:g} ms per request), cache freed "
            "before each run")
        measure("gateway cold big (wan)", big(gw, "wan"), strata.pid, before=free_wan)
        measure("gateway cold small (wan)", smalls(gw, "wan"), strata.pid, before=free_wan)
        log("gateway warm")
        for key in [BIG, *small]:
            for bucket in ("wan", "local"):
                get_all(gw, bucket, key)
        report = rest.cache_report()
        log(f"  cache: {report['used_bytes'] / MiB:.0f} MiB in {report['blocks']} blocks, "
            f"hit ratio {report['hit_ratio']:.2f}")
        res["cache_report_warm"] = report
        measure("gateway warm big (wan)", big(gw, "wan"), strata.pid)
        measure("gateway warm small (wan)", smalls(gw, "wan"), strata.pid)
        measure("gateway warm big (local)", big(gw, "local"), strata.pid)
        measure("gateway warm small (local)", smalls(gw, "local"), strata.pid)
        lean = LeanClient(strata.endpoint)
        gw_urls = presigned(strata.endpoint, GW_ACCESS, GW_SECRET, "wan", [BIG, *small])
        measure("lean gateway warm big (wan)", lean_big(lean, gw_urls[0]), strata.pid)
        measure("lean gateway warm small (wan)", lean_smalls(lean, gw_urls[1:]), strata.pid)
        lean.close()
        for key, size in list(expected.items())[:3]:  # and the bytes are the file's
            body = gw.get_object(Bucket="wan", Key=key)["Body"].read()
            assert len(body) == size and body == (folder / key).read_bytes(), key

        if args.clients:
            log(f"concurrent small GETs: {args.clients} client processes x {args.seconds:g}s")
            pool = multiprocessing.get_context("spawn").Pool(args.clients)
            res["concurrent"] = {}
            for name, endpoint, access, secret, bucket, pid in (
                    ("moto", s3.endpoint, s3.access_key, s3.secret_key, BUCKET, s3.pid),
                    ("gateway warm (wan)", strata.endpoint, GW_ACCESS, GW_SECRET, "wan",
                     strata.pid)):
                row = concurrent_gets(pool, args.clients, endpoint, access, secret, bucket,
                                      small, args.seconds, pid)
                res["concurrent"][name] = row
                log(f"  {name}: {row['gets_per_s']:,.0f} GETs/s"
                    + (f", server {row['server_cpu_s_per_gb']:.2f} CPU s/GB"
                       if "server_cpu_s_per_gb" in row else ""))
            pool.close()
            pool.join()
            pool = None
        res["metrics_sample"] = [line for line in __import__("httpx").get(
            f"{strata.rest}/metrics", timeout=10).text.splitlines()
            if line.startswith(("strata_cache_hits_total", "strata_cache_ufs_read_bytes_total",
                                'strata_s3_requests_total{operation="GetObject"'))]
        rest.close()
        res["cases"] = {name: c.out() for name, c in cases.items()}
        if profiles:
            res["profiles"] = {name: text.splitlines() for name, text in profiles.items()}
            for name, text in profiles.items():
                print(f"\n== profile of {name} (py-spy --gil on the Strata process)\n"
                      + "\n".join(text.splitlines()[:20]))
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        if strata is not None:
            strata.stop()
        if proxy is not None:
            proxy.stop()
        s3.stop()
        shutil.rmtree(cache_dir, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    res["environment"]["loadavg_end"] = os.getloadavg()
    res["summary"] = summary = summarize(res)
    print_summary(res, summary)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    log(f"results written to {args.out}")
    return 0


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    m = {name: c["median"] for name, c in res["cases"].items()}
    ratios = {
        "big_warm_vs_moto": m["gateway warm big (wan)"]["mb_per_s"] / m["moto big"]["mb_per_s"],
        "big_warm_vs_local": m["gateway warm big (wan)"]["mb_per_s"] / m["local big"]["mb_per_s"],
        "big_warm_local_vs_moto": (m["gateway warm big (local)"]["mb_per_s"]
                                   / m["moto big"]["mb_per_s"]),
        "small_warm_local_vs_moto": (m["gateway warm small (local)"]["gets_per_s"]
                                     / m["moto small"]["gets_per_s"]),
        "big_warm_vs_client_ceiling": (m["gateway warm big (wan)"]["mb_per_s"]
                                       / m["boto3 ceiling big"]["mb_per_s"]),
        "client_ceiling_vs_local": (m["boto3 ceiling big"]["mb_per_s"]
                                    / m["local big"]["mb_per_s"]),
        "small_warm_vs_moto": (m["gateway warm small (wan)"]["gets_per_s"]
                               / m["moto small"]["gets_per_s"]),
        "big_warm_vs_cold": (m["gateway warm big (wan)"]["mb_per_s"]
                             / m["gateway cold big (wan)"]["mb_per_s"]),
        "small_warm_vs_cold": (m["gateway warm small (wan)"]["gets_per_s"]
                               / m["gateway cold small (wan)"]["gets_per_s"]),
    }
    ratios.update({
        "small_client_ceiling_vs_moto": (m["boto3 ceiling small"]["gets_per_s"]
                                         / m["moto small"]["gets_per_s"]),
        "small_warm_vs_client_ceiling": (m["gateway warm small (wan)"]["gets_per_s"]
                                         / m["boto3 ceiling small"]["gets_per_s"]),
        "lean_big_warm_vs_moto": (m["lean gateway warm big (wan)"]["mb_per_s"]
                                  / m["lean moto big"]["mb_per_s"]),
        "lean_big_warm_vs_local": (m["lean gateway warm big (wan)"]["mb_per_s"]
                                   / m["local big"]["mb_per_s"]),
        "lean_small_warm_vs_moto": (m["lean gateway warm small (wan)"]["gets_per_s"]
                                    / m["lean moto small"]["gets_per_s"]),
        "lean_ceiling_big_vs_local": (m["lean ceiling big"]["mb_per_s"]
                                      / m["local big"]["mb_per_s"]),
    })
    if "concurrent" in res:
        c = res["concurrent"]
        ratios["small_warm_vs_moto_concurrent"] = (c["gateway warm (wan)"]["gets_per_s"]
                                                   / c["moto"]["gets_per_s"])
    targets = {
        "big_warm_vs_moto": ratios["big_warm_vs_moto"] >= TARGETS["big_warm_vs_moto"],
        "big_warm_within_2x_local": ratios["big_warm_vs_local"] >= TARGETS["big_warm_vs_local"],
        "small_warm_vs_moto": ratios["small_warm_vs_moto"] >= TARGETS["small_warm_vs_moto"],
        "big_warm_vs_cold": ratios["big_warm_vs_cold"] >= TARGETS["warm_vs_cold"],
        "small_warm_vs_cold": ratios["small_warm_vs_cold"] >= TARGETS["warm_vs_cold"],
    }
    lean_targets = {
        "big_warm_vs_moto": ratios["lean_big_warm_vs_moto"] >= TARGETS["big_warm_vs_moto"],
        "big_warm_within_2x_local": (ratios["lean_big_warm_vs_local"]
                                     >= TARGETS["big_warm_vs_local"]),
        "small_warm_vs_moto": ratios["lean_small_warm_vs_moto"] >= TARGETS["small_warm_vs_moto"],
    }
    cpu = {name: mm["server_cpu_s_per_gb"] for name, mm in m.items()
           if "server_cpu_s_per_gb" in mm}
    return {"ratios": ratios, "targets_met": targets, "targets_met_lean_client": lean_targets,
            "server_cpu_s_per_gb": cpu}


def print_summary(res: dict[str, Any], summary: dict[str, Any]) -> None:
    cfg = res["config"]
    print()
    print(f"GETs with boto3 (lean: the lean client), {cfg['big_mib']} MiB and {cfg['small_count']} x {cfg['small_kib']} "
          f"KiB objects, median of {cfg['repeats']} runs, {res['environment']['nproc']} CPUs")
    head = ("case", "MB/s", "GETs/s", "server CPU s/GB")
    rows = [(name, f"{c['median']['mb_per_s']:,.0f}", f"{c['median']['gets_per_s']:,.1f}",
             f"{c['median']['server_cpu_s_per_gb']:.2f}"
             if "server_cpu_s_per_gb" in c["median"] else "-")
            for name, c in res["cases"].items()]
    for name, row in res.get("concurrent", {}).items():
        rows.append((f"{name}, {row['clients']} clients", f"{row['mb_per_s']:,.0f}",
                     f"{row['gets_per_s']:,.1f}",
                     f"{row['server_cpu_s_per_gb']:.2f}" if "server_cpu_s_per_gb" in row else "-"))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    for row in [head, tuple("-" * w for w in widths), *rows]:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths))))
    r, t = summary["ratios"], summary["targets_met"]

    def verdict(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    print()
    print(f"64 MiB warm GET vs moto:        {r['big_warm_vs_moto']:.2f}x (target >= 1.5x): "
          f"{verdict(t['big_warm_vs_moto'])}")
    print(f"64 MiB warm GET vs local read:  {r['big_warm_vs_local']:.2f}x (target >= 0.5x, "
          f"within 2x): {verdict(t['big_warm_within_2x_local'])}; boto3 itself reaches "
          f"{r['client_ceiling_vs_local']:.2f}x of the local read (a bare server), the gateway "
          f"{r['big_warm_vs_client_ceiling']:.2f}x of that")
    print(f"100 KiB warm GETs/s vs moto:    {r['small_warm_vs_moto']:.2f}x (target >= 2x): "
          f"{verdict(t['small_warm_vs_moto'])}"
          + (f"; {r['small_warm_vs_moto_concurrent']:.2f}x with "
             f"{res['concurrent']['moto']['clients']} clients"
             if "small_warm_vs_moto_concurrent" in r else "")
          + f"; a bare server reaches {r['small_client_ceiling_vs_moto']:.2f}x moto with boto3, "
            f"the gateway {r['small_warm_vs_client_ceiling']:.2f}x of that")
    print(f"from the local mount instead: 64 MiB {r['big_warm_local_vs_moto']:.2f}x moto, "
          f"100 KiB {r['small_warm_local_vs_moto']:.2f}x moto")
    print(f"warm vs cold (WAN-like), 64 MiB: {r['big_warm_vs_cold']:.2f}x, 100 KiB: "
          f"{r['small_warm_vs_cold']:.2f}x (target >= 5x): "
          f"{verdict(t['big_warm_vs_cold'])}, {verdict(t['small_warm_vs_cold'])}")
    lt = summary["targets_met_lean_client"]
    print("with the lean client (presigned GETs on a raw socket, bodies into one buffer):")
    print(f"  64 MiB warm GET vs moto:       {r['lean_big_warm_vs_moto']:.2f}x (target >= 1.5x): "
          f"{verdict(lt['big_warm_vs_moto'])}")
    print(f"  64 MiB warm GET vs local read: {r['lean_big_warm_vs_local']:.2f}x (target >= 0.5x): "
          f"{verdict(lt['big_warm_within_2x_local'])}; a bare server reaches "
          f"{r['lean_ceiling_big_vs_local']:.2f}x")
    print(f"  100 KiB warm GETs/s vs moto:   {r['lean_small_warm_vs_moto']:.2f}x (target >= 2x): "
          f"{verdict(lt['small_warm_vs_moto'])}")


if __name__ == "__main__":
    sys.exit(main())
