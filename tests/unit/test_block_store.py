"""The tiered block store (catalog/cache): lifecycle, persistent verified index, reads and read
types, single flight, allocation and spill, eviction (LRU, LRFU), pin, TTL, promotion, quotas,
unpersisted blocks, stats. Read tests run over a 1-tier and a 3-tier layout."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from catalog.cache import (
    BlockInfo,
    BlockNotPersistedError,
    BlockStore,
    CacheConfig,
    CacheDirInUseError,
    CacheError,
    FileIdentity,
    ReadType,
    TempBlock,
    TtlAction,
)
from catalog.exceptions import InvalidInputError, UfsError
from catalog.store import StateStore

BS = 1024  # block size of every test store

#: Tier layouts: alias -> directory quotas (in blocks).
ONE_TIER = [("SSD", [8])]
THREE_TIERS = [("MEM", [2]), ("SSD", [2, 2]), ("HDD", [8])]
LAYOUTS = {"1tier": ONE_TIER, "3tier": THREE_TIERS}


def config(root: Path, layout: list[tuple[str, list[int]]], **kw: Any) -> CacheConfig:
    """Tiers of ``layout`` (alias, quotas in blocks); ``kw``: other settings."""
    tiers = [{"alias": alias,
              "dirs": [{"path": str(root / f"{alias}{i}"), "quota": q * BS}
                       for i, q in enumerate(quotas)]}
             for alias, quotas in layout]
    return CacheConfig.model_validate({"tiers": tiers, "block_size": BS, **kw})


class Source:
    """Under-storage files in memory, with a fetch that counts calls per file."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.mtimes: dict[str, int] = {}
        self.calls: list[tuple[str, int, int]] = []
        self.lock = threading.Lock()
        self.delay = 0.0

    def put(self, uri: str, size: int, seed: int = 0) -> FileIdentity:
        self.files[uri] = bytes((i * 7 + seed + len(uri)) % 251 for i in range(size))
        self.mtimes[uri] = self.mtimes.get(uri, 0) + 1
        return self.identity(uri)

    def identity(self, uri: str) -> FileIdentity:
        return FileIdentity(uri, len(self.files[uri]), self.mtimes[uri], etag=None)

    def fetch(self, uri: str) -> Callable[[int, int], bytes]:
        def f(start: int, end: int) -> bytes:
            with self.lock:
                self.calls.append((uri, start, end))
            if self.delay:
                time.sleep(self.delay)
            return self.files[uri][start:end]
        return f

    def count(self, uri: str | None = None) -> int:
        return sum(1 for c in self.calls if uri is None or c[0] == uri)


def no_fetch(start: int, end: int) -> bytes:
    raise AssertionError(f"under storage read [{start}, {end}) on a cached block")


@pytest.fixture
def src() -> Source:
    return Source()


@pytest.fixture
def opener(tmp_path: Path) -> Iterator[Callable[..., BlockStore]]:
    """Opens block stores over one state store; closes whatever is left open."""
    opened: list[BlockStore] = []

    def open_store(cfg: CacheConfig, **kw: Any) -> BlockStore:
        store = BlockStore(cfg, StateStore(tmp_path / "state"), **kw)
        opened.append(store)
        return store

    yield open_store
    for s in opened:
        s.close()


@pytest.fixture(params=sorted(LAYOUTS))
def layout(request: pytest.FixtureRequest) -> list[tuple[str, list[int]]]:
    return LAYOUTS[request.param]


def tier_of(store: BlockStore, ident: FileIdentity, index: int = 0) -> str | None:
    info = store.block_info(ident, index)
    return info.tier if info else None


def info(store: BlockStore, ident: FileIdentity, index: int = 0) -> BlockInfo:
    got = store.block_info(ident, index)
    assert got is not None, f"block {index} of {ident.uri} is not cached"
    return got


def index_rows(tmp_path: Path) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(tmp_path / "state" / "catalog.db")
    try:
        return con.execute("SELECT block_id, tier, size, persisted FROM cache_blocks").fetchall()
    finally:
        con.close()


# -- configuration ---------------------------------------------------------------------------


def test_config_parses_json_with_units(tmp_path: Path) -> None:
    cfg = CacheConfig.from_json(
        '{"block_size": "1MiB", "evictor": "LRFU", "tiers": ['
        f'{{"alias": "MEM", "dirs": [{{"path": "{tmp_path}/m", "quota": "2GiB"}}]}},'
        f'{{"alias": "HDD", "dirs": [{{"path": "{tmp_path}/h", "quota": 1000}}]}}]}}')
    assert cfg.block_size == 1024 * 1024
    assert cfg.tiers[0].dirs[0].quota == 2 * 1024 ** 3
    assert cfg.tiers[1].dirs[0].quota == 1000
    assert cfg.evictor.value == "LRFU"


@pytest.mark.parametrize("bad", [
    '{"tiers": []}',
    '{"tiers": [{"alias": "A", "dirs": [{"path": "/x", "quota": 1}]},'
    ' {"alias": "a", "dirs": [{"path": "/y", "quota": 1}]}]}',
    '{"tiers": [{"alias": "A", "dirs": [{"path": "/x", "quota": 1}]},'
    ' {"alias": "B", "dirs": [{"path": "/x", "quota": 1}]}]}',
    '{"tiers": [{"alias": "A", "dirs": [{"path": "/x", "quota": "lots"}]}]}',
    '{"tiers": [{"alias": "A", "dirs": [{"path": "/x", "quota": 1}]}], "evictor": "MRU"}',
    '{"tiers": [{"alias": "A", "dirs": [{"path": "/x", "quota": 1}]}], "colour": 1}',
])
def test_config_refuses_bad_input(bad: str) -> None:
    with pytest.raises((ValidationError, InvalidInputError)):
        CacheConfig.from_json(bad)


# -- lifecycle -------------------------------------------------------------------------------


def test_temp_block_is_invisible_until_commit(tmp_path: Path, opener: Callable[..., BlockStore],
                                              src: Source) -> None:
    store = opener(config(tmp_path, ONE_TIER))
    ident = src.put("file:///a", 600)
    temp = store.create_block(ident, 0)
    temp.write(src.files["file:///a"][:300])
    assert Path(temp.path).parent.name == ".tmp" and Path(temp.path).exists()
    assert store.block_info(ident, 0) is None and store.blocks() == []
    assert store.read(ident, 0, 600, src.fetch("file:///a"), ReadType.NO_CACHE) \
        == src.files["file:///a"]
    assert src.count() == 1 and store.block_info(ident, 0) is None
    assert index_rows(tmp_path) == []
    temp.write(src.files["file:///a"][300:])
    committed = temp.commit()
    assert not Path(temp.path).exists() and Path(committed.path).exists()
    assert store.block_info(ident, 0) == committed and committed.persisted
    assert [r[0] for r in index_rows(tmp_path)] == [committed.block_id]
    assert store.read(ident, 0, 600, no_fetch) == src.files["file:///a"]


