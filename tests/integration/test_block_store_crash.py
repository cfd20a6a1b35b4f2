"""Crash safety of the block store, for real: a process that commits blocks in a loop (unpersisted
first, then marked persisted, with evictions cascading down two tiers and promotions) is killed
with SIGKILL at random moments. Each time, the reopened store must remove the leftovers, keep
every block it still indexes whole and correct, and lose no block committed unpersisted."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from catalog.cache import BlockStore, CacheConfig, FileIdentity, ReadType
from catalog.store import StateStore

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
BS = 256 * 1024
FILE_SIZE = 2 * BS + 1000  # three blocks, the last one short

#: Caches files s3://bucket/f<i> block by block until killed; prints what it committed.
WORKER = r"""
import hashlib, sys
from pathlib import Path
from catalog.cache import BlockStore, CacheConfig, FileIdentity, ReadType
from catalog.store import StateStore

BS, SIZE = int(sys.argv[3]), int(sys.argv[4])

def content(i):
    seed = hashlib.sha256(str(i).encode()).digest()
    return (seed * (SIZE // len(seed) + 1))[:SIZE]

store = BlockStore(CacheConfig.model_validate_json(sys.argv[1]), StateStore(Path(sys.argv[2])))
i = int(sys.argv[5])
print("ready", flush=True)
while True:
    ident = FileIdentity(f"s3://bucket/f{i}", SIZE, i)
    data = content(i)
    for idx in range((SIZE + BS - 1) // BS):
        store.put_block(ident, idx, data[idx * BS:(idx + 1) * BS], persisted=False)
        print("put", i, idx, flush=True)
    store.mark_persisted(ident)
    print("persisted", i, flush=True)
    if i % 3 == 0 and i >= 3:
        old = FileIdentity(f"s3://bucket/f{i - 2}", SIZE, i - 2)
        store.read(old, 0, SIZE, lambda s, e, d=content(i - 2): d[s:e], ReadType.CACHE_PROMOTE)
    i += 1
"""


def content(i: int) -> bytes:
    seed = hashlib.sha256(str(i).encode()).digest()
    return (seed * (FILE_SIZE // len(seed) + 1))[:FILE_SIZE]


def _config(root: Path) -> CacheConfig:
    return CacheConfig.model_validate({"block_size": BS, "tiers": [
        {"alias": "MEM", "dirs": [{"path": str(root / "mem"), "quota": 5 * BS}]},
        {"alias": "SSD", "dirs": [{"path": str(root / "ssd0"), "quota": 6 * BS},
                                  {"path": str(root / "ssd1"), "quota": 6 * BS}]}]})


def _run_and_kill(cfg: CacheConfig, state_dir: Path, first: int, rng: random.Random
                  ) -> list[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, cfg.model_dump_json(), str(state_dir), str(BS),
         str(FILE_SIZE), str(first)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.endswith("\n"):  # a line cut by the kill claims nothing
                lines.append(line.strip())

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while sum(1 for x in lines if x.startswith("persisted")) < 3:
        if proc.poll() is not None:
            raise AssertionError(f"worker died: {proc.stderr.read() if proc.stderr else ''}")
        assert time.monotonic() < deadline, "worker made no progress"
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 0.6))
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    reader.join(10)
    assert proc.returncode == -signal.SIGKILL
    return list(lines)


def test_kill_9_mid_commit_leaves_only_good_blocks(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    state_dir = tmp_path / "state"
    rng = random.Random(8)
    first = 0
    for _ in range(6):
        lines = _run_and_kill(cfg, state_dir, first, rng)
        put = {(int(p[1]), int(p[2])) for p in (x.split() for x in lines) if p[0] == "put"}
        persisted = {int(p[1]) for p in (x.split() for x in lines) if p[0] == "persisted"}
        assert put and persisted

        store = BlockStore(cfg, StateStore(state_dir))
        try:
            dirs = [d for t in cfg.tiers for d in t.dirs]
            for d in dirs:  # no temp block survives, no file outside the index
                assert not list((d.path / ".tmp").iterdir())
            indexed = {(b.dir, b.block_id): b for b in store.blocks()}
            on_disk = {(str(d.path), f.name) for d in dirs
                       for f in (d.path / "blocks").rglob("*") if f.is_file()}
            assert on_disk == set(indexed)
            for b in indexed.values():
                assert os.path.getsize(b.path) == b.size
            # every indexed block is served from the cache, whole and right
            for b in store.blocks():
                i = b.identity.mtime_ns
                start = b.index * BS
                got = store.read(b.identity, start, start + b.size, _no_fetch, ReadType.NO_CACHE)
                assert got == content(i)[start:start + b.size], b.block_id
            # a block committed unpersisted is never lost, nor marked persisted by accident
            for i, idx in put:
                ident = FileIdentity(f"s3://bucket/f{i}", FILE_SIZE, i)
                if i not in persisted:
                    info = store.block_info(ident, idx)
                    assert info is not None, f"unpersisted block {i}/{idx} lost"
            for info in store.unpersisted():
                assert info.identity.mtime_ns not in persisted
            for t in store.stats().tiers:
                for ds in t.dirs:
                    assert ds.used_bytes <= ds.capacity_bytes
            # what the crash interrupted is finished: persisted, then evictable as any block
            for info in store.unpersisted():
                store.mark_persisted(info.identity)
            assert store.unpersisted() == []
        finally:
            store.close()
        first = max(i for i, _ in put) + 1


def _no_fetch(start: int, end: int) -> bytes:
    raise AssertionError(f"an indexed block was not served from the cache: [{start}, {end})")
