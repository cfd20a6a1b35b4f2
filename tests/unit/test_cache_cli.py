"""``catalogctl fs pin|unpin|free|set-ttl|load|persist`` and ``catalogctl cache report`` against
a real REST server (uvicorn in a thread) over a real local mount and a small two-tier block
store; the same endpoints over REST (status codes, error bodies, auth)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.cli import main
from api.rest.app import cache_report, create_app
from catalog.cache import CacheConfig, TtlAction
from catalog.config import Settings
from catalog.service import CatalogService
from tests.support.s3_gateway import GatewayServer

TOKEN = "cache-cli-test-token-0123456789"
BS = 64 * 1024  # block size
MEM_QUOTA, SSD_QUOTA = 4 * BS, 16 * BS
REPORT_KEYS = {"capacity_bytes", "used_bytes", "blocks", "pinned_bytes", "hit_ratio"}


class Server:
    def __init__(self, url: str, service: CatalogService, lake: Path) -> None:
        self.url = url
        self.service = service
        self.lake = lake

    def api(self, method: str, url: str, token: str | None = TOKEN, **params: str | float
            ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.request(method, self.url + url, params=params, headers=headers,
                             timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("cache-cli")
    lake = root / "lake"
    lake.mkdir()
    tiers = CacheConfig.model_validate({"block_size": BS, "tiers": [
        {"alias": "MEM", "dirs": [{"path": str(root / "mem"), "quota": MEM_QUOTA}]},
        {"alias": "SSD", "dirs": [{"path": str(root / "ssd0"), "quota": SSD_QUOTA // 2},
                                  {"path": str(root / "ssd1"), "quota": SSD_QUOTA // 2}]}]})
    service = CatalogService(Settings(data_dir=root / "state", cache_tiers=tiers))
    assert service.fs.cache is not None and service.fs.persister is not None
    service.fs.persister.paused.set()  # persists happen when a test asks for them
    service.mount("/lake", f"file://{lake}", {})
    try:
        with GatewayServer(create_app(service, token=TOKEN)) as rest:
            yield Server(rest.endpoint, service, lake)
    finally:
        service.close()


@pytest.fixture
def srv(server: Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """The shared server with an empty cache and lake, CATALOG_SERVER / token set."""
    monkeypatch.setenv("CATALOG_SERVER", server.url)
    monkeypatch.setenv("CATALOG_API_TOKEN", TOKEN)
    yield server
    cache = server.service.fs.cache
    assert cache is not None
    for rule in cache.rules():
        cache.unpin(rule.prefix)
        cache.clear_ttl(rule.prefix)
    server.service.fs.free("/lake")
    assert cache.stats().tiers[0].blocks == 0
    for f in server.lake.rglob("*"):
        if f.is_file():
            f.unlink()


def put(srv: Server, name: str, size: int) -> bytes:
    data = bytes((i * 31 + len(name)) % 251 for i in range(size))
    (srv.lake / name).write_bytes(data)
    return data


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def report(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    code, out, err = run(capsys, "cache", "report", "--json")
    assert code == 0, err
    result: dict[str, object] = json.loads(out)
    return result


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("catalogctl: error: "), err
    assert "Traceback" not in err
    return lines[0]


# -- load / report -------------------------------------------------------------------------------


def test_load_fills_the_cache_and_report_shows_it(srv: Server,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    put(srv, "a.bin", 3 * BS + 100)  # 4 blocks
    code, out, err = run(capsys, "fs", "load", "/lake/a.bin")
    assert code == 0, err
    assert out.strip() == "loaded /lake/a.bin (192.1 KiB)"
    r = report(capsys)
    assert REPORT_KEYS <= set(r)
    assert r["used_bytes"] == 3 * BS + 100 and r["blocks"] == 4
    assert r["capacity_bytes"] == MEM_QUOTA + SSD_QUOTA and r["pinned_bytes"] == 0
    tiers = r["tiers"]
    assert isinstance(tiers, list) and [t["alias"] for t in tiers] == ["MEM", "SSD"]
    for t in tiers:
        assert set(t) == REPORT_KEYS | {"alias", "dirs"}
        for d in t["dirs"]:
            assert set(d) == REPORT_KEYS | {"path"} and d["hit_ratio"] is None
        assert t["used_bytes"] == sum(d["used_bytes"] for d in t["dirs"])
    assert [len(t["dirs"]) for t in tiers] == [1, 2]
    assert tiers[0]["used_bytes"] == 3 * BS + 100  # the fastest tier takes them first


def test_report_hit_ratio_per_tier_adds_up(srv: Server,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    data = put(srv, "h.bin", BS)
    fs = srv.service.fs
    before = fs.cache.stats() if fs.cache else None
    assert before is not None
    assert fs.read("/lake/h.bin") == data  # a miss
    assert fs.read("/lake/h.bin") == data  # a hit
    assert fs.read("/lake/h.bin") == data  # a hit
    r = report(capsys)
    stats = fs.cache.stats() if fs.cache else None
    assert stats is not None and stats.hits >= before.hits + 2
    assert r["hit_ratio"] == pytest.approx(stats.hits / (stats.hits + stats.misses))
    tiers = r["tiers"]
    assert isinstance(tiers, list)
    assert sum(t["hit_ratio"] for t in tiers) == pytest.approx(r["hit_ratio"])
    code, out, err = run(capsys, "cache", "report")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["TIER", "DIRECTORY", "CAPACITY", "USED", "USE%", "BLOCKS",
                                "PINNED", "HIT", "RATIO"]
    assert lines[1].split()[0] == "MEM" and lines[-1].split()[0] == "total"
    assert lines[-1].split()[-1] == f"{100 * float(str(r['hit_ratio'])):.1f}%"
    assert any(str(srv.lake.parent / "ssd1") in line for line in lines)


def test_cache_report_matches_the_store(srv: Server) -> None:
    put(srv, "m.bin", 2 * BS)
    srv.service.fs.load("/lake/m.bin")
    srv.service.fs.pin("/lake/m.bin")
    cache = srv.service.fs.cache
    assert cache is not None
    body = srv.api("GET", "/api/v1/cache", token=None)  # a read: no token needed
    assert body.status_code == 200
    assert body.json() == cache_report(cache.stats()).model_dump(mode="json")
    assert body.json()["pinned_bytes"] == 2 * BS


# -- pin / unpin / free / set-ttl ----------------------------------------------------------------


def test_pin_unpin(srv: Server, capsys: pytest.CaptureFixture[str]) -> None:
    put(srv, "p.bin", 2 * BS)
    assert run(capsys, "fs", "load", "/lake/p.bin")[0] == 0
    code, out, err = run(capsys, "fs", "pin", "/lake/p.bin")
    assert code == 0, err
    assert out.strip() == "pinned /lake/p.bin (2 cached block(s))"
    assert report(capsys)["pinned_bytes"] == 2 * BS
    cache = srv.service.fs.cache
    assert cache is not None
    assert [r.prefix for r in cache.rules() if r.pinned] == [f"file://{srv.lake}/p.bin"]
    code, out, err = run(capsys, "fs", "unpin", "/lake/p.bin", "--json")
    assert code == 0, err
    assert json.loads(out) == {"path": "/lake/p.bin", "action": "unpin", "blocks": 2,
                               "bytes": None, "files": None}
    assert report(capsys)["pinned_bytes"] == 0


def test_pin_a_directory_covers_later_reads(srv: Server,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "fs", "pin", "/lake")[0] == 0
    put(srv, "later.bin", BS)
    srv.service.fs.read("/lake/later.bin")
    assert report(capsys)["pinned_bytes"] == BS


def test_free(srv: Server, capsys: pytest.CaptureFixture[str]) -> None:
    put(srv, "f.bin", BS + 1)
    assert run(capsys, "fs", "load", "/lake/f.bin")[0] == 0
    code, out, err = run(capsys, "fs", "free", "/lake")
    assert code == 0, err
    assert out.strip() == "freed /lake (64.0 KiB)"  # 65,537 bytes
    assert json.loads(run(capsys, "fs", "free", "/lake", "--json")[1])["bytes"] == 0
    r = report(capsys)
    assert r["blocks"] == 0 and r["used_bytes"] == 0


def test_set_ttl(srv: Server, capsys: pytest.CaptureFixture[str]) -> None:
    put(srv, "t.bin", BS)
    assert run(capsys, "fs", "load", "/lake/t.bin")[0] == 0
    code, out, err = run(capsys, "fs", "set-ttl", "/lake/t.bin", "3600", "--action", "delete")
    assert code == 0, err
    assert out.strip() == "TTL set on /lake/t.bin (1 cached block(s), delete after 3600s)"
    cache = srv.service.fs.cache
    assert cache is not None
    rule = next(r for r in cache.rules() if r.prefix.endswith("/t.bin"))
    assert rule.ttl_s == 3600 and rule.ttl_action is TtlAction.DELETE
    assert run(capsys, "fs", "set-ttl", "/lake/t.bin", "0")[0] == 0  # default action: free
    rule = next(r for r in cache.rules() if r.prefix.endswith("/t.bin"))
    assert rule.ttl_s == 0 and rule.ttl_action is TtlAction.FREE
    cache.expire()
    assert report(capsys)["blocks"] == 0
    assert (srv.lake / "t.bin").exists()  # free drops cached copies only


@pytest.mark.parametrize("argv", [
    ("fs", "set-ttl", "/lake/x", "-1"),
    ("fs", "set-ttl", "/lake/x", "soon"),
    ("fs", "set-ttl", "/lake/x", "inf"),
    ("fs", "set-ttl", "/lake/x", "10", "--action", "evict"),
    ("fs", "pin"),
    ("cache",),
])
def test_usage_errors(srv: Server, capsys: pytest.CaptureFixture[str],
                      argv: tuple[str, ...]) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    one_error_line(err)


# -- persist -------------------------------------------------------------------------------------


def test_persist_an_async_write_and_free_refused_before(srv: Server,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    fs = srv.service.fs
    fs.write_bytes("/lake/w.bin", b"x" * 1000, write_type="ASYNC_THROUGH")
    assert not (srv.lake / "w.bin").exists()  # the persister is paused
    code, _, err = run(capsys, "fs", "free", "/lake/w.bin")
    assert code == 1
    assert "not persisted" in one_error_line(err)
    r = srv.api("POST", "/api/v1/fs/free", path="/lake/w.bin")
    assert r.status_code == 409 and r.json()["error"]["type"] == "BlockNotPersistedError"
    code, out, err = run(capsys, "fs", "persist", "/lake")
    assert code == 0, err
    assert out.strip() == "persisted /lake (1 file(s))"
    assert (srv.lake / "w.bin").read_bytes() == b"x" * 1000
    code, out, err = run(capsys, "fs", "persist", "/lake", "--json")
    assert code == 0 and json.loads(out)["files"] == 0
    assert run(capsys, "fs", "free", "/lake/w.bin")[0] == 0


# -- errors and REST -----------------------------------------------------------------------------


def test_missing_path_is_one_error_line(srv: Server, capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("pin", "unpin", "free", "load", "persist"):
        code, _, err = run(capsys, "fs", command, "/lake/missing.bin")
        assert code == 1, command
        assert "missing.bin" in one_error_line(err)
    code, _, err = run(capsys, "fs", "set-ttl", "/lake/missing.bin", "5")
    assert code == 1
    code, _, err = run(capsys, "fs", "pin", "relative/path")
    assert code == 2  # InvalidInputError
    assert "absolute" in one_error_line(err)


def test_rest_endpoints(srv: Server) -> None:
    put(srv, "r.bin", BS)
    r = srv.api("POST", "/api/v1/fs/load", path="/lake/r.bin")
    assert r.status_code == 200 and r.json()["bytes"] == BS
    r = srv.api("POST", "/api/v1/fs/pin", path="/lake/r.bin")
    assert r.status_code == 200 and r.json()["blocks"] == 1
    r = srv.api("POST", "/api/v1/fs/ttl", path="/lake/r.bin", seconds=60, action="delete")
    assert r.status_code == 200 and r.json() == {"path": "/lake/r.bin", "action": "set-ttl",
                                                 "blocks": 1, "bytes": None, "files": None}
    r = srv.api("POST", "/api/v1/fs/ttl", path="/lake/r.bin", seconds=60, action="evict")
    assert r.status_code == 422 and r.json()["error"]["type"] == "InvalidInputError"
    r = srv.api("POST", "/api/v1/fs/ttl", path="/lake/r.bin", seconds=-1)
    assert r.status_code == 422
    r = srv.api("POST", "/api/v1/fs/pin", path="/lake/nope")
    assert r.status_code == 404 and r.json()["error"]["type"] == "NoSuchPathError"
    r = srv.api("POST", "/api/v1/fs/pin", path="/nomount/x")
    assert r.status_code == 404
    r = srv.api("POST", "/api/v1/fs/unpin")  # no path
    assert r.status_code == 422
    # mutating endpoints need the token, the report does not
    r = srv.api("POST", "/api/v1/fs/pin", token=None, path="/lake/r.bin")
    assert r.status_code == 401
    r = srv.api("POST", "/api/v1/fs/free", token="wrong", path="/lake/r.bin")
    assert r.status_code == 403
    assert srv.api("GET", "/api/v1/cache", token=None).status_code == 200
    r = srv.api("POST", "/api/v1/fs/free", path="/lake/r.bin")
    assert r.status_code == 200 and r.json()["bytes"] == BS  # pinned blocks are freed too


def test_no_block_store_is_an_error(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    service = CatalogService(Settings(data_dir=tmp_path / "state"))
    store = service.fs.cache
    try:
        service.fs.cache = None  # as when another process holds the cache directories
        client = TestClient(create_app(service, token=TOKEN))
        r = client.get("/api/v1/cache")
        assert r.status_code == 404 and "no block store" in r.json()["error"]["message"]
        r = client.post("/api/v1/fs/pin", params={"path": "/catalog"},
                        headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 422 and "no block store" in r.json()["error"]["message"]
    finally:
        service.fs.cache = store
        service.close()
