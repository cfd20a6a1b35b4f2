"""Prometheus ``/metrics`` on the REST port: the block store's counters and gauges, the persist
queue, and the S3 gateway's requests and latencies after real boto3 requests (uvicorn servers
in threads over a real local mount and a small two-tier block store); scrapes parsed with
``prometheus_client.parser``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from starlette.testclient import TestClient

from api.metrics import UNROUTED, GatewayMetrics
from api.rest.app import create_app
from api.s3 import create_s3_app
from catalog.cache import CacheConfig
from catalog.config import Settings
from catalog.service import CatalogService
from tests.support.ports import LOOPBACK
from tests.support.s3 import s3_client
from tests.support.s3_gateway import GatewayServer

TOKEN = "metrics-test-token-0123456789"
ACCESS, SECRET = "AKIDMETRICSTEST", "metrics-test-secret-key"
BS = 64 * 1024
MEM_QUOTA, SSD_QUOTA = 2 * BS, 8 * BS

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Env:
    def __init__(self, service: CatalogService, rest_url: str, s3: Any, lake: Path) -> None:
        self.service = service
        self.rest_url = rest_url
        self.s3 = s3
        self.lake = lake

    def scrape(self, token: str | None = None) -> Samples:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = httpx.get(f"{self.rest_url}/metrics", headers=headers, timeout=30)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        return parse(r.text)


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("metrics")
    lake = root / "lake"
    lake.mkdir()
    tiers = CacheConfig.model_validate({"block_size": BS, "tiers": [
        {"alias": "MEM", "dirs": [{"path": str(root / "mem"), "quota": MEM_QUOTA}]},
        {"alias": "SSD", "dirs": [{"path": str(root / "ssd"), "quota": SSD_QUOTA}]}]})
    settings = Settings(data_dir=root / "state", cache_tiers=tiers, s3_access_key=ACCESS,
                        s3_secret_key=SecretStr(SECRET))
    service = CatalogService(settings)
    assert service.fs.persister is not None
    service.fs.persister.paused.set()
    service.mount("/lake", f"file://{lake}", {})
    try:
        with GatewayServer(create_app(service, token=TOKEN)) as rest, \
                GatewayServer(create_s3_app(service.fs, settings, host=LOOPBACK)) as gw:
            yield Env(service, rest.endpoint, s3_client(gw.endpoint, ACCESS, SECRET), lake)
    finally:
        service.close()


def test_gateway_requests_by_operation_and_status(env: Env) -> None:
    s3 = env.s3
    (env.lake / "obj.bin").write_bytes(b"a" * 5000)
    before = env.scrape()
    for _ in range(2):
        assert s3.get_object(Bucket="lake", Key="obj.bin")["Body"].read() == b"a" * 5000
    assert s3.head_object(Bucket="lake", Key="obj.bin")["ContentLength"] == 5000
    with pytest.raises(ClientError):
        s3.get_object(Bucket="lake", Key="missing.bin")
    s3.list_objects_v2(Bucket="lake")
    s3.put_object(Bucket="lake", Key="new.bin", Body=b"n" * 10)
    bad = s3_client(str(s3.meta.endpoint_url), ACCESS, "wrong-secret")
    with pytest.raises(ClientError):
        bad.get_object(Bucket="lake", Key="obj.bin")
    after = env.scrape()

    def delta(operation: str, status: str) -> float:
        name, labels = "strata_s3_requests_total", {"operation": operation, "status": status}
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("GetObject", "200") == 2
    assert delta("GetObject", "404") == 1
    assert delta("HeadObject", "200") == 1
    assert delta("ListObjectsV2", "200") == 1
    assert delta("PutObject", "200") == 1
    assert delta(UNROUTED, "403") == 1  # refused before routing: a bad signature
    hist = "strata_s3_request_duration_seconds"
    count = value(after, f"{hist}_count", operation="GetObject") - value(
        before, f"{hist}_count", operation="GetObject")
    assert count == 3
    inf = value(after, f"{hist}_bucket", operation="GetObject", le="+Inf")
    assert inf == value(after, f"{hist}_count", operation="GetObject")
    assert value(after, f"{hist}_sum", operation="GetObject") > value(
        before, f"{hist}_sum", operation="GetObject")
    assert value(after, f"{hist}_bucket", operation="GetObject", le="60.0") == inf


def test_cache_counters_after_gateway_reads(env: Env) -> None:
    s3 = env.s3
    data = bytes(range(256)) * (3 * BS // 256)  # 3 blocks
    (env.lake / "three.bin").write_bytes(data)
    before = env.scrape()
    assert s3.get_object(Bucket="lake", Key="three.bin")["Body"].read() == data
    mid = env.scrape()
    assert s3.get_object(Bucket="lake", Key="three.bin")["Body"].read() == data
    after = env.scrape()

    def d(a: Samples, b: Samples, name: str, **labels: str) -> float:
        return value(b, name, **labels) - value(a, name, **labels)

    total_misses = sum(d(before, mid, "strata_cache_misses_total", tier=t) for t in ("MEM", "SSD"))
    assert total_misses == 3
    assert d(before, mid, "strata_cache_ufs_read_bytes_total") == len(data)
    hits = sum(d(mid, after, "strata_cache_hits_total", tier=t) for t in ("MEM", "SSD"))
    served = sum(d(mid, after, "strata_cache_served_bytes_total", tier=t) for t in ("MEM", "SSD"))
    assert hits == 3 and served == len(data)
    assert d(mid, after, "strata_cache_ufs_read_bytes_total") == 0  # warm: nothing from the UFS
    mem_dir, ssd_dir = (str(env.lake.parent / n) for n in ("mem", "ssd"))
    assert value(after, "strata_cache_capacity_bytes", tier="MEM", dir=mem_dir) == MEM_QUOTA
    assert value(after, "strata_cache_capacity_bytes", tier="SSD", dir=ssd_dir) == SSD_QUOTA
    cache = env.service.fs.cache
    assert cache is not None
    stats = cache.stats()
    for t in stats.tiers:
        for dd in t.dirs:
            assert value(after, "strata_cache_used_bytes", tier=t.alias, dir=str(dd.path)) == \
                dd.used_bytes
            assert value(after, "strata_cache_blocks", tier=t.alias, dir=str(dd.path)) == dd.blocks
    assert value(after, "strata_cache_hit_ratio") == pytest.approx(stats.hit_ratio, abs=0.05)
    env.service.fs.pin("/lake/three.bin")
    pinned = env.scrape()
    assert sum(v for (n, _), v in pinned.items() if n == "strata_cache_pinned_bytes") == len(data)
    env.service.fs.unpin("/lake/three.bin")


def test_evictions(env: Env) -> None:
    blocks = (MEM_QUOTA + SSD_QUOTA) // BS + 2  # more than every tier holds
    data = bytes(range(256)) * (blocks * BS // 256)
    (env.lake / "big.bin").write_bytes(data)
    before = env.scrape()
    assert env.s3.get_object(Bucket="lake", Key="big.bin")["Body"].read() == data
    after = env.scrape()
    evicted = {t: value(after, "strata_cache_evictions_total", tier=t)
               - value(before, "strata_cache_evictions_total", tier=t) for t in ("MEM", "SSD")}
    assert evicted["MEM"] >= 1 and evicted["SSD"] >= 2  # moved down, then dropped from the last
    assert sum(v for (n, _), v in after.items() if n == "strata_cache_used_bytes") <= \
        MEM_QUOTA + SSD_QUOTA
    env.service.fs.free("/lake")


def test_persist_queue_length_and_age(env: Env) -> None:
    fs = env.service.fs
    assert fs.persister is not None
    assert value(env.scrape(), "strata_persist_queue_length") == 0
    assert ("strata_persist_queue_oldest_age_seconds", frozenset()) in env.scrape()
    fs.write_bytes("/lake/async.bin", b"q" * 100, write_type="ASYNC_THROUGH")
    time.sleep(0.2)
    queued = env.scrape()
    assert value(queued, "strata_persist_queue_length") == 1
    assert value(queued, "strata_persist_queue_oldest_age_seconds") >= 0.2
    assert value(queued, "strata_cache_unpersisted_bytes", tier="MEM",
                 dir=str(env.lake.parent / "mem")) + value(
        queued, "strata_cache_unpersisted_bytes", tier="SSD",
        dir=str(env.lake.parent / "ssd")) == 100
    fs.persister.drain()
    done = env.scrape()
    assert value(done, "strata_persist_queue_length") == 0
    assert value(done, "strata_persist_queue_oldest_age_seconds") == 0
    assert (env.lake / "async.bin").read_bytes() == b"q" * 100


def test_process_metrics_are_there(env: Env) -> None:
    samples = env.scrape()
    assert value(samples, "process_cpu_seconds_total") > 0
    assert any(name == "python_info" for name, _ in samples)


def test_metrics_auth_only_with_read_auth(tmp_path: Path) -> None:
    service = CatalogService(Settings(data_dir=tmp_path / "open"))
    try:
        open_app = TestClient(create_app(service, token=TOKEN))
        assert open_app.get("/metrics").status_code == 200
        assert "/metrics" not in open_app.get("/openapi.json").json()["paths"]
    finally:
        service.close()
    service = CatalogService(Settings(data_dir=tmp_path / "guarded", api_read_auth=True))
    try:
        guarded = TestClient(create_app(service, token=TOKEN))
        assert guarded.get("/metrics").status_code == 401
        assert guarded.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code \
            == 403
        r = guarded.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and "strata_cache_hit_ratio" in r.text
    finally:
        service.close()


def test_gateway_metrics_hook_never_fails_a_request(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    own = GatewayMetrics(registry)
    service = CatalogService(Settings(data_dir=tmp_path / "state"))
    try:
        (tmp_path / "bucket").mkdir()
        (tmp_path / "bucket" / "k").write_bytes(b"v")
        service.mount("/b", f"file://{tmp_path / 'bucket'}", {})
        app = create_s3_app(service.fs, service.settings, host=LOOPBACK)
        app.observer = own.observe
        client = TestClient(app)
        assert client.get("/b/k").content == b"v"
        assert registry.get_sample_value("strata_s3_requests_total",
                                         {"operation": "GetObject", "status": "200"}) == 1

        def broken(operation: str, status: int, seconds: float) -> None:
            raise RuntimeError("metrics backend down")

        app.observer = broken
        assert client.get("/b/k").status_code == 200
        app.observer = None
        assert client.head("/b/k").status_code == 200
    finally:
        service.close()