def test_commit_after_a_reader_cached_the_block_keeps_one_copy(
        tmp_path: Path, opener: Callable[..., BlockStore], src: Source) -> None:
    store = opener(config(tmp_path, ONE_TIER))
    ident = src.put("file:///a", 500)
    temp = store.create_block(ident, 0)
    temp.write(src.files[ident.uri])
    store.put_block(ident, 0, src.files[ident.uri], persisted=False)  # a writer got there first
    assert info(store, ident).persisted is False
    committed = temp.commit(persisted=True)  # the data is in under storage: mark it so
    assert committed.persisted and info(store, ident).persisted
    assert not Path(temp.path).exists() and len(list(tmp_path.rglob(committed.block_id))) == 1
    assert store.stats().tiers[0].used_bytes == 500
    assert store.stats().tiers[0].dirs[0].reserved_bytes == 0


def test_abort_removes_the_temp_block_and_its_reservation(
        tmp_path: Path, opener: Callable[..., BlockStore], src: Source) -> None:
    store = opener(config(tmp_path, ONE_TIER))
    ident = src.put("file:///a", 2 * BS)
    temp = store.create_block(ident, 1)
    temp.write(b"x" * 10)
    assert store.stats().tiers[0].dirs[0].reserved_bytes == BS
    temp.abort()
    assert not Path(temp.path).exists()
    assert store.stats().tiers[0].dirs[0].reserved_bytes == 0
    assert store.block_info(ident, 1) is None
    with pytest.raises(RuntimeError):
        with store.create_block(ident, 0) as t2:
            t2.write(b"y" * 5)
            raise RuntimeError("writer failed")
    assert not Path(t2.path).exists() and t2.state == "aborted"
    tier = store.stats().tiers[0]
    assert tier.used_bytes == 0 and tier.dirs[0].reserved_bytes == 0


def test_commit_refuses_incomplete_or_overlong_blocks(
        tmp_path: Path, opener: Callable[..., BlockStore], src: Source) -> None:
    store = opener(config(tmp_path, ONE_TIER))
    ident = src.put("file:///a", 500)
    temp = store.create_block(ident, 0)
    temp.write(b"a" * 100)
    with pytest.raises(CacheError, match="incomplete"):
        temp.commit()
    assert not Path(temp.path).exists() and store.block_info(ident, 0) is None
    temp = store.create_block(ident, 0)
    with pytest.raises(CacheError, match="takes 500 bytes"):
        temp.write(b"a" * 501)
    assert not Path(temp.path).exists()
    with pytest.raises(ValueError):
        store.create_block(ident, 1)  # a 500-byte file has one block
    assert store.stats().tiers[0].dirs[0].reserved_bytes == 0


# -- the index, across restarts --------------------------------------------------------------


def test_index_survives_reopen(tmp_path: Path, opener: Callable[..., BlockStore], src: Source,
                               layout: list[tuple[str, list[int]]]) -> None:
    cfg = config(tmp_path, layout)
    store = opener(cfg)
    idents = [src.put(f"s3://b/t/f{i}", 1500 + i) for i in range(3)]
    for ident in idents:
        assert store.read(ident, 0, ident.size, src.fetch(ident.uri)) == src.files[ident.uri]
    before = {(b.block_id, b.tier, b.dir) for b in store.blocks()}
    assert len(before) == 6
    store.close()
    again = opener(cfg)
    assert {(b.block_id, b.tier, b.dir) for b in again.blocks()} == before
    for ident in idents:
        assert again.read(ident, 0, ident.size, no_fetch) == src.files[ident.uri]
    assert again.stats().misses == 0 and again.stats().hits == 6


def test_second_store_on_the_same_directories_is_refused(
        tmp_path: Path, opener: Callable[..., BlockStore]) -> None:
    cfg = config(tmp_path, ONE_TIER)
    first = opener(cfg)
    with pytest.raises(CacheDirInUseError):
        opener(cfg)
    first.close()
    opener(cfg).close()  # released on close


def test_verification_drops_corrupt_truncated_and_missing_blocks(
        tmp_path: Path, opener: Callable[..., BlockStore], src: Source,
        caplog: pytest.LogCaptureFixture) -> None:
    cfg = config(tmp_path, [("SSD", [16])])
    store = opener(cfg)
    idents = [src.put(f"file:///d/f{i}", BS) for i in range(5)]
    for ident in idents:
        store.read(ident, 0, BS, src.fetch(ident.uri))
    paths = [Path(info(store, i, 0).path) for i in idents]
    store.close()
    # f0 corrupt (same size), f1 truncated, f2 deleted, f3 and f4 intact
    raw = bytearray(paths[0].read_bytes())
    raw[100] ^= 0xFF
    paths[0].write_bytes(bytes(raw))
    with open(paths[1], "r+b") as f:
        f.truncate(BS - 1)
    paths[2].unlink()
    leftover = paths[0].parents[2] / ".tmp" / "deadbeef-0.1234"
    leftover.write_bytes(b"half a block")
    orphan = paths[0].parent / "ffff0000ffff0000ffff0000ffff0000-0"
    orphan.write_bytes(b"x" * BS)
    caplog.set_level(logging.WARNING, logger="catalog.cache")
    again = opener(cfg)
    assert "checksum" in caplog.text and "missing" in caplog.text
    assert sorted(again.cached_blocks(i) != [] for i in idents) == [False] * 3 + [True] * 2
    assert [again.block_info(i, 0) is not None for i in idents] == [False, False, False, True, True]
    assert not paths[0].exists() and not paths[1].exists()
    assert not leftover.exists() and not orphan.exists()
    assert {r[0] for r in index_rows(tmp_path)} == {
        info(again, i, 0).block_id for i in idents[3:]}
    for ident in idents[3:]:
        assert again.read(ident, 0, BS, no_fetch) == src.files[ident.uri]
    src.calls.clear()
    for ident in idents[:3]:
        assert again.read(ident, 0, BS, src.fetch(ident.uri)) == src.files[ident.uri]
    assert src.count() == 3


