"""Crash safety of transformation jobs, tested for real: a process running jobs in a loop is
killed with SIGKILL at random moments; each time, the state left behind must serve either the
old layout or the whole new one (never part of a job), and the next process must resume the
interrupted job to success with no orphan files."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from catalog.config import Settings
from catalog.service import CatalogService

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
PARTITIONS, FILES, ROWS = 8, 30, 100

#: Transforms the table again and again (revert, transform) until killed.
WORKER = r"""
import sys
from catalog.config import Settings
from catalog.service import CatalogService
data_dir, lake = sys.argv[1:3]
service = CatalogService(Settings(data_dir=data_dir, sync_interval_s=0, transform_parallelism=1))
if "lake" not in service.list_databases():
    service.attach_database("directory", lake, "db", name="lake")
    print("attached", flush=True)
service.transforms.start()
while True:
    active = [j for j in service.transforms.jobs(db="lake") if j.state in ("queued", "running")]
    job = active[0] if active else service.transforms.submit(
        "lake", "sales", "file.size.min=1KB; file.count.max=6")
    print("running", job.id, flush=True)
    done = service.transforms.wait(job.id)
    print(done.state, job.id, flush=True)
    service.revert_layouts("lake", "sales")
    print("reverted", flush=True)
"""


def _lake(root: Path) -> Path:
    for p in range(PARTITIONS):
        folder = root / "db" / "sales" / f"p={p}"
        folder.mkdir(parents=True)
        for f in range(FILES):
            rows = "".join(f"{p * 100000 + f * ROWS + r},{r % 7}.5\n" for r in range(ROWS))
            (folder / f"f{f}.csv").write_text("id,amount\n" + rows)
    return root


def _parquet_dirs(data_dir: Path) -> set[str]:
    root = data_dir / "catalog" / "lake" / "tables" / "sales" / "_transformed"
    return {f"file://{p.parent}" for p in root.rglob("*.parquet")} if root.exists() else set()


def _check_served_state(service: CatalogService) -> int:
    """Every current layout belongs to a succeeded job that switched all its partitions."""
    layouts = service.current_layouts("lake", "sales")
    versions = {lay.version for lay in layouts.values()}
    assert len(versions) <= 1, versions
    for version in versions:
        job = service.transforms.get(version)
        assert job.state == "succeeded", job
        assert {p.partition for p in job.partitions} == set(layouts)
    return len(layouts)


def test_kill_9_during_transformation_jobs(tmp_path: Path) -> None:
    lake = _lake(tmp_path / "lake")
    data_dir = tmp_path / "state"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    rng = random.Random(11)
    expected_rows = PARTITIONS * FILES * ROWS
    mid_job_kills = 0
    for trial in range(6):
        proc = subprocess.Popen([sys.executable, "-c", WORKER, str(data_dir), lake.as_uri()],
                                cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(rng.uniform(2.0, 6.0) if trial else 4.0)
        finally:
            proc.send_signal(signal.SIGKILL)
            out, err = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL, err
        assert "Traceback" not in err, err
        lines = out.splitlines()
        if lines and lines[-1].startswith("running"):
            mid_job_kills += 1

        service = CatalogService(Settings(data_dir=data_dir, sync_interval_s=0))
        try:
            _check_served_state(service)
            # Resume: the interrupted job (if any) must finish, and succeed.
            service.transforms.start()
            for job in service.transforms.jobs(db="lake"):
                if job.state in ("queued", "running"):
                    done = service.transforms.wait(job.id, 120)
                    assert done.state == "succeeded", done
            count = _check_served_state(service)
            known = {loc.rstrip("/") for loc in service.store.layout_locations()}
            orphans = _parquet_dirs(data_dir) - known
            assert not orphans, orphans
            if count:
                layouts = service.current_layouts("lake", "sales")
                paths = [lay.location.removeprefix("file://") + "/*.parquet"
                         for lay in layouts.values()]
                got = duckdb.connect().execute(
                    f"SELECT count(*), count(DISTINCT id) FROM read_parquet({paths!r})"
                ).fetchone()
                assert got == (expected_rows, expected_rows)
        finally:
            service.close()
    assert mid_job_kills >= 1  # the kills landed inside jobs, not only between them
