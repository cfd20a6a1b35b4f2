"""pytest fixtures for a real S3 endpoint (moto's server) and a fault-injecting proxy before it.

Registered from ``tests/conftest.py`` via ``pytest_plugins``:

* ``s3_server`` (session): a started :class:`MotoS3Server` on 127.0.0.1, stopped at the end;
* ``s3_bucket`` (function): a fresh, uniquely named bucket on it (emptied and dropped after);
* ``s3_proxy`` (function): a started :class:`FaultProxy` in front of ``s3_server``.
"""
from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.support.fault_proxy import FaultProxy
from tests.support.s3 import MotoS3Server

log = logging.getLogger("tests.harness")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3Server]:
    """moto's S3 server on 127.0.0.1:<free port> for the whole session."""
    server = MotoS3Server(tmp_path_factory.mktemp("moto-s3"))
    started = time.monotonic()
    server.start()
    log.info("moto S3 started on %s in %.1fs", server.endpoint, time.monotonic() - started)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: MotoS3Server) -> Iterator[str]:
    """A new bucket on ``s3_server``; its name. Emptied and deleted after the test."""
    name = s3_server.create_bucket(f"strata-test-{uuid.uuid4().hex[:20]}")
    try:
        yield name
    finally:
        _drop_bucket(s3_server, name)


@pytest.fixture
def s3_proxy(s3_server: MotoS3Server) -> Iterator[FaultProxy]:
    """A :class:`FaultProxy` (mode ``pass``, no latency) forwarding to ``s3_server``."""
    proxy = FaultProxy(s3_server.host, s3_server.port).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def _drop_bucket(server: MotoS3Server, name: str) -> None:
    """Best effort: delete every object of ``name`` and the bucket (a reset may have done it)."""
    client = server.client()
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
        client.delete_bucket(Bucket=name)
    except Exception as exc:  # the server may be gone or reset; nothing to leak then
        log.debug("dropping bucket %s: %s", name, exc)
    finally:
        client.close()
