"""Crash safety and load, tested for real: kill -9 during attach / sync / detach / mount, and 32
Thrift clients for a while with syncs running (a Strata server process on 127.0.0.1)."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hmsclient import hmsclient

from catalog.config import Settings
from catalog.service import CatalogService
from tests.support.ports import LOOPBACK, free_port, wait_for_port

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
TABLES = 3
PARTITIONS = 300

#: Runs catalog operations in a loop until killed; prints one line per finished operation.
WORKER = r"""
import sys, time
from catalog.config import Settings
from catalog.service import CatalogService
data_dir, lake, other = sys.argv[1:4]
service = CatalogService(Settings(data_dir=data_dir, sync_interval_s=0))
print("ready", flush=True)
i = 0
while True:
    i += 1
    for name in ("lake", "lake2"):
        if name in service.list_databases():
            service.detach_database(name)
            print("detached", name, flush=True)
    service.attach_database("directory", lake, "db", name="lake")
    print("attached lake", flush=True)
    service.sync("lake")
    print("synced lake", flush=True)
    if any(m.path == "/m" for m in service.fs.mounts()):
        service.unmount("/m")
    service.mount("/m", other)
    service.attach_database("directory", "strata:///m", "db", name="lake2")
    print("attached lake2", flush=True)
"""


def _lake(root: Path) -> Path:
    for t in range(TABLES):
        for p in range(PARTITIONS):
            folder = root / "db" / f"t{t}" / f"p={p}"
            folder.mkdir(parents=True)
            pq.write_table(pa.table({"id": [p]}), folder / "part-0.parquet")
    return root


def _check_consistent(data_dir: Path) -> dict[str, int]:
    conn = sqlite3.connect(data_dir / "catalog.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        dbs = {r[0] for r in conn.execute("SELECT name FROM databases")}
        for db in dbs:  # a database is there whole, or not at all
            tables = conn.execute("SELECT id, partition_count FROM tables WHERE db_name = ?",
                                  (db,)).fetchall()
            assert len(tables) == TABLES, (db, tables)
            for table_id, count in tables:
                stored = conn.execute("SELECT COUNT(*) FROM partitions WHERE table_id = ?",
                                      (table_id,)).fetchone()[0]
                assert stored == count == PARTITIONS, (db, table_id, stored, count)
        orphans = conn.execute("SELECT COUNT(*) FROM partitions WHERE table_id NOT IN "
                               "(SELECT id FROM tables)").fetchone()[0]
        assert orphans == 0
        mounts = [r[0] for r in conn.execute("SELECT path FROM mounts")]
        if "lake2" in dbs:
            assert "/m" in mounts  # a database attached through a mount keeps its mount
        return {"databases": len(dbs), "mounts": len(mounts)}
    finally:
        conn.close()


def test_kill_9_during_attach_sync_detach_and_mount(tmp_path: Path) -> None:
    lake, other = _lake(tmp_path / "lake"), _lake(tmp_path / "other")
    data_dir = tmp_path / "state"
    rng = random.Random(7)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    trials, done_ops, seen = 12, 0, set()
    for _ in range(trials):
        proc = subprocess.Popen([sys.executable, "-c", WORKER, str(data_dir), str(lake),
                                 str(other)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            # The random kill time counts from when the worker's service is open (its imports
            # take seconds on a loaded machine).
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready", proc.stderr
            time.sleep(rng.uniform(1.0, 4.0))
        finally:
            proc.send_signal(signal.SIGKILL)
            out, err = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL, err
        assert "Traceback" not in err, err
        done_ops += len(out.splitlines())
        seen.add(tuple(sorted(_check_consistent(data_dir).items())))
        # And the service opens on what was left and keeps working.
        service = CatalogService(Settings(data_dir=data_dir, sync_interval_s=0))
        try:
            for db in service.list_databases():
                report = service.sync(db)
                assert not report.errors and report.tables.unchanged == TABLES, report
        finally:
            service.close()
    assert done_ops > trials  # the kills landed between and inside operations
    assert len(seen) > 1, seen  # and left different (consistent) states


def test_32_clients_with_syncs_running(tmp_path: Path) -> None:
    seconds = float(os.environ.get("STRATA_LOAD_SECONDS", "60"))
    lake = _lake(tmp_path / "lake")
    thrift, rest = free_port(), free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CATALOG_")},
           "PYTHONPATH": str(REPO)}
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--data-dir", str(tmp_path / "state"),
         "--host", LOOPBACK, "--thrift-port", str(thrift), "--trino-thrift-port", "0",
         "--rest-port", str(rest), "--sync-interval", "0"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(LOOPBACK, rest, 60, proc=proc, what="strata")  # type: ignore[arg-type]
        wait_for_port(LOOPBACK, thrift, 60, proc=proc, what="strata")  # type: ignore[arg-type]
        # The server generates its API token into the data dir (when the REST API needs one).
        token = (tmp_path / "state" / "api-token")
        headers = {"Authorization": f"Bearer {token.read_text().strip()}"} \
            if token.exists() else {}
        with httpx.Client(base_url=f"http://{LOOPBACK}:{rest}", headers=headers,
                          timeout=120) as http:
            r = http.post("/api/v1/databases", json={
                "udb_type": "directory", "uri": str(lake), "source_db": "db", "name": "lake",
                "options": {"sync.interval": "2"}})
            assert r.status_code == 201, r.text
            stop = time.monotonic() + seconds
            latencies: list[float] = []
            errors: list[str] = []
            lock = threading.Lock()

            def client(n: int) -> None:
                mine: list[float] = []
                with hmsclient.HMSClient(host=LOOPBACK, port=thrift) as c:
                    i = 0
                    while time.monotonic() < stop:
                        i += 1
                        started = time.perf_counter()
                        try:
                            if i % 3 == 0:
                                names = [f"p={(n * 7 + i + k) % PARTITIONS}" for k in range(20)]
                                assert len(c.get_partitions_by_names("lake", "t1", names)) == 20
                            elif i % 3 == 1:
                                assert c.get_table("lake", f"t{i % TABLES}").tableName
                            else:
                                assert len(c.get_partition_names("lake", "t0", -1)) == PARTITIONS
                        except Exception as e:  # noqa: BLE001 - counted and reported
                            with lock:
                                errors.append(f"{type(e).__name__}: {e}")
                        mine.append(time.perf_counter() - started)
                with lock:
                    latencies.extend(mine)

            syncs = 0
            threads = [threading.Thread(target=client, args=(n,)) for n in range(32)]
            for t in threads:
                t.start()
            while time.monotonic() < stop:
                r = http.post("/api/v1/databases/lake/sync")
                assert r.status_code == 200, r.text
                syncs += 1
                time.sleep(1)
            for t in threads:
                t.join(timeout=120)
        latencies.sort()
        p50 = statistics.median(latencies)
        p99 = latencies[int(len(latencies) * 0.99)]
        print(f"\n32 clients x {seconds:g}s with {syncs} syncs (+ periodic ones): "
              f"{len(latencies)} calls, {len(errors)} errors, p50 {p50 * 1000:.1f} ms, "
              f"p99 {p99 * 1000:.1f} ms")
        assert errors == [], errors[:5]
        assert len(latencies) > 32 * 10 and syncs >= 1
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