def test_size_only_verification_when_checksums_are_off(
        tmp_path: Path, opener: Callable[..., BlockStore], src: Source) -> None:
    cfg = config(tmp_path, ONE_TIER, verify_checksums=False)
    store = opener(cfg)
    a, b = src.put("file:///a", BS), src.put("file:///b", BS)
    store.read(a, 0, BS, src.fetch(a.uri))
    store.read(b, 0, BS, src.fetch(b.uri))
    pa, pb = (Path(info(store, i, 0).path) for i in (a, b))
    store.close()
    with open(pb, "ab") as f:
        f.write(b"!")
    again = opener(cfg)
    assert again.block_info(a, 0) is not None and again.block_info(b, 0) is None
    assert pa.exists() and not pb.exists()


def test_block_gone_bad_while_running_is_dropped_and_fetched_again(
        tmp_path: Path, opener: Callable[..., BlockStore], src: Source,
        layout: list[tuple[str, list[int]]]) -> None:
    store = opener(config(tmp_path, layout))
    ident = src.put("file:///a", 2 * BS)
    store.read(ident, 0, 2 * BS, src.fetch(ident.uri))
    with open(info(store, ident, 1).path, "r+b") as f:
        f.truncate(10)
    src.calls.clear()
    assert store.read(ident, 0, 2 * BS, src.fetch(ident.uri)) == src.files[ident.uri]
    assert src.calls == [(ident.uri, BS, 2 * BS)]
    Path(info(store, ident, 0).path).unlink()
    assert store.read(ident, 0, BS, src.fetch(ident.uri)) == src.files[ident.uri][:BS]
    assert src.count() == 2
    assert store.read(ident, 0, 2 * BS, no_fetch) == src.files[ident.uri]


# -- reads -----------------------------------------------------------------------------------


def test_cache_read_fetches_whole_blocks_once(tmp_path: Path, opener: Callable[..., BlockStore],
                                              src: Source,
                                              layout: list[tuple[str, list[int]]]) -> None:
    store = opener(config(tmp_path, layout))
    ident = src.put("s3://b/big", 3 * BS + 100)
    data = src.files[ident.uri]
    assert store.read(ident, 1000, 2100, src.fetch(ident.uri)) == data[1000:2100]
    assert src.calls == [(ident.uri, 0, BS), (ident.uri, BS, 2 * BS), (ident.uri, 2 * BS, 3 * BS)]
    assert store.read(ident, 0, 10 ** 9, src.fetch(ident.uri)) == data
    assert src.calls[-1] == (ident.uri, 3 * BS, 3 * BS + 100) and src.count() == 4
    assert store.read(ident, 5, 5, no_fetch) == b""
    assert store.read(ident, 3 * BS + 100, 4 * BS, no_fetch) == b""
    assert store.read(ident, 17, 3 * BS + 99, no_fetch) == data[17:3 * BS + 99]
    with pytest.raises(InvalidInputError):
        store.read(ident, 10, 5, no_fetch)
    empty = src.put("s3://b/empty", 0)
    assert store.read(empty, 0, 10, no_fetch) == b""


def test_changed_source_file_misses(tmp_path: Path, opener: Callable[..., BlockStore],
                                    src: Source, layout: list[tuple[str, list[int]]]) -> None:
    store = opener(config(tmp_path, layout))
    old = src.put("s3://b/f", 1500, seed=1)
    old_bytes = src.files[old.uri]
    assert store.read(old, 0, 1500, src.fetch(old.uri)) == old_bytes
    new = src.put("s3://b/f", 1500, seed=2)  # rewritten: same size, new mtime
    assert new != old and src.files[new.uri] != old_bytes
    assert store.read(new, 0, 1500, src.fetch(new.uri)) == src.files[new.uri]
    assert src.count() == 4
    assert store.cached_blocks(old) == [] and store.cached_blocks(new) == [0, 1]
    etag = FileIdentity(new.uri, new.size, new.mtime_ns, etag="other")
    assert store.block_info(etag, 0) is None


def test_no_cache_reads_through_without_caching_or_reordering(
        tmp_path: Path, opener: Callable[..., BlockStore], src: Source) -> None:
    store = opener(config(tmp_path, [("SSD", [2])]))
    ident = src.put("file:///cold", 3 * BS)
    assert store.read(ident, 100, 2500, src.fetch(ident.uri), "NO_CACHE") \
        == src.files[ident.uri][100:2500]
    assert src.calls == [(ident.uri, 100, BS), (ident.uri, BS, 2 * BS), (ident.uri, 2 * BS, 2500)]
    assert store.cached_blocks(ident) == [] and index_rows(tmp_path) == []
    a, b = src.put("file:///a", BS), src.put("file:///b", BS)
    store.read(a, 0, BS, src.fetch(a.uri))
    store.read(b, 0, BS, src.fetch(b.uri))
    assert store.read(a, 0, BS, no_fetch, ReadType.NO_CACHE) == src.files[a.uri]  # served
    c = src.put("file:///c", BS)
    store.read(c, 0, BS, src.fetch(c.uri))
    # a's NO_CACHE hit did not make it recent: a (least recently used) was evicted, not b
    assert store.block_info(a, 0) is None and store.block_info(b, 0) is not None


def test_streaming_iterator_spans_blocks_lazily(tmp_path: Path, opener: Callable[..., BlockStore],
                                                src: Source,
                                                layout: list[tuple[str, list[int]]]) -> None:
    store = opener(config(tmp_path, layout))
    ident = src.put("s3://b/stream", 5 * BS)
    data = src.files[ident.uri]
    it = store.iter_read(ident, 300, 4 * BS + 10, src.fetch(ident.uri), chunk_size=256)
    first = next(it)
    assert first == data[300:556] and src.count() == 1  # only the first block fetched so far
    chunks = [first, *it]
    assert all(0 < len(c) <= 256 for c in chunks)
    assert b"".join(chunks) == data[300:4 * BS + 10] and src.count() == 5
    warm = list(store.iter_read(ident, 0, 5 * BS, no_fetch, chunk_size=700))
    assert b"".join(warm) == data and max(map(len, warm)) <= 700


