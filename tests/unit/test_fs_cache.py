"""The block store under the namespace: read types, identity TTL per mount, write types, the
durable persist queue, ordering of persists and deletes, replicated async writes, the gateway."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api.s3.objects import ObjectStore
from catalog.cache import (
    BlockNotPersistedError,
    BlockStore,
    CacheConfig,
    CacheError,
    DirConfig,
    TierConfig,
)
from catalog.exceptions import InvalidInputError, InvalidOptionError, NoSuchPathError
from catalog.fs.cached import WriteType
from catalog.fs.namespace import Namespace
from catalog.store import StateStore

MiB = 1024 * 1024
BS = 256 * 1024  # block size of these tests


class Env:
    """A state store, a block store of two directories and a namespace over a local folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.src = root / "src"
        self.src.mkdir(exist_ok=True)
        self.dirs = [root / "c1", root / "c2"]
        self.store: StateStore
        self.cache: BlockStore
        self.ns: Namespace

    def open(self, persister: bool = False) -> Namespace:
        self.store = StateStore(self.root / "state")
        cfg = CacheConfig(block_size=BS, tiers=[TierConfig(alias="SSD", dirs=[
            DirConfig(path=d, quota=16 * MiB) for d in self.dirs])])
        self.cache = BlockStore(cfg, self.store)
        self.ns = Namespace(self.store, cache=self.cache, persister=persister)
        return self.ns

    def close(self) -> None:
        self.ns.close()
        self.cache.close()
        self.store.close()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    e.open()
    e.ns.mount("/d", f"file://{e.src}")
    try:
        yield e
    finally:
        e.close()


def data(n: int, seed: int = 0) -> bytes:
    return bytes((i * 7 + seed) % 251 for i in range(n))


def rewrite(path: Path, body: bytes) -> None:
    """Replace a file's bytes and move its mtime (same size: only mtime tells them apart)."""
    st = path.stat()
    path.write_bytes(body)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


# -- reads ---------------------------------------------------------------------------------------


def test_cache_read_caches_and_no_cache_does_not(env: Env) -> None:
    (env.src / "a.bin").write_bytes(data(3 * BS + 10))
    (env.src / "b.bin").write_bytes(data(BS, 1))
    assert env.ns.read("/d/b.bin", read_type="NO_CACHE") == data(BS, 1)
    assert env.cache.cached_blocks(env.ns.identity("/d/b.bin")) == []
    assert env.ns.read("/d/a.bin", 5, BS) == data(3 * BS + 10)[5:5 + BS]
    ident = env.ns.identity("/d/a.bin")
    assert env.cache.cached_blocks(ident) == [0, 1]
    before = env.cache.stats().bytes_from_ufs
    assert b"".join(env.ns.iter_range("/d/a.bin", 0, 2 * BS)) == data(3 * BS + 10)[:2 * BS]
    assert env.cache.stats().bytes_from_ufs == before  # served from the cache
    with env.ns.open_input("/d/a.bin") as f:
        f.seek(3 * BS)
        assert f.read() == data(3 * BS + 10)[3 * BS:]
        assert f.size() == 3 * BS + 10


def test_read_type_per_mount_and_bad_options_refused(env: Env, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "x").write_bytes(b"x" * 100)
    env.ns.mount("/nc", f"file://{other}", {"read.type": "NO_CACHE"})
    assert env.ns.read("/nc/x") == b"x" * 100
    assert env.cache.cached_blocks(env.ns.identity("/nc/x")) == []
    assert env.ns.read("/nc/x", read_type="CACHE_PROMOTE") == b"x" * 100
    assert env.cache.cached_blocks(env.ns.identity("/nc/x")) == [0]
    for bad in ({"read.type": "SOMETIMES"}, {"write.type": "LATER"},
                {"metadata.sync.interval": "-1"}, {"replication.durable": "0"}):
        with pytest.raises(InvalidOptionError):
            env.ns.mount("/bad", f"file://{other}", bad)
    with pytest.raises(InvalidOptionError):
        env.ns.read("/nc/x", read_type="FAST")


