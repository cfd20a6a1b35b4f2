"""Reads that never wait: :meth:`BlockStore.read_cached` (cached blocks from a memory file system
or the page cache, else None with nothing changed), :meth:`Namespace.quick_identity` /
:meth:`Namespace.read_cached`, and the S3 gateway answering warm GETs on its event loop with
exactly the answers of its worker-thread path."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

import api.s3.app as s3app
import catalog.filesystems as filesystems
from api.s3.app import S3Gateway
from catalog.cache import BlockStore, CacheConfig, DirConfig, TierConfig
from catalog.filesystems import MEMORY_FILE_SYSTEMS, file_system_type, stat_is_local
from catalog.cache.model import FileIdentity, ReadType
import catalog.fs.namespace as namespace_module
from catalog.exceptions import NoSuchPathError
from catalog.fs.namespace import Namespace
from catalog.store import StateStore

BS = 64 * 1024
MiB = 1024 * 1024


def _ident(path: Path) -> FileIdentity:
    st = path.stat()
    return FileIdentity(f"file://{path}", st.st_size, st.st_mtime_ns)


def _fetcher(path: Path) -> Any:
    def fetch(start: int, end: int) -> bytes:
        with open(path, "rb") as f:
            f.seek(start)
            return f.read(end - start)
    return fetch


@pytest.fixture
def store(tmp_path: Path) -> Iterator[BlockStore]:
    state = StateStore(tmp_path / "state")
    cfg = CacheConfig(block_size=BS, promote_after_accesses=0, tiers=[
        TierConfig(alias="MEM", dirs=[DirConfig(path=tmp_path / "mem", quota=4 * MiB)]),
        TierConfig(alias="SSD", dirs=[DirConfig(path=tmp_path / "ssd", quota=4 * MiB)])])
    bs = BlockStore(cfg, state)
    yield bs
    bs.close()
    state.close()


def test_file_system_types() -> None:
    assert file_system_type("/proc/self") == "proc"
    if os.path.isdir("/dev/shm"):
        assert file_system_type("/dev/shm") in MEMORY_FILE_SYSTEMS | {"devtmpfs"}
    assert file_system_type(os.getcwd()) is not None


@pytest.mark.parametrize("fs_type,local", [("ext4", True), ("tmpfs", True), ("nfs4", False),
                                           ("cifs", False), ("fuse.sshfs", False), (None, False)])
def test_stat_is_local_only_off_the_network(monkeypatch: pytest.MonkeyPatch,
                                            fs_type: str | None, local: bool) -> None:
    monkeypatch.setattr(filesystems, "file_system_type", lambda path: fs_type)
    assert stat_is_local("/anywhere") is local


def test_read_cached_serves_only_what_is_cached(store: BlockStore, tmp_path: Path) -> None:
    src = tmp_path / "f.bin"
    data = os.urandom(3 * BS + 100)
    src.write_bytes(data)
    ident = _ident(src)
    before = store.stats()
    assert store.read_cached(ident, 0, len(data)) is None  # nothing cached
    assert store.read_cached(ident, 10, 10) == b""
    # One block cached: a range inside it is served, one reaching the next block is not.
    assert store.read(ident, 0, 10, _fetcher(src)) == data[:10]
    assert store.wait_fills()  # the partial read's block, filled in the background
    after_fill = store.stats()
    assert after_fill.misses == before.misses + 1
    assert store.read_cached(ident, 5, BS) == data[5:BS]
    assert store.read_cached(ident, 5, BS + 1) is None
    s = store.stats()
    assert (s.hits, s.misses) == (after_fill.hits + 1, after_fill.misses)  # a None counts nothing
    store.read(ident, 0, len(data), _fetcher(src))
    assert store.read_cached(ident, 0, len(data)) == data  # over every block
    assert store.read_cached(ident, BS - 3, len(data) + 99) == data[BS - 3:]  # end clamped
    with pytest.raises(Exception, match="bad byte range"):
        store.read_cached(ident, 5, 2)


def test_read_cached_counts_hits_and_accesses(store: BlockStore, tmp_path: Path) -> None:
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(BS))
    ident = _ident(src)
    store.read(ident, 0, BS, _fetcher(src))
    info = store.block_info(ident, 0)
    assert info is not None
    hits = store.stats().hits
    assert store.read_cached(ident, 0, BS) is not None
    assert store.read_cached(ident, 0, 5, ReadType.NO_CACHE) is not None
    assert store.stats().hits == hits + 2
    later = store.block_info(ident, 0)
    assert later is not None and later.access_count == info.access_count + 1  # NO_CACHE: no touch


def test_read_cached_leaves_promotions_to_the_thread(tmp_path: Path) -> None:
    state = StateStore(tmp_path / "state")
    cfg = CacheConfig(block_size=BS, promote_after_accesses=2, tiers=[  # MEM: under a block
        TierConfig(alias="MEM", dirs=[DirConfig(path=tmp_path / "mem", quota=BS // 2)]),
        TierConfig(alias="SSD", dirs=[DirConfig(path=tmp_path / "ssd", quota=4 * MiB)])])
    store = BlockStore(cfg, state)
    try:
        src = tmp_path / "f.bin"
        data = os.urandom(BS)
        src.write_bytes(data)
        ident = _ident(src)
        store.read(ident, 0, BS, _fetcher(src))
        info = store.block_info(ident, 0)
        assert info is not None and info.tier == "SSD"
        assert store.read_cached(ident, 0, BS, ReadType.CACHE_PROMOTE) is None
        assert store.read_cached(ident, 0, BS, ReadType.NO_CACHE) == data  # never promotes
        assert store.read_cached(ident, 0, BS) == data  # a first hit in the tier
        assert store.read_cached(ident, 0, BS) is None  # the second would promote it
        assert store.read(ident, 0, BS, _fetcher(src)) == data  # the thread's read promotes
        info = store.block_info(ident, 0)
        assert info is not None and info.tier == "SSD"  # MEM is too small: stays, and
        assert store.read_cached(ident, 0, BS, ReadType.NO_CACHE) == data  # still served
    finally:
        store.close()
        state.close()


def test_read_cached_of_pages_not_in_memory_is_left_to_the_thread(store: BlockStore,
                                                                  tmp_path: Path) -> None:
    src = tmp_path / "f.bin"
    data = os.urandom(2 * BS)
    src.write_bytes(data)
    ident = _ident(src)
    store.read(ident, 0, len(data), _fetcher(src))
    info = store.block_info(ident, 1)
    assert info is not None
    block = store._blocks[info.block_id]
    if block.dir.in_memory:
        pytest.skip(f"{block.dir.path} is on a memory file system: its pages never leave")
    fd = os.open(block.path, os.O_RDONLY)
    try:
        for _ in range(20):  # the kernel drops clean pages only (writeback may still run)
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            try:
                os.preadv(fd, [bytearray(16)], 0, os.RWF_NOWAIT)
            except BlockingIOError:
                break
            time.sleep(0.05)
        else:
            pytest.skip("this file system kept the pages (or ignores RWF_NOWAIT)")
    finally:
        os.close(fd)
    assert store.read_cached(ident, BS, 2 * BS) is None  # would wait for the disk
    assert store.read_cached(ident, 0, BS) == data[:BS]  # block 0 is still in the page cache
    assert store.read(ident, 0, len(data), _fetcher(src)) == data  # the thread's read
    assert store.read_cached(ident, BS, 2 * BS) == data[BS:]  # now in memory again


# -- the namespace -------------------------------------------------------------------------------


@pytest.fixture
def ns(tmp_path: Path) -> Iterator[Namespace]:
    state = StateStore(tmp_path / "nstate")
    cache = BlockStore(CacheConfig(block_size=BS, tiers=[TierConfig(alias="MEM", dirs=[
        DirConfig(path=tmp_path / "cache", quota=8 * MiB)])]), state)
    namespace = Namespace(state, cache=cache, persister=False)
    for name in ("now", "kept"):
        (tmp_path / name).mkdir()
    namespace.mount("/now", f"file://{tmp_path / 'now'}")  # interval 0: always asked
    namespace.mount("/kept", f"file://{tmp_path / 'kept'}", {"metadata.sync.interval": "60"})
    yield namespace
    namespace.close()
    cache.close()
    state.close()


def test_quick_identity_needs_a_trusted_answer_off_a_local_disk(
        as_if_on_nfs: None, ns: Namespace, tmp_path: Path) -> None:
    _put(tmp_path, "a.bin", b"0123456789")
    assert ns.quick_identity("/now/a.bin") is None
    assert ns.quick_identity("/kept/a.bin") is None  # never asked yet
    ident = ns.identity("/kept/a.bin")
    assert ns.quick_identity("/kept/a.bin") == ident
    assert ns.read_cached("/kept/a.bin", ident, 0, 10) is None  # not cached yet
    assert b"".join(ns.iter_range("/kept/a.bin")) == b"0123456789"
    assert ns.read_cached("/kept/a.bin", ident, 2, 5) == b"234"
    ns.forget(ident.uri)
    assert ns.quick_identity("/kept/a.bin") is None
    assert ns.quick_identity("/now/a.bin") is None


def test_quick_identity_stats_a_local_disk(ns: Namespace, tmp_path: Path) -> None:
    if not stat_is_local(str(tmp_path)):
        pytest.skip(f"{tmp_path} is on a network file system")
    _put(tmp_path, "a.bin", b"0123456789")
    assert ns.quick_identity("/now/a.bin") == ns.identity("/now/a.bin")
    with pytest.raises(NoSuchPathError):
        ns.quick_identity("/now/missing.bin")


# -- the gateway ---------------------------------------------------------------------------------


@pytest.fixture
def as_if_on_nfs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every mount's stats as if they could wait on a network (a file system this machine
    cannot mount for a test): only trusted identities are quick."""
    monkeypatch.setattr(namespace_module, "stat_is_local", lambda path: False)


