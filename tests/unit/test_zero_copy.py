"""Zero-copy sends: uvicorn with :mod:`api.asgi_server`'s h11 and httptools protocols on
loopback, and the S3 gateway sending cached blocks with ``sendfile`` (bytes exact, ranges,
keep-alive, pipelining, a block evicted mid-send)."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config

from api.asgi_server import HAS_HTTPTOOLS, ZERO_COPY, zero_copy_protocol
from api.metrics import GATEWAY
from api.s3.app import S3Gateway
from api.s3.auth import Credentials
from catalog.cache import BlockStore
from catalog.cache.config import CacheConfig, DirConfig, TierConfig
from catalog.fs.namespace import Namespace
from catalog.store import StateStore
from tests.support.s3_gateway import GatewayServer, self_signed_cert

MiB = 1024 * 1024
ACCESS, SECRET, REGION = "zc-access", "zc-secret-key", "us-east-1"
PARSERS = ["h11", pytest.param("httptools", marks=pytest.mark.skipif(
    not HAS_HTTPTOOLS, reason="httptools is not installed"))]


def _file_app(path: Path) -> Any:
    """An ASGI app sending ``path``'s bytes ``[o, o + n)`` (query ``o=..&n=..``) zero-copy,
    framed by Content-Length unless ``chunked`` is in the query; ``/plain`` answers without."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        query = dict(p.split("=") for p in scope["query_string"].decode().split("&") if p)
        offset, count = int(query.get("o", 0)), int(query.get("n", 0))
        has = ZERO_COPY in (scope.get("extensions") or {})
        headers = [(b"x-zero-copy", b"yes" if has else b"no")]
        if "chunked" not in query:
            headers.append((b"content-length", str(count + 2).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"<", "more_body": True})
        with open(path, "rb") as f:
            await send({"type": ZERO_COPY, "file": f, "offset": offset, "count": count,
                        "more_body": True})
        await send({"type": "http.response.body", "body": b">", "more_body": False})

    return app


@pytest.mark.parametrize("parser", PARSERS)
def test_zero_copy_send_frames_bytes_exactly(tmp_path: Path, parser: str) -> None:
    data = os.urandom(3 * MiB + 5)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    with GatewayServer(_file_app(path), parser=parser) as srv, \
            httpx.Client(base_url=srv.endpoint) as client:
        for o, n in ((0, len(data)), (17, MiB), (len(data) - 3, 3), (5, 0)):
            for chunked in (False, True):
                r = client.get(f"/?o={o}&n={n}" + ("&chunked=1" if chunked else ""))
                assert r.headers["x-zero-copy"] == "yes"
                assert r.content == b"<" + data[o:o + n] + b">", (o, n, chunked)
                assert ("transfer-encoding" in r.headers) == chunked
        r = client.head(f"/?o=0&n={MiB}")  # HEAD: headers only, the connection still usable
        assert r.status_code == 200 and r.content == b""
        assert client.get("/?o=1&n=2").content == b"<" + data[1:3] + b">"