def test_rewritten_source_is_served_fresh_with_interval_zero(env: Env) -> None:
    f = env.src / "t.csv"
    f.write_bytes(b"old-bytes" * 1000)
    assert env.ns.read("/d/t.csv") == b"old-bytes" * 1000
    rewrite(f, b"new-bytes" * 1000)
    assert env.ns.read("/d/t.csv") == b"new-bytes" * 1000
    assert len({b.identity.key for b in env.cache.blocks()}) == 1  # the stale version dropped


def test_identity_trusted_for_the_mount_interval(env: Env, tmp_path: Path) -> None:
    other = tmp_path / "slow"
    other.mkdir()
    f = other / "t"
    f.write_bytes(b"A" * 5000)
    env.ns.mount("/s", f"file://{other}", {"metadata.sync.interval": "0.6"})
    assert env.ns.read("/s/t") == b"A" * 5000
    rewrite(f, b"B" * 5000)
    assert env.ns.read("/s/t") == b"A" * 5000  # identity still trusted: cached bytes
    time.sleep(0.7)
    assert env.ns.read("/s/t") == b"B" * 5000


def test_listings_and_stats_trusted_for_the_interval_own_changes_seen_at_once(
        env: Env, tmp_path: Path) -> None:
    other = tmp_path / "slow-list"
    (other / "t").mkdir(parents=True)
    (other / "t" / "a.csv").write_bytes(b"a")
    env.ns.mount("/s", f"file://{other}", {"metadata.sync.interval": "60"})

    def names(path: str = "/s/t") -> list[str]:
        return [e.name for e in env.ns.ls(path)]

    assert names() == ["a.csv"]
    (other / "t" / "b.csv").write_bytes(b"b")  # a change made around the namespace
    assert names() == ["a.csv"]  # the listing is trusted for the interval
    with pytest.raises(NoSuchPathError):
        env.ns.stat("/s/t/c.csv")
    env.ns.write_bytes("/s/t/c.csv", b"c")  # changes through the namespace: seen at once
    assert names() == ["a.csv", "b.csv", "c.csv"]
    assert env.ns.stat("/s/t/c.csv").size == 1
    env.ns.delete("/s/t/a.csv")
    assert names() == ["b.csv", "c.csv"]
    with pytest.raises(NoSuchPathError):
        env.ns.stat("/s/t/a.csv")
    env.ns.mkdirs("/s/t/sub")
    assert "sub" in names() and env.ns.stat("/s/t/sub").is_dir
    assert "t" in [e.name for e in env.ns.ls("/s")]
    env.ns.delete("/s/t", recursive=True)
    with pytest.raises(NoSuchPathError):
        env.ns.ls("/s/t")
    assert [e.name for e in env.ns.ls("/s")] == []


def test_a_fingerprint_that_changed_drops_the_trusted_listing(env: Env, tmp_path: Path) -> None:
    other = tmp_path / "slow-fp"
    (other / "t").mkdir(parents=True)
    (other / "t" / "a.csv").write_bytes(b"a" * 10)
    env.ns.mount("/s", f"file://{other}", {"metadata.sync.interval": "60"})
    location = f"file://{other}/t"
    first = env.ns.fingerprint(location)
    assert [e.name for e in env.ns.ls("/s/t")] == ["a.csv"]
    assert env.ns.read("/s/t/a.csv") == b"a" * 10
    rewrite(other / "t" / "a.csv", b"A" * 10)
    (other / "t" / "b.csv").write_bytes(b"b")
    assert [e.name for e in env.ns.ls("/s/t")] == ["a.csv"]  # trusted...
    assert env.ns.read("/s/t/a.csv") == b"a" * 10
    assert env.ns.fingerprint(location) != first  # ...until a sync sees the change
    assert [e.name for e in env.ns.ls("/s/t")] == ["a.csv", "b.csv"]
    assert env.ns.read("/s/t/a.csv") == b"A" * 10