@pytest.fixture
def gateway(ns: Namespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
            ) -> Iterator[tuple[TestClient, list[str]]]:
    hops: list[str] = []
    run = s3app._run

    async def counting_run(fn: Any, *args: Any, **kwargs: Any) -> Any:  # a spy: which path
        hops.append(getattr(fn, "__name__", "?"))
        return await run(fn, *args, **kwargs)

    monkeypatch.setattr(s3app, "_run", counting_run)
    app = S3Gateway(ns, credentials=None, region="us-east-1", max_object_bytes=8 * MiB,
                    spool_dir=tmp_path / "spool")
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, hops


REQUESTS: list[tuple[str, dict[str, str]]] = [
    ("GET", {}),
    ("HEAD", {}),
    ("GET", {"Range": "bytes=100-199"}),
    ("GET", {"Range": "bytes=-7"}),
    ("GET", {"Range": f"bytes={3 * BS}-"}),
    ("GET", {"Range": "bytes=999999-"}),  # 416
    ("GET", {"If-None-Match": "*"}),  # 304
    ("GET", {"If-Match": '"nope"'}),  # 412
    ("GET", {"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}),
]


def _put(tmp_path: Path, name: str, data: bytes) -> None:
    """The same file (bytes and mtime) under both mounts."""
    for mount in ("now", "kept"):
        path = tmp_path / mount / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))