@pytest.mark.parametrize("parser", PARSERS)
def test_pipelined_requests_each_get_their_bytes(tmp_path: Path, parser: str) -> None:
    data = os.urandom(2 * MiB)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    spans = [(0, MiB + 3), (7, 11), (MiB, MiB)]
    with GatewayServer(_file_app(path), parser=parser) as srv, \
            socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        sock.sendall(b"".join(f"GET /?o={o}&n={n} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                              for o, n in spans))  # all three at once: pipelined
        got = b""
        for o, n in spans:
            while b"\r\n\r\n" not in got:
                got += sock.recv(65536)
            head, _, got = got.partition(b"\r\n\r\n")
            assert b"x-zero-copy: yes" in head.lower() and b"200" in head.split(b"\r\n")[0]
            while len(got) < n + 2:
                got += sock.recv(1 << 20)
            assert got[:n + 2] == b"<" + data[o:o + n] + b">", (o, n)
            got = got[n + 2:]


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_answers_before_a_close_are_whole(tmp_path: Path, parser: str, method: str) -> None:
    """HTTP/1.0 (no keep-alive): the server closes after the answer, which must be whole (the
    httptools cycle holds the head back until the body: a close must write it first)."""
    data = os.urandom(1000)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    with GatewayServer(_file_app(path), parser=parser) as srv, \
            socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        sock.sendall(f"{method} /?o=3&n=10 HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        got = b""
        while chunk := sock.recv(65536):  # until the server closes
            got += chunk
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"content-length: 12" in head.lower()
    assert body == (b"<" + data[3:13] + b">" if method == "GET" else b"")


def test_unknown_parser_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown HTTP parser 'h2'"):
        zero_copy_protocol("h2")


@pytest.mark.parametrize("parser", PARSERS)
def test_client_gone_mid_send_is_no_error(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                          parser: str) -> None:
    data = os.urandom(64 * MiB)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    with GatewayServer(_file_app(path), parser=parser) as srv:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", srv.port)) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.sendall(f"GET /?o=0&n={len(data)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                assert sock.recv(4096)  # the headers and a first piece, then hang up
            time.sleep(0.2)
        with httpx.Client(base_url=srv.endpoint) as client:  # the server is fine
            assert client.get("/?o=5&n=7").content == b"<" + data[5:12] + b">"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


@pytest.mark.parametrize("parser", PARSERS)
def test_zero_copy_send_over_tls_falls_back_to_writes(tmp_path: Path, parser: str) -> None:
    tls = self_signed_cert(tmp_path)
    if tls is None:
        pytest.skip("no openssl to make a certificate")
    data = os.urandom(2 * MiB + 1)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    with GatewayServer(_file_app(path), tls=tls, parser=parser) as srv, \
            httpx.Client(base_url=srv.endpoint, verify=False) as client:
        assert client.get(f"/?o=3&n={MiB + 9}").content == b"<" + data[3:MiB + 12] + b">"


@pytest.fixture
def gateway_env(tmp_path: Path) -> Iterator[tuple[Any, Namespace, bytes]]:
    lake = tmp_path / "lake"
    lake.mkdir()
    data = os.urandom(5 * MiB + 123)
    (lake / "big.bin").write_bytes(data)
    store = StateStore(tmp_path / "state")
    cache = BlockStore(CacheConfig(block_size=MiB, tiers=[TierConfig(alias="MEM", dirs=[
        DirConfig(path=tmp_path / "mem", quota=64 * MiB)])]), store)
    ns = Namespace(store, cache=cache, persister=False)
    ns.mount("/lake", str(lake))
    gateway = S3Gateway(ns, credentials=Credentials(ACCESS, SECRET, REGION), region=REGION,
                        max_object_bytes=64 * MiB, spool_dir=tmp_path / "spool")
    with GatewayServer(gateway) as srv:
        client = boto3.client("s3", endpoint_url=srv.endpoint, aws_access_key_id=ACCESS,
                              aws_secret_access_key=SECRET, region_name=REGION,
                              config=Config(s3={"addressing_style": "path"}))
        yield client, ns, data
    ns.close()
    cache.close()
    store.close()


def _sent() -> float:
    return GATEWAY.sendfile_bytes._value.get()


def test_gateway_sends_cached_blocks_with_sendfile(gateway_env: tuple[Any, Namespace, bytes]
                                                   ) -> None:
    client, ns, data = gateway_env
    before = _sent()
    assert client.get_object(Bucket="lake", Key="big.bin")["Body"].read() == data  # cold
    cold = _sent() - before
    assert cold == 0  # a cold block is fetched into memory and sent as bytes
    assert client.get_object(Bucket="lake", Key="big.bin")["Body"].read() == data  # warm
    assert _sent() - before == len(data)  # every byte came from a block file, zero-copy
    start, end = MiB - 7, 4 * MiB + 9  # a range over four blocks
    got = client.get_object(Bucket="lake", Key="big.bin", Range=f"bytes={start}-{end}")
    assert got["Body"].read() == data[start:end + 1]
    assert got["ContentRange"] == f"bytes {start}-{end}/{len(data)}"
    assert _sent() - before == len(data) + (end + 1 - start)


def test_block_evicted_while_it_is_sent(gateway_env: tuple[Any, Namespace, bytes]) -> None:
    client, ns, data = gateway_env
    assert client.get_object(Bucket="lake", Key="big.bin")["Body"].read() == data  # warm it
    body = client.get_object(Bucket="lake", Key="big.bin")["Body"]
    head = body.read(64 * 1024)
    assert ns.free("/lake/big.bin") > 0  # every block file removed under the open response
    assert head + body.read() == data  # the open block files still hold their bytes
    # Block 0 went out of its freed file; the blocks not yet reached were read anew (cached
    # again: a free does not stop later reads from caching).
    assert ns.cache is not None and 0 not in ns.cache.cached_blocks(ns.identity("/lake/big.bin"))
    assert client.get_object(Bucket="lake", Key="big.bin")["Body"].read() == data