def test_concurrent_readers_of_a_cold_block_fetch_it_once(
        tmp_path: Path, opener: Callable[..., BlockStore], src: Source,
        layout: list[tuple[str, list[int]]]) -> None:
    store = opener(config(tmp_path, layout))
    ident = src.put("s3://b/hot", 2 * BS)
    src.delay = 0.2
    barrier = threading.Barrier(8)
    results: list[bytes] = []
    errors: list[BaseException] = []

    def reader() -> None:
        barrier.wait()
        try:
            results.append(store.read(ident, 0, 2 * BS, src.fetch(ident.uri)))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert results == [src.files[ident.uri]] * 8
    assert sorted(src.calls) == [(ident.uri, 0, BS), (ident.uri, BS, 2 * BS)]
    assert store.cached_blocks(ident) == [0, 1]


# -- partial cold reads: the range now, the block in the background -----------------------------


def test_partial_cold_read_is_served_at_once_and_its_block_filled_behind(
        tmp_path: Path, opener: Callable[..., BlockStore], src: Source,
        layout: list[tuple[str, list[int]]]) -> None:
    store = opener(config(tmp_path, layout, async_fill_below=0.5))
    ident = src.put("s3://b/part", 2 * BS)
    data = src.files[ident.uri]
    assert store.read(ident, 10, 30, src.fetch(ident.uri)) == data[10:30]
    assert src.calls[0] == (ident.uri, 10, 30)  # the reader's own range first
    assert store.wait_fills()
    assert sorted(src.calls) == [(ident.uri, 0, BS), (ident.uri, 10, 30)]
    assert store.cached_blocks(ident) == [0]  # block 1 was not read: not fetched
    s = store.stats()
    assert (s.hits, s.misses, s.bytes_from_ufs) == (0, 1, 20 + BS)  # one miss, not two
    assert store.read(ident, 0, BS, no_fetch) == data[:BS]  # a hit now
    # A read of most of a block waits for all of it, as before.
    assert store.read(ident, BS + 1, 2 * BS, src.fetch(ident.uri)) == data[BS + 1:]
    assert src.calls[-1] == (ident.uri, BS, 2 * BS) and store.cached_blocks(ident) == [0, 1]


def test_a_whole_block_reader_waits_for_the_background_fill(
        tmp_path: Path, opener: Callable[..., BlockStore], src: Source) -> None:
    store = opener(config(tmp_path, ONE_TIER, async_fill_below=0.5))
    ident = src.put("s3://b/shared", BS)
    data = src.files[ident.uri]
    src.delay = 0.3
    assert store.read(ident, 0, 8, src.fetch(ident.uri)) == data[:8]  # the fill is under way
    started = time.monotonic()
    assert store.read(ident, 0, BS, src.fetch(ident.uri)) == data  # waits for that fill
    assert time.monotonic() - started < 5
    assert sorted(src.calls) == [(ident.uri, 0, 8), (ident.uri, 0, BS)]  # the block once


@pytest.fixture
def filling(tmp_path: Path, opener: Callable[..., BlockStore]) -> BlockStore:
    """A block store with background fills of partial reads."""
    return opener(config(tmp_path, ONE_TIER, async_fill_below=0.5))


def _read_and_fill(store: BlockStore, ident: FileIdentity, lo: int, hi: int,
                   fetch: Callable[[int, int], bytes], caplog: pytest.LogCaptureFixture) -> bytes:
    """A partial read, and its background fill finished (its warnings in ``caplog``)."""
    with caplog.at_level(logging.WARNING, logger="catalog.cache"):
        got = store.read(ident, lo, hi, fetch)
        assert store.wait_fills()
    return got


@pytest.mark.parametrize("fault,logged", [
    ("fail", "connection reset"), ("rewrite", "changed while block 0 was being cached")])
def test_a_fill_gone_wrong_caches_nothing_and_its_reader_is_served(
        filling: BlockStore, src: Source, caplog: pytest.LogCaptureFixture, fault: str,
        logged: str) -> None:
    """``fail``: the whole-block fetch fails; ``rewrite``: the file changes (same size, new
    bytes) between the partial read and its fill."""
    ident = src.put(f"s3://b/{fault}", BS)
    old = src.files[ident.uri]
    fetch = src.fetch(ident.uri)

    def faulty(start: int, end: int) -> bytes:
        if fault == "fail" and end - start == BS:
            raise UfsError("connection reset while reading the whole block")
        got = fetch(start, end)
        if fault == "rewrite":
            src.files[ident.uri] = bytes(255 - b for b in old)
        return got

    assert _read_and_fill(filling, ident, 5, 50, faulty, caplog) == old[5:50]
    assert filling.cached_blocks(ident) == []  # never the new bytes under the old identity
    assert "background fill of block 0" in caplog.text and logged in caplog.text
    if fault == "fail":
        assert filling.read(ident, 0, BS, src.fetch(ident.uri)) == old  # a later read caches
        assert filling.cached_blocks(ident) == [0]


def test_a_full_fill_queue_serves_partial_reads_uncached(
        tmp_path: Path, opener: Callable[..., BlockStore], src: Source) -> None:
    store = opener(config(tmp_path, ONE_TIER, async_fill_below=0.5, async_fill_queue=0))
    ident = src.put("s3://b/busy", BS)
    assert store.read(ident, 0, 10, src.fetch(ident.uri)) == src.files[ident.uri][:10]
    assert store.wait_fills()
    assert src.calls == [(ident.uri, 0, 10)] and store.cached_blocks(ident) == []


def test_close_with_fills_waiting_does_not_hang(tmp_path: Path, src: Source) -> None:
    store = BlockStore(config(tmp_path, [("SSD", [16])], async_fill_below=0.5,
                              async_fill_workers=1), StateStore(tmp_path / "state"))
    ident = src.put("s3://b/many", 8 * BS)
    fetch = src.fetch(ident.uri)

    def slow_blocks(start: int, end: int) -> bytes:
        if end - start == BS:
            time.sleep(0.3)
        return fetch(start, end)

    for i in range(8):  # eight fills, one worker: most still waiting at close
        assert store.read(ident, i * BS, i * BS + 3, slow_blocks) == \
            src.files[ident.uri][i * BS:i * BS + 3]
    started = time.monotonic()
    store.close()
    assert time.monotonic() - started < 3  # the running fill finished, the others gave up
    reopened = BlockStore(config(tmp_path, [("SSD", [16])]), StateStore(tmp_path / "state"))
    try:
        cached = reopened.cached_blocks(ident)
        assert len(cached) < 8  # not all were fetched
        assert all(reopened.read(ident, i * BS, (i + 1) * BS, no_fetch)
                   == src.files[ident.uri][i * BS:(i + 1) * BS] for i in cached)
    finally:
        reopened.close()


