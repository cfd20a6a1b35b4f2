"""The block store under an S3 mount (moto's server behind the fault proxy): cold vs warm reads
with WAN-like latency, ETag identities, ASYNC_THROUGH to S3 with kill -9 during a persist, and the
gateway serving a cached object after its source was rewritten."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api.s3.app import S3Gateway
from api.s3.auth import Credentials
from catalog.cache import BlockStore, CacheConfig
from catalog.fs.namespace import Namespace
from catalog.store import StateStore
from tests.support.fault_proxy import FaultProxy
from tests.support.s3 import MotoS3Server, s3_options
from tests.support.s3_gateway import GatewayServer

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[2]


class Env:
    def __init__(self, root: Path, server: MotoS3Server, endpoint: str, bucket: str) -> None:
        self.root = root
        self.server = server
        self.endpoint = endpoint
        self.bucket = bucket

    def open(self, persister: bool = False) -> Namespace:
        self.store = StateStore(self.root / "state")
        cfg = CacheConfig.single_tier(self.root / "cache", 256 * MiB, block_size=MiB)
        self.cache = BlockStore(cfg, self.store)
        self.ns = Namespace(self.store, cache=self.cache, persister=persister)
        return self.ns

    def options(self, **extra: str) -> dict[str, str]:
        o = s3_options(self.endpoint, self.server.access_key, self.server.secret_key,
                       self.server.region)
        o.update({k.replace("_", "."): v for k, v in extra.items()})
        return o

    def close(self) -> None:
        self.ns.close()
        self.cache.close()
        self.store.close()


@pytest.fixture
def env(tmp_path: Path, s3_server: MotoS3Server, s3_bucket: str,
        s3_proxy: FaultProxy) -> Iterator[Env]:
    e = Env(tmp_path, s3_server, s3_proxy.endpoint, s3_bucket)
    e.open()
    try:
        yield e
    finally:
        e.close()


def test_cold_vs_warm_reads_from_a_remote_mount(env: Env, s3_proxy: FaultProxy) -> None:
    body = os.urandom(4 * MiB + 123)
    env.server.client().put_object(Bucket=env.bucket, Key="lake/big.bin", Body=body)
    env.ns.mount("/remote", f"s3://{env.bucket}/lake", env.options())
    s3_proxy.latency_s = 0.05
    t0 = time.monotonic()
    assert env.ns.read("/remote/big.bin") == body
    cold = time.monotonic() - t0
    requests = s3_proxy.requests
    t0 = time.monotonic()
    for _ in range(3):
        assert env.ns.read("/remote/big.bin") == body
    warm = (time.monotonic() - t0) / 3
    assert s3_proxy.requests == requests  # identity trusted 60 s: no request at all
    assert warm * 3 < cold, (cold, warm)
    ident = env.ns.identity("/remote/big.bin")
    assert ident.etag  # S3 identities carry the ETag
    assert env.cache.cached_blocks(ident) == [0, 1, 2, 3, 4]


def test_same_size_rewrite_on_s3_is_seen_by_etag(env: Env) -> None:
    client = env.server.client()
    client.put_object(Bucket=env.bucket, Key="k/v.txt", Body=b"version-1")
    env.ns.mount("/r0", f"s3://{env.bucket}/k", env.options(metadata_sync_interval="0"))
    assert env.ns.read("/r0/v.txt") == b"version-1"
    client.put_object(Bucket=env.bucket, Key="k/v.txt", Body=b"version-2")  # same second
    assert env.ns.read("/r0/v.txt") == b"version-2"


_CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from catalog.cache import BlockStore, CacheConfig
    from catalog.fs.namespace import Namespace
    from catalog.store import StateStore
    root, size = Path(sys.argv[1]), int(sys.argv[2])
    store = StateStore(root / "state")
    cache = BlockStore(CacheConfig.single_tier(root / "cache", 256 * 2**20, block_size=2**20),
                       store)
    ns = Namespace(store, cache=cache, persister=False)
    ns.write_bytes("/remote/async.bin", bytes(i % 251 for i in range(size)),
                   write_type="ASYNC_THROUGH")
    print("written", flush=True)
    ns.persister.drain()
    print("persisted", flush=True)
    time.sleep(60)
""")


def test_kill_during_an_async_persist_to_s3(env: Env, s3_proxy: FaultProxy) -> None:
    size = 6 * MiB + 5
    env.ns.mount("/remote", f"s3://{env.bucket}/lake", env.options(write_type="ASYNC_THROUGH"))
    env.close()  # the child owns the data dir now
    s3_proxy.latency_s = 0.3  # the persist's upload takes seconds
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(env.root), str(size)],
                             cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "written"
        time.sleep(0.8)  # mid-upload
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    s3_proxy.latency_s = 0.0
    listed = env.server.client().list_objects_v2(Bucket=env.bucket, Prefix="lake/async.bin")
    assert listed.get("KeyCount", 0) == 0  # killed before the upload completed
    env.open(persister=False)
    expected = bytes(i % 251 for i in range(size))
    # the write returned before the kill: it is visible, and the restart persists it
    assert env.ns.read("/remote/async.bin") == expected
    assert env.ns.persister is not None
    env.ns.persister.drain()
    got = env.server.client().get_object(Bucket=env.bucket, Key="lake/async.bin")
    assert got["Body"].read() == expected
    assert env.cache.unpersisted() == []


def test_gateway_serves_a_cached_object_rewritten_at_the_source(env: Env) -> None:
    client = env.server.client()
    old, new = os.urandom(300_000), os.urandom(300_000)
    client.put_object(Bucket=env.bucket, Key="gw/obj.bin", Body=old)
    env.ns.mount("/gw", f"s3://{env.bucket}/gw", env.options(metadata_sync_interval="0"))
    app = S3Gateway(env.ns, credentials=Credentials("AKIDCACHE", "cache-secret", "us-east-1"),
                    region="us-east-1", max_object_bytes=64 * MiB,
                    spool_dir=env.root / "spool")
    with GatewayServer(app) as gw:
        c = _boto(gw.endpoint)
        assert c.get_object(Bucket="gw", Key="obj.bin")["Body"].read() == old
        assert env.cache.blocks()  # cached on the way
        client.put_object(Bucket=env.bucket, Key="gw/obj.bin", Body=new)
        assert c.get_object(Bucket="gw", Key="obj.bin")["Body"].read() == new
        ranged = c.get_object(Bucket="gw", Key="obj.bin", Range="bytes=100-199")
        assert ranged["Body"].read() == new[100:200]


def _boto(endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, aws_access_key_id="AKIDCACHE",
        aws_secret_access_key="cache-secret", region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                      signature_version="s3v4"))