def _answer(r: Any) -> tuple[int, bytes, dict[str, str]]:
    """Status, body and headers of an answer, its request id left out."""
    headers = {k: v for k, v in r.headers.items() if k != "x-amz-request-id"}
    body = re.sub(rb"<RequestId>[0-9A-F]+</RequestId>", b"", r.content)
    return r.status_code, body, headers


def test_warm_gets_are_answered_on_the_event_loop_as_the_thread_answers(
        as_if_on_nfs: None, gateway: tuple[TestClient, list[str]], ns: Namespace,
        tmp_path: Path) -> None:
    client, hops = gateway
    data = os.urandom(3 * BS + 11)
    _put(tmp_path, "o.bin", data)
    assert client.get("/kept/o.bin").content == data  # cold: in the thread, cached now
    assert hops == ["_get_object"]
    etag = client.head("/kept/o.bin").headers["etag"]
    uri = ns.identity("/kept/o.bin").uri
    for method, headers in REQUESTS + [("GET", {"If-Match": etag}),
                                       ("GET", {"If-None-Match": etag})]:
        hops.clear()
        ns.forget(uri)  # the identity is asked for again: the thread answers
        slow = _answer(client.request(method, "/kept/o.bin", headers=headers))
        assert hops == ["_get_object"], (method, headers)
        hops.clear()
        fast = _answer(client.request(method, "/kept/o.bin", headers=headers))
        assert hops == [], (method, headers)
        assert fast == slow, (method, headers)
    hops.clear()
    assert client.get("/now/o.bin").content == data
    assert client.get("/now/o.bin").content == data
    assert hops == ["_get_object"] * 2  # interval 0: always asked, always the thread