# -- write types ---------------------------------------------------------------------------------


def test_through_writes_only_the_ufs(env: Env) -> None:
    env.ns.write_bytes("/d/w/t.bin", data(BS + 3), write_type="THROUGH")
    assert (env.src / "w/t.bin").read_bytes() == data(BS + 3)
    assert env.cache.blocks() == []


def test_cache_through_writes_ufs_and_cache(env: Env) -> None:
    with env.ns.open_output("/d/w/ct.bin") as out:  # the default write type
        for i in range(5):
            out.write(data(BS // 2, i))
    body = b"".join(data(BS // 2, i) for i in range(5))
    assert (env.src / "w/ct.bin").read_bytes() == body
    ident = env.ns.identity("/d/w/ct.bin")
    assert env.cache.cached_blocks(ident) == [0, 1, 2]
    assert all(b.persisted for b in env.cache.blocks())
    before = env.cache.stats().bytes_from_ufs
    assert env.ns.read("/d/w/ct.bin") == body
    assert env.cache.stats().bytes_from_ufs == before


def test_failed_write_leaves_nothing(env: Env) -> None:
    for wt in WriteType:
        with pytest.raises(RuntimeError):
            with env.ns.open_output(f"/d/f-{wt.value}", write_type=wt) as out:
                out.write(data(BS + 1))
                raise RuntimeError("client went away")
        with pytest.raises(NoSuchPathError):
            env.ns.stat(f"/d/f-{wt.value}")
    assert sorted(os.listdir(env.src)) == []
    assert env.cache.blocks() == []


def test_must_cache_is_visible_in_the_namespace_only(env: Env) -> None:
    env.ns.write_bytes("/d/m/x.bin", data(2 * BS + 1), write_type="MUST_CACHE")
    assert not (env.src / "m").exists()
    assert env.ns.stat("/d/m/x.bin").size == 2 * BS + 1
    assert env.ns.stat("/d/m").is_dir
    assert [e.name for e in env.ns.ls("/d")] == ["m"]
    assert [(e.name, e.size) for e in env.ns.ls("/d/m")] == [("x.bin", 2 * BS + 1)]
    assert env.ns.read("/d/m/x.bin", BS - 1, 3) == data(2 * BS + 1)[BS - 1:BS + 2]
    assert all(not b.persisted for b in env.cache.blocks())
    with pytest.raises(BlockNotPersistedError, match="not persisted"):
        env.ns.free("/d/m/x.bin")
    with pytest.raises(BlockNotPersistedError):
        env.cache.free(env.ns.identity("/d/m/x.bin").uri)
    env.ns.delete("/d/m/x.bin")
    with pytest.raises(NoSuchPathError):
        env.ns.stat("/d/m/x.bin")
    assert env.cache.blocks() == []


def test_async_through_persists_from_the_queue(env: Env) -> None:
    env.ns.write_bytes("/d/a/y.bin", data(BS + 7), write_type="ASYNC_THROUGH")
    assert not (env.src / "a/y.bin").exists()
    assert env.ns.read("/d/a/y.bin") == data(BS + 7)
    assert [e.path for e in env.ns._files.entries()] == ["/d/a/y.bin"]  # type: ignore[union-attr]
    with pytest.raises(BlockNotPersistedError):
        env.ns.free("/d/a/y.bin")
    assert env.ns.persister is not None
    env.ns.persister.drain()
    assert (env.src / "a/y.bin").read_bytes() == data(BS + 7)
    assert env.ns._files.entries() == []  # type: ignore[union-attr]
    ident = env.ns.identity("/d/a/y.bin")  # the UFS identity now
    assert env.cache.cached_blocks(ident) == [0, 1]  # re-keyed, not read again
    assert all(b.persisted for b in env.cache.blocks())
    assert env.ns.free("/d/a/y.bin") == BS + 7


def test_persist_now_and_mount_write_type(env: Env, tmp_path: Path) -> None:
    other = tmp_path / "o"
    other.mkdir()
    env.ns.mount("/mc", f"file://{other}", {"write.type": "MUST_CACHE"})
    env.ns.write_bytes("/mc/z", b"zz")
    assert not (other / "z").exists()
    assert env.ns.persist("/mc") == 1
    assert (other / "z").read_bytes() == b"zz"
    assert env.ns.persist("/mc/z") == 0
    with pytest.raises(NoSuchPathError):
        env.ns.persist("/mc/none")


def test_delete_before_persist_never_reaches_the_ufs_as_a_file(env: Env) -> None:
    env.ns.write_bytes("/d/p.bin", b"1" * 100, write_type="ASYNC_THROUGH")
    env.ns.delete("/d/p.bin")
    assert env.ns.persister is not None
    env.ns.persister.drain()
    assert not (env.src / "p.bin").exists()
    assert env.ns._files.entries() == []  # type: ignore[union-attr]


def test_persist_then_delete_reach_the_ufs_in_order(env: Env, monkeypatch: Any) -> None:
    """A delete issued while the persist of the same path is uploading waits for it: the under
    storage sees the persist, then the delete, and the file is gone at the end."""
    env.ns.write_bytes("/d/o.bin", data(BS), write_type="ASYNC_THROUGH")
    mount, _ = env.ns.resolve("/d/o.bin")
    ufs = env.ns.ufs(mount)
    events: list[str] = []
    uploading = threading.Event()
    release = threading.Event()
    real_open, real_delete = ufs.open_output, ufs.delete

    class Slow:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def write(self, b: bytes) -> int:
            uploading.set()
            release.wait(10)
            return int(self.inner.write(b))

        def close(self) -> None:
            self.inner.close()
            events.append("persisted")

    def open_output(uri: str) -> Any:
        return Slow(real_open(uri))

    def delete(uri: str, recursive: bool = False) -> None:
        events.append("delete")
        real_delete(uri, recursive)

    monkeypatch.setattr(ufs, "open_output", open_output)
    monkeypatch.setattr(ufs, "delete", delete)
    assert env.ns.persister is not None
    persister = threading.Thread(target=env.ns.persister.drain)
    persister.start()
    assert uploading.wait(10)
    deleter = threading.Thread(target=env.ns.delete, args=("/d/o.bin",))
    deleter.start()
    time.sleep(0.3)
    assert events == []  # the delete waits for the persist in progress
    release.set()
    persister.join(10)
    deleter.join(10)
    assert events == ["persisted", "delete"]
    assert not (env.src / "o.bin").exists()
    with pytest.raises(NoSuchPathError):
        env.ns.stat("/d/o.bin")


def test_a_later_through_write_wins_over_a_queued_persist(env: Env) -> None:
    env.ns.write_bytes("/d/v", b"async", write_type="ASYNC_THROUGH")
    env.ns.write_bytes("/d/v", b"through", write_type="THROUGH")
    assert env.ns.persister is not None
    env.ns.persister.drain()
    assert (env.src / "v").read_bytes() == b"through"
    assert env.ns.read("/d/v") == b"through"
    assert env.cache.unpersisted() == []


def test_restart_resumes_the_persist_queue(tmp_path: Path) -> None:
    e = Env(tmp_path)
    e.open()
    e.ns.mount("/d", f"file://{e.src}")
    e.ns.write_bytes("/d/r.bin", data(2 * BS), write_type="ASYNC_THROUGH")
    e.close()  # "crash": the queue entry is still there
    assert not (e.src / "r.bin").exists()
    e.open(persister=True)
    try:
        deadline = time.monotonic() + 20
        while not (e.src / "r.bin").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (e.src / "r.bin").read_bytes() == data(2 * BS)
        assert e.ns.read("/d/r.bin") == data(2 * BS)
    finally:
        e.close()


def test_unclosed_cached_write_is_invisible_after_a_restart(tmp_path: Path) -> None:
    e = Env(tmp_path)
    e.open()
    e.ns.mount("/d", f"file://{e.src}")
    out = e.ns.open_output("/d/half.bin", write_type="ASYNC_THROUGH")
    out.write(data(BS + 5))  # never closed: the process dies here
    e.close()
    e.open()
    try:
        with pytest.raises(NoSuchPathError):
            e.ns.stat("/d/half.bin")
        assert e.cache.blocks() == [] and e.ns._files.entries() == []  # type: ignore[union-attr]
    finally:
        e.close()


def test_replicated_async_write_survives_a_lost_directory(tmp_path: Path) -> None:
    e = Env(tmp_path)
    e.open()
    e.ns.mount("/r", f"file://{e.src}", {"write.type": "ASYNC_THROUGH",
                                          "replication.durable": "2"})
    body = data(3 * BS + 11)
    e.ns.write_bytes("/r/rep.bin", body)
    blocks = e.cache.blocks()
    assert len(blocks) == 8  # 4 blocks x 2 copies
    for i in range(4):
        assert len({b.dir for b in blocks if b.index == i}) == 2  # distinct directories
    e.close()
    shutil.rmtree(e.dirs[0])  # one storage directory lost before the persist
    e.open()
    try:
        assert e.ns.read("/r/rep.bin") == body
        assert e.ns.persister is not None
        e.ns.persister.drain()
        assert (e.src / "rep.bin").read_bytes() == body
        assert e.cache.unpersisted() == []  # the surviving copies are evictable now
    finally:
        e.close()


def test_replication_needs_distinct_directories(tmp_path: Path, env: Env) -> None:
    other = tmp_path / "r3"
    other.mkdir()
    env.ns.mount("/r3", f"file://{other}", {"write.type": "MUST_CACHE",
                                             "replication.durable": "3"})
    with pytest.raises(CacheError, match="3 copies"):
        env.ns.write_bytes("/r3/x", b"x" * 10)
    with pytest.raises(NoSuchPathError):
        env.ns.stat("/r3/x")
    assert env.cache.blocks() == []


# -- cache operations ----------------------------------------------------------------------------


def test_pin_ttl_load_free_by_namespace_path(env: Env) -> None:
    (env.src / "k").mkdir()
    (env.src / "k/a").write_bytes(data(BS + 1))
    (env.src / "k/b").write_bytes(data(10))
    assert env.ns.load("/d/k") == BS + 11
    assert len(env.cache.blocks()) == 3
    assert env.ns.pin("/d/k") == 3
    assert all(b.pinned for b in env.cache.blocks())
    assert env.ns.unpin("/d/k") == 3
    assert env.ns.set_ttl("/d/k/a", 3600, "delete") == 2
    assert {b.ttl_action.value for b in env.cache.blocks("file://" + str(env.src / "k/a"))
            if b.ttl_action} == {"delete"}
    with pytest.raises(InvalidInputError, match="free or delete"):
        env.ns.set_ttl("/d/k/a", 10, "explode")
    assert env.ns.free("/d/k") == BS + 11
    assert env.cache.blocks() == []
    for op in (env.ns.pin, env.ns.unpin, env.ns.free, env.ns.load):
        with pytest.raises(NoSuchPathError):
            op("/d/missing")


def test_no_cache_configured_is_a_clear_error(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s")
    ns = Namespace(store)
    try:
        (tmp_path / "u").mkdir()
        ns.mount("/u", f"file://{tmp_path / 'u'}")
        ns.write_bytes("/u/f", b"abc")  # CACHE_THROUGH without a cache: THROUGH
        assert ns.read("/u/f") == b"abc"
        with pytest.raises(InvalidInputError, match="no block store"):
            ns.pin("/u/f")
        with pytest.raises(InvalidInputError, match="needs the block store"):
            ns.write_bytes("/u/g", b"abc", write_type="ASYNC_THROUGH")
    finally:
        ns.close()
        store.close()


# -- the gateway ---------------------------------------------------------------------------------


def test_gateway_reads_through_the_cache_and_sees_a_rewrite(env: Env) -> None:
    objects = ObjectStore(env.ns, spool_dir=env.root / "spool")
    f = env.src / "obj.bin"
    f.write_bytes(data(2 * BS + 3))
    info = objects.head("d", "obj.bin")
    reader = objects.open_range("d", info, 10, 2 * BS + 3)
    chunks = list(reader)
    assert max(len(c) for c in chunks) <= BS  # streamed block by block
    assert b"".join(chunks) == data(2 * BS + 3)[10:]
    assert env.cache.cached_blocks(env.ns.identity("/d/obj.bin")) == [0, 1, 2]
    rewrite(f, data(2 * BS + 3, 5))
    info = objects.head("d", "obj.bin")
    assert b"".join(objects.open_range("d", info, 0, info.size)) == data(2 * BS + 3, 5)


def test_gateway_write_types(env: Env) -> None:
    objects = ObjectStore(env.ns, spool_dir=env.root / "spool")
    w = objects.writer("d", "gw/async.bin", write_type="ASYNC_THROUGH")
    w.write(b"hello")
    w.commit('"5d41402abc4b2a76b9719d911017c592"')
    assert not (env.src / "gw/async.bin").exists()
    info = objects.head("d", "gw/async.bin")
    assert info.etag == '"5d41402abc4b2a76b9719d911017c592"'
    assert b"".join(objects.open_range("d", info, 0, 5)) == b"hello"
    assert [o.key for o in objects.list_objects("d", "", "", "", 100).objects] == \
        ["gw/async.bin"]
    assert env.ns.persister is not None
    env.ns.persister.drain()
    assert (env.src / "gw/async.bin").read_bytes() == b"hello"


def test_gateway_put_takes_the_write_type_header(env: Env) -> None:
    """``x-strata-write-type`` on a PutObject picks the write type of that request."""
    from starlette.testclient import TestClient

    from api.s3.app import S3Gateway

    app = S3Gateway(env.ns, credentials=None, region="us-east-1", max_object_bytes=1 << 20,
                    spool_dir=env.root / "spool")
    with TestClient(app) as client:
        r = client.put("/d/hdr/cache-only.bin", content=b"abc",
                       headers={"x-strata-write-type": "MUST_CACHE"})
        assert r.status_code == 200, r.text
        assert not (env.src / "hdr" / "cache-only.bin").exists()
        assert client.get("/d/hdr/cache-only.bin").content == b"abc"
        r = client.put("/d/hdr/through.bin", content=b"xyz",
                       headers={"x-strata-write-type": "THROUGH"})
        assert r.status_code == 200 and (env.src / "hdr" / "through.bin").read_bytes() == b"xyz"
        r = client.put("/d/hdr/bad.bin", content=b"x",
                       headers={"x-strata-write-type": "SOMETIMES"})
        assert r.status_code == 400 and b"<Code>" in r.content
        assert not (env.src / "hdr" / "bad.bin").exists()


def test_an_answer_loaded_across_an_invalidation_is_not_trusted() -> None:
    from catalog.fs.cached import TrustCache

    cache: TrustCache[str] = TrustCache()
    loads: list[str] = []

    def racing_load() -> str:  # a change (and its invalidation) lands while the answer loads
        loads.append("stale")
        cache.invalidate("s3://b/d")
        return "stale"

    assert cache.get("s3://b/d", 60, racing_load) == "stale"
    assert cache.get("s3://b/d", 60, lambda: "fresh") == "fresh"  # asked again, then kept
    assert cache.get("s3://b/d", 60, lambda: "later") == "fresh"
    assert cache.get("s3://b/d", 0, lambda: "untrusted") == "untrusted"  # interval 0: always asked