def test_a_failed_fetch_reaches_every_waiting_reader(
        tmp_path: Path, opener: Callable[..., BlockStore]) -> None:
    store = opener(config(tmp_path, ONE_TIER))
    ident = FileIdentity("s3://b/broken", BS, 1)
    calls = []
    gate = threading.Event()

    def fetch(start: int, end: int) -> bytes:
        calls.append(start)
        gate.wait(5)
        raise UfsError("503 from the bucket")

    errors: list[BaseException] = []

    def reader() -> None:
        try:
            store.read(ident, 0, BS, fetch)
        except UfsError as e:
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    gate.set()
    for t in threads:
        t.join(10)
    assert len(errors) == 4 and len(calls) == 1
    assert store.block_info(ident, 0) is None
    with pytest.raises(UfsError, match="expected"):
        store.read(ident, 0, BS, lambda s, e: b"short")


# -- allocation, spill, eviction -------------------------------------------------------------


def test_spill_to_the_next_tier_when_a_quota_is_tiny(
        tmp_path: Path, opener: Callable[..., BlockStore], src: Source) -> None:
    cfg = CacheConfig.model_validate({"block_size": BS, "tiers": [
        {"alias": "MEM", "dirs": [{"path": str(tmp_path / "mem"), "quota": 100}]},
        {"alias": "SSD", "dirs": [{"path": str(tmp_path / "ssd"), "quota": 4 * BS}]}]})
    store = opener(cfg)
    small = src.put("file:///small", 80)
    big = src.put("file:///big", BS)
    store.read(big, 0, BS, src.fetch(big.uri))
    store.read(small, 0, 80, src.fetch(small.uri))
    assert tier_of(store, big) == "SSD" and tier_of(store, small) == "MEM"