def test_the_event_loop_leaves_the_rest_to_the_thread(as_if_on_nfs: None,
                                                      gateway: tuple[TestClient, list[str]],
                                                      ns: Namespace, tmp_path: Path) -> None:
    client, hops = gateway
    lake = tmp_path / "kept"
    (lake / "big.bin").write_bytes(os.urandom(2 * MiB))
    (lake / "dir").mkdir()
    r = client.get("/kept/big.bin")
    assert r.status_code == 200 and len(r.content) == 2 * MiB
    hops.clear()
    assert client.get("/kept/big.bin").status_code == 200  # over WHOLE_BODY_BYTES: streamed
    assert hops == ["_get_object"]
    hops.clear()
    r = client.get("/kept/missing.bin")
    assert r.status_code == 404 and b"NoSuchKey" in r.content and hops == ["_get_object"]
    hops.clear()
    assert client.head("/kept/dir/").status_code in (200, 404) and hops == ["_get_object"]
    # A rewrite through the namespace is never answered from the trusted identity.
    (lake / "v.bin").write_bytes(b"old bytes")
    assert client.get("/kept/v.bin").content == b"old bytes"
    assert client.put("/kept/v.bin", content=b"new bytes!").status_code == 200
    hops.clear()
    assert client.get("/kept/v.bin").content == b"new bytes!"
    assert hops == ["_get_object"]  # the write dropped the trusted identity
    hops.clear()
    assert client.get("/kept/v.bin").content == b"new bytes!"
    assert hops == []


def test_a_local_disk_mount_is_answered_on_the_event_loop_and_never_stale(
        gateway: tuple[TestClient, list[str]], tmp_path: Path) -> None:
    if not stat_is_local(str(tmp_path)):
        pytest.skip(f"{tmp_path} is on a network file system")
    client, hops = gateway
    path = tmp_path / "now" / "f.bin"
    path.write_bytes(b"first version")
    assert client.get("/now/f.bin").content == b"first version"  # cold: the thread caches it
    assert hops == ["_get_object"]
    hops.clear()
    assert client.get("/now/f.bin").content == b"first version"
    assert client.head("/now/f.bin").status_code == 200
    assert hops == []  # a local stat and a cached block: no thread
    st = path.stat()
    path.write_bytes(b"second  version")  # rewritten behind Strata's back (interval 0)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert client.get("/now/f.bin").content == b"second  version"  # the stat saw it at once
    assert client.get("/now/missing.bin").status_code == 404