def test_spill_when_a_directory_is_removed(tmp_path: Path, opener: Callable[..., BlockStore],
                                           src: Source,
                                           caplog: pytest.LogCaptureFixture) -> None:
    store = opener(config(tmp_path, [("MEM", [4]), ("SSD", [4])]))
    a = src.put("file:///a", BS)
    store.read(a, 0, BS, src.fetch(a.uri))
    assert tier_of(store, a) == "MEM"
    shutil.rmtree(tmp_path / "MEM0")
    caplog.set_level(logging.WARNING, logger="catalog.cache")
    b = src.put("file:///b", BS)
    assert store.read(b, 0, BS, src.fetch(b.uri)) == src.files[b.uri]
    assert tier_of(store, b) == "SSD" and "MEM0" in caplog.text
    assert store.stats().tiers[0].dirs[0].failing
    src.calls.clear()
    assert store.read(a, 0, BS, src.fetch(a.uri)) == src.files[a.uri]  # its file is gone
    assert src.count() == 1 and tier_of(store, a) == "SSD"
    assert not (tmp_path / "MEM0").exists()  # the store never recreates a storage directory


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_spill_on_write_errors(tmp_path: Path, opener: Callable[..., BlockStore], src: Source,
                               monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    store = opener(config(tmp_path, [("MEM", [4]), ("SSD", [2, 2])]))
    failing = str(tmp_path / "MEM0")
    real = TempBlock._write_fd

    def write_fd(self: TempBlock, data: Any) -> None:
        if self.path.startswith(failing):
            raise OSError(code, os.strerror(code))
        real(self, data)

    monkeypatch.setattr(TempBlock, "_write_fd", write_fd)
    idents = [src.put(f"file:///f{i}", BS) for i in range(3)]
    for ident in idents:
        assert store.read(ident, 0, BS, src.fetch(ident.uri)) == src.files[ident.uri]
    assert [tier_of(store, i) for i in idents] == ["SSD"] * 3
    assert not list((tmp_path / "MEM0" / ".tmp").iterdir())  # the failed temps were removed
    stats = store.stats()
    assert stats.tiers[0].used_bytes == 0 and stats.tiers[0].dirs[0].reserved_bytes == 0
    assert {d.blocks for d in stats.tiers[1].dirs} == {1, 2}  # max-free spreads the dirs


def test_write_errors_everywhere_read_through(tmp_path: Path, opener: Callable[..., BlockStore],
                                              src: Source, monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    store = opener(config(tmp_path, ONE_TIER))

    def write_fd(self: TempBlock, data: Any) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(TempBlock, "_write_fd", write_fd)
    ident = src.put("file:///a", 2 * BS)
    caplog.set_level(logging.WARNING, logger="catalog.cache")
    assert store.read(ident, 0, 2 * BS, src.fetch(ident.uri)) == src.files[ident.uri]
    assert store.cached_blocks(ident) == [] and "without caching" in caplog.text
    assert store.stats().pass_through >= 1


def test_a_directory_unusable_at_start_spills(tmp_path: Path,
                                              opener: Callable[..., BlockStore],
                                              src: Source) -> None:
    (tmp_path / "MEM0").write_text("a file where the directory should be")
    store = opener(config(tmp_path, [("MEM", [4]), ("SSD", [4])]))
    ident = src.put("file:///a", BS)
    assert store.read(ident, 0, BS, src.fetch(ident.uri)) == src.files[ident.uri]
    assert tier_of(store, ident) == "SSD" and store.stats().tiers[0].dirs[0].failing


def test_concurrent_reads_under_eviction_keep_the_books_exact(
        tmp_path: Path, opener: Callable[..., BlockStore], src: Source) -> None:
    import random

    store = opener(config(tmp_path, THREE_TIERS, promote_after_accesses=2))
    idents = [src.put(f"s3://b/f{i}", BS * (1 + i % 3) - (i % 2) * 100) for i in range(16)]
    errors: list[BaseException] = []

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(150):
                ident = rng.choice(idents)
                lo = rng.randrange(ident.size)
                hi = rng.randrange(lo, ident.size + 1)
                rt = rng.choice(list(ReadType))
                got = store.read(ident, lo, hi, src.fetch(ident.uri), rt)
                assert got == src.files[ident.uri][lo:hi]
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[0]
    stats = store.stats()
    assert sum(t.evictions for t in stats.tiers) > 0
    for tier in stats.tiers:
        for d in tier.dirs:
            files = [f for f in Path(d.path, "blocks").rglob("*") if f.is_file()]
            assert d.used_bytes == sum(f.stat().st_size for f in files) <= d.capacity_bytes
            assert d.blocks == len(files) and d.reserved_bytes == 0
            assert not list(Path(d.path, ".tmp").iterdir())
    assert len(index_rows(tmp_path)) == sum(t.blocks for t in stats.tiers)


@pytest.mark.parametrize("evictor, survivors", [
    ("LRU", "bcd"),   # a is the least recently used, however often it was read
    ("LRFU", "acd"),  # a's five reads outweigh b's one more recent read
])
def test_eviction_order(tmp_path: Path, opener: Callable[..., BlockStore], src: Source,
                        evictor: str, survivors: str) -> None:
    store = opener(config(tmp_path, [("SSD", [3])], evictor=evictor))
    files = {n: src.put(f"file:///{n}", BS) for n in "abcd"}
    for n in "abc":
        store.read(files[n], 0, BS, src.fetch(files[n].uri))
    for n in "aaaaabc":
        store.read(files[n], 0, BS, no_fetch)
    store.read(files["d"], 0, BS, src.fetch(files["d"].uri))
    assert "".join(n for n in "abcd" if store.block_info(files[n], 0)) == survivors
    assert store.stats().tiers[0].evictions == 1


def test_eviction_cascades_down_the_tiers(tmp_path: Path, opener: Callable[..., BlockStore],
                                          src: Source) -> None:
    store = opener(config(tmp_path, [("MEM", [1]), ("SSD", [1]), ("HDD", [1])]))
    idents = [src.put(f"file:///f{i}", BS) for i in range(4)]
    for ident in idents[:3]:
        store.read(ident, 0, BS, src.fetch(ident.uri))
    assert [tier_of(store, i) for i in idents[:3]] == ["MEM", "SSD", "HDD"]  # first with room
    store.read(idents[3], 0, BS, src.fetch(idents[3].uri))
    # room made in MEM: f0 (LRU) moved to SSD, f1 to HDD, f2 left the last tier
    assert [tier_of(store, i) for i in idents] == ["SSD", "HDD", None, "MEM"]
    assert store.read(idents[0], 0, BS, no_fetch) == src.files[idents[0].uri]
    assert [t.evictions for t in store.stats().tiers] == [1, 1, 1]
    for t in store.stats().tiers:
        for d in t.dirs:
            files = list(Path(d.path, "blocks").rglob("*-0"))
            assert len(files) == d.blocks and d.used_bytes <= d.capacity_bytes


def test_quota_shrink_evicts_on_restart(tmp_path: Path, opener: Callable[..., BlockStore],
                                        src: Source) -> None:
    store = opener(config(tmp_path, [("MEM", [4]), ("SSD", [4])]))
    idents = [src.put(f"file:///f{i}", BS) for i in range(4)]
    for ident in idents:
        store.read(ident, 0, BS, src.fetch(ident.uri))
    store.read(idents[0], 0, BS, no_fetch)  # f0 most recent, f1 least
    store.close()
    shrunk = opener(config(tmp_path, [("MEM", [2]), ("SSD", [1])]))
    stats = shrunk.stats()
    assert stats.tiers[0].used_bytes == 2 * BS and stats.tiers[1].used_bytes == BS
    assert [tier_of(shrunk, i) for i in idents] == ["MEM", None, "SSD", "MEM"]
    assert len(index_rows(tmp_path)) == 3
    assert shrunk.read(idents[2], 0, BS, no_fetch) == src.files[idents[2].uri]


# -- pin, TTL, free --------------------------------------------------------------------------


def test_pinned_blocks_are_never_evicted(tmp_path: Path, opener: Callable[..., BlockStore],
                                         src: Source) -> None:
    store = opener(config(tmp_path, [("SSD", [3])]))
    hot = src.put("s3://b/hot/part-0", BS)
    assert store.pin("s3://b/hot/") == 0
    store.read(hot, 0, BS, src.fetch(hot.uri))  # pinned as it is cached: the rule is a prefix
    assert info(store, hot, 0).pinned
    hotter = src.put("s3://b/hotter", 1)  # not under s3://b/hot/: prefixes are whole segments
    store.read(hotter, 0, 1, src.fetch(hotter.uri))
    assert not info(store, hotter, 0).pinned
    for i in range(6):
        cold = src.put(f"s3://b/cold/{i}", BS)
        store.read(cold, 0, BS, src.fetch(cold.uri))
    assert store.block_info(hot, 0) is not None
    assert store.stats().tiers[0].pinned_bytes == BS
    assert store.unpin("s3://b/hot") == 1 and not info(store, hot, 0).pinned
    for i in range(3):
        cold = src.put(f"s3://b/cold2/{i}", BS)
        store.read(cold, 0, BS, src.fetch(cold.uri))
    assert store.block_info(hot, 0) is None


def test_pins_survive_restart(tmp_path: Path, opener: Callable[..., BlockStore],
                              src: Source) -> None:
    cfg = config(tmp_path, [("SSD", [2])])
    store = opener(cfg)
    store.pin("file:///p")
    store.close()
    again = opener(cfg)
    assert [r.prefix for r in again.rules()] == ["file:///p"]
    kept = src.put("file:///p/x", BS)
    again.read(kept, 0, BS, src.fetch(kept.uri))
    for i in range(3):
        other = src.put(f"file:///q/{i}", BS)
        again.read(other, 0, BS, src.fetch(other.uri))
    assert again.block_info(kept, 0) is not None


def test_a_tier_full_of_pinned_data_passes_reads_through(
        tmp_path: Path, opener: Callable[..., BlockStore], src: Source,
        caplog: pytest.LogCaptureFixture, layout: list[tuple[str, list[int]]]) -> None:
    store = opener(config(tmp_path, layout))
    store.pin("file:///pinned")
    capacity = sum(q for _, quotas in layout for q in quotas)
    for i in range(capacity):
        ident = src.put(f"file:///pinned/{i}", BS)
        store.read(ident, 0, BS, src.fetch(ident.uri))
    assert sum(t.pinned_bytes for t in store.stats().tiers) == capacity * BS
    caplog.set_level(logging.WARNING, logger="catalog.cache")
    new = src.put("file:///other", 2 * BS)
    assert store.read(new, 0, 2 * BS, src.fetch(new.uri)) == src.files[new.uri]
    assert store.cached_blocks(new) == []
    assert "without caching" in caplog.text and "pinned" in caplog.text
    assert all(store.block_info(src.identity(f"file:///pinned/{i}"), 0) is not None
               for i in range(capacity))
    assert store.stats().pass_through == 2


def test_ttl_free_drops_expired_blocks(tmp_path: Path, opener: Callable[..., BlockStore],
                                       src: Source) -> None:
    now = [1000.0]
    store = opener(config(tmp_path, ONE_TIER), clock=lambda: now[0])
    tmp_file, kept = src.put("s3://b/tmp/x", 2 * BS), src.put("s3://b/keep", BS)
    store.read(tmp_file, 0, 2 * BS, src.fetch(tmp_file.uri))
    store.read(kept, 0, BS, src.fetch(kept.uri))
    assert store.set_ttl("s3://b/tmp", 60, "free") == 2
    assert info(store, tmp_file, 0).expire_at == 1060.0
    report = store.expire(now=1059.0)
    assert report.freed_blocks == 0 and store.cached_blocks(tmp_file) == [0, 1]
    report = store.expire(now=1060.5)
    assert report.freed_blocks == 2 and report.freed_bytes == 2 * BS and not report.deleted_files
    assert store.cached_blocks(tmp_file) == [] and store.block_info(kept, 0) is not None
    now[0] = 2000.0
    store.read(tmp_file, 0, BS, src.fetch(tmp_file.uri))  # cached again: expires 60 s from now
    assert info(store, tmp_file, 0).expire_at == 2060.0
    store.clear_ttl("s3://b/tmp")
    assert info(store, tmp_file, 0).expire_at is None
    assert store.expire(now=10 ** 6).freed_blocks == 0


def test_ttl_delete_calls_the_callers_delete(tmp_path: Path, opener: Callable[..., BlockStore],
                                             src: Source) -> None:
    deleted: list[str] = []
    store = opener(config(tmp_path, ONE_TIER), on_delete=deleted.append)
    a, b = src.put("s3://b/logs/a", BS), src.put("s3://b/logs/b", BS)
    store.read(a, 0, BS, src.fetch(a.uri))
    store.read(b, 0, BS, src.fetch(b.uri))
    store.set_ttl("s3://b/logs/a", 0, TtlAction.DELETE)
    report = store.expire()
    assert deleted == ["s3://b/logs/a"] and report.deleted_files == ["s3://b/logs/a"]
    assert store.block_info(a, 0) is None and store.block_info(b, 0) is not None

    def refuse(uri: str) -> None:
        raise OSError("under storage says no")

    store.set_ttl("s3://b/logs", 0, "delete")
    report = store.expire(on_delete=refuse)
    assert report.kept_files == ["s3://b/logs/b"] and store.block_info(b, 0) is not None
    with pytest.raises(InvalidInputError):
        store.set_ttl("s3://b/logs", -1)


def test_free_drops_cached_copies(tmp_path: Path, opener: Callable[..., BlockStore],
                                  src: Source) -> None:
    store = opener(config(tmp_path, ONE_TIER))
    idents = [src.put(u, BS) for u in ("s3://b/t/p=1/f", "s3://b/t/p=2/f", "s3://b/t2/f")]
    for ident in idents:
        store.read(ident, 0, BS, src.fetch(ident.uri))
    assert store.free("s3://b/t/") == 2 * BS  # not s3://b/t2: prefixes match whole segments
    assert [store.block_info(i, 0) is None for i in idents] == [True, True, False]
    assert not list((tmp_path / "SSD0" / "blocks").rglob(idents[0].key + "*"))
    assert list((tmp_path / "SSD0" / "blocks").rglob(idents[2].key + "*"))
    assert len(index_rows(tmp_path)) == 1


# -- unpersisted blocks ----------------------------------------------------------------------


def test_unpersisted_blocks_are_never_evicted_nor_freed(
        tmp_path: Path, opener: Callable[..., BlockStore], src: Source) -> None:
    cfg = config(tmp_path, [("SSD", [2])])
    store = opener(cfg)
    w = src.put("s3://b/written", 2 * BS)
    for i in range(2):
        assert store.put_block(w, i, src.files[w.uri][i * BS:(i + 1) * BS], persisted=False)
    assert [b.block_id for b in store.unpersisted()] == [f"{w.key}-0", f"{w.key}-1"]
    other = src.put("s3://b/other", BS)
    assert store.read(other, 0, BS, src.fetch(other.uri)) == src.files[other.uri]
    assert store.cached_blocks(other) == [] and store.cached_blocks(w) == [0, 1]
    with pytest.raises(BlockNotPersistedError, match="not persisted"):
        store.free("s3://b")
    assert store.cached_blocks(w) == [0, 1]
    store.close()
    store = opener(cfg)  # still unpersisted after a restart
    assert len(store.unpersisted()) == 2
    assert store.mark_persisted(w, [0]) == 1
    assert [b.index for b in store.unpersisted()] == [1]
    store.read(other, 0, BS, src.fetch(other.uri))
    assert store.cached_blocks(w) == [1] and store.cached_blocks(other) == [0]
    assert store.mark_persisted(w) == 1 and store.unpersisted() == []
    assert store.free("s3://b") == 2 * BS


def test_unpersisted_block_outlives_its_ttl_and_newer_version(
        tmp_path: Path, opener: Callable[..., BlockStore], src: Source) -> None:
    store = opener(config(tmp_path, ONE_TIER))
    w = src.put("s3://b/w", BS)
    store.put_block(w, 0, src.files[w.uri], persisted=False)
    store.set_ttl("s3://b", 0)
    report = store.expire()
    assert report.kept_files == ["s3://b/w"] and store.block_info(w, 0) is not None
    newer = src.put("s3://b/w", BS, seed=9)
    store.read(newer, 0, BS, src.fetch(newer.uri))
    assert store.block_info(w, 0) is not None  # a stale version is dropped only once persisted


# -- promotion -------------------------------------------------------------------------------


def test_cache_promote_moves_a_block_to_the_top_tier(
        tmp_path: Path, opener: Callable[..., BlockStore], src: Source) -> None:
    store = opener(config(tmp_path, THREE_TIERS))
    idents = [src.put(f"file:///f{i}", BS) for i in range(4)]
    for ident in idents:
        store.read(ident, 0, BS, src.fetch(ident.uri))
    assert [tier_of(store, i) for i in idents] == ["MEM", "MEM", "SSD", "SSD"]
    promoted = store.read(idents[3], 0, BS, no_fetch, ReadType.CACHE_PROMOTE)
    assert promoted == src.files[idents[3].uri]
    # MEM was full: its least recently used block (f0) went down to make room
    assert [tier_of(store, i) for i in idents] == ["SSD", "MEM", "SSD", "MEM"]
    top = info(store, idents[3])
    assert Path(top.path).exists() and "MEM0" in top.path
    assert len(list(tmp_path.rglob(top.block_id))) == 1  # the old copy is gone
    assert store.read(idents[0], 0, BS, no_fetch) == src.files[idents[0].uri]


def test_repeated_cache_reads_promote(tmp_path: Path, opener: Callable[..., BlockStore],
                                      src: Source) -> None:
    store = opener(config(tmp_path, THREE_TIERS, promote_after_accesses=2))
    idents = [src.put(f"file:///f{i}", BS) for i in range(3)]
    for ident in idents:
        store.read(ident, 0, BS, src.fetch(ident.uri))
    assert tier_of(store, idents[2]) == "SSD"
    store.read(idents[2], 0, BS, no_fetch)
    assert tier_of(store, idents[2]) == "SSD"
    store.read(idents[2], 0, BS, no_fetch, ReadType.NO_CACHE)  # NO_CACHE does not count
    assert tier_of(store, idents[2]) == "SSD"
    store.read(idents[2], 0, BS, no_fetch)
    assert tier_of(store, idents[2]) == "MEM"
    assert store.read(idents[2], 0, BS, no_fetch) == src.files[idents[2].uri]


def test_promotion_without_room_at_the_top_serves_in_place(
        tmp_path: Path, opener: Callable[..., BlockStore], src: Source) -> None:
    store = opener(config(tmp_path, [("MEM", [1]), ("SSD", [4])]))
    store.pin("file:///p")
    p, q = src.put("file:///p", BS), src.put("file:///q", BS)
    store.read(p, 0, BS, src.fetch(p.uri))
    store.read(q, 0, BS, src.fetch(q.uri))
    assert store.read(q, 0, BS, no_fetch, "CACHE_PROMOTE") == src.files[q.uri]
    assert tier_of(store, p) == "MEM" and tier_of(store, q) == "SSD"


# -- stats -----------------------------------------------------------------------------------


def test_stats_count_hits_misses_and_bytes(tmp_path: Path, opener: Callable[..., BlockStore],
                                           src: Source,
                                           layout: list[tuple[str, list[int]]]) -> None:
    store = opener(config(tmp_path, layout))
    ident = src.put("file:///f", 2 * BS)
    store.read(ident, 0, 2 * BS, src.fetch(ident.uri))
    store.read(ident, 0, 2 * BS, no_fetch)
    store.read(ident, 0, 10, no_fetch)
    s = store.stats()
    assert (s.hits, s.misses, s.bytes_from_ufs) == (3, 2, 2 * BS)
    assert s.hit_ratio == pytest.approx(3 / 5)
    assert sum(t.misses for t in s.tiers) == 2 and sum(t.hits for t in s.tiers) == 3
    assert sum(t.bytes_served for t in s.tiers) == 2 * BS + 10
    assert sum(t.used_bytes for t in s.tiers) == 2 * BS and sum(t.blocks for t in s.tiers) == 2
    assert s.tiers[0].capacity_bytes == sum(layout[0][1]) * BS
    d = s.as_dict()
    assert d["tiers"][0]["alias"] == layout[0][0] and "pinned_bytes" in d["tiers"][0]


def test_access_statistics_reach_the_index(tmp_path: Path, opener: Callable[..., BlockStore],
                                           src: Source) -> None:
    cfg = config(tmp_path, [("SSD", [3])], access_flush_every=1000)
    store = opener(cfg)
    a, b, c, d = (src.put(f"file:///{n}", BS) for n in "abcd")
    for ident in (a, b, c):
        store.read(ident, 0, BS, src.fetch(ident.uri))
    store.read(a, 0, BS, no_fetch)  # a now more recent than b
    store.close()  # close flushes
    again = opener(cfg)
    assert info(again, a, 0).access_count == 1
    again.read(d, 0, BS, src.fetch(d.uri))
    assert again.block_info(b, 0) is None and again.block_info(a, 0) is not None


def test_a_closed_store_refuses_work(tmp_path: Path, opener: Callable[..., BlockStore],
                                     src: Source) -> None:
    store = opener(config(tmp_path, ONE_TIER))
    store.close()
    ident = src.put("file:///a", 10)
    with pytest.raises(CacheError, match="closed"):
        store.read(ident, 0, 10, src.fetch(ident.uri))


def test_copies_go_to_distinct_devices_when_there_are_enough(tmp_path: Path) -> None:
    """Replicas (``avoid_dirs``) of a block prefer directories on another device than the
    copies before them, even over a directory with more room; with no other device left,
    another directory of the same device."""
    cfg = CacheConfig.model_validate({"block_size": BS, "tiers": [{"alias": "SSD", "dirs": [
        {"path": str(tmp_path / "a1"), "quota": 8 * BS, "device": "disk-a"},
        {"path": str(tmp_path / "a2"), "quota": 6 * BS, "device": "disk-a"},
        {"path": str(tmp_path / "b1"), "quota": 2 * BS, "device": "disk-b"}]}]})
    store = BlockStore(cfg, StateStore(tmp_path / "state"))
    try:
        devices = {d.path: d.device for d in store._dirs.values()}
        placed: list[tuple[str, str]] = []
        for i in range(3):
            first = store.create_block(FileIdentity(f"file:///f{i}", BS, 1), 0)
            second = store.create_block(FileIdentity(f"file:///f{i}", BS, 1, "copy-2"), 0,
                                        avoid_dirs=[first.dir.path])
            placed.append((devices[first.dir.path], devices[second.dir.path]))
            assert first.dir.path != second.dir.path
            for t in (first, second):
                t.write(b"x" * BS)
                store.commit_block(t, persisted=False)  # unpersisted: never evicted
        # disk-b has room for two copies: the first two replicas land there, the third on a2.
        assert placed[0] == ("disk-a", "disk-b") and placed[1] == ("disk-a", "disk-b")
        assert placed[2] == ("disk-a", "disk-a")
    finally:
        store.close()


def test_device_defaults_to_the_file_systems(tmp_path: Path) -> None:
    store = BlockStore(config(tmp_path, ONE_TIER), StateStore(tmp_path / "state"))
    try:
        (d,) = store._dirs.values()
        assert d.device == f"dev:{os.stat(d.path).st_dev}"
    finally:
        store.close()
