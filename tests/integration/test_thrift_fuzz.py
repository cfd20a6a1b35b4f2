"""Bounded fuzzing of the HMS Thrift server: mutated real calls over many connections.

Real encoded calls are mutated (byte flips, truncations, huge lengths, wrong field types, random
method names) and sent a few per connection; after every batch a valid probe call must be served,
and the server's memory must stay bounded. The RNG is seeded, so a failure replays.
"""

from __future__ import annotations

import random
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hmsclient.genthrift.hive_metastore import ThriftHiveMetastore
from thrift.protocol import TBinaryProtocol
from thrift.transport import TSocket, TTransport

from api.thrift.server import ThriftServer
from catalog.config import Settings
from catalog.service import CatalogService
from tests.support.fake_udb import sample_source

pytestmark = pytest.mark.integration

SEED = 20240611
FRAMES = 20_000
BATCH = 500
FRAMES_PER_CONNECTION = 4
DATABASES = ["default", "sales"]


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _encoded_calls() -> list[bytes]:
    calls: list[Callable[[ThriftHiveMetastore.Client], None]] = [
        lambda c: c.send_get_all_databases(),
        lambda c: c.send_get_database("sales"),
        lambda c: c.send_get_table("sales", "customers"),
        lambda c: c.send_get_table("sales", "events"),
        lambda c: c.send_get_partition_names("sales", "events", -1),
        lambda c: c.send_get_partitions_by_names("sales", "events",
                                                 ["dt=2024-01-01/h=0", "dt=2024-01-02/h=1"]),
        lambda c: c.send_get_table_meta("sales", "*", ["TABLE"]),
        lambda c: c.send_get_partitions("sales", "events", 10),
    ]
    frames = []
    for send in calls:
        buf = TTransport.TMemoryBuffer()
        send(ThriftHiveMetastore.Client(TBinaryProtocol.TBinaryProtocol(buf)))
        frames.append(buf.getvalue())
    return frames


def _mutate(rng: random.Random, frame: bytes, kinds: Counter[str]) -> bytes:
    data = bytearray(frame)
    kind = rng.choice(["flip", "truncate", "huge_length", "wrong_type", "method_name",
                       "garbage", "splice"])
    kinds[kind] += 1
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del data[rng.randrange(len(data)):]
    elif kind == "huge_length":
        i = rng.randrange(max(1, len(data) - 4))
        data[i:i + 4] = struct.pack(">i", rng.choice(
            [0x7FFFFFFF, 0x7FFFFFF0, 0x04000000, 0x00FFFFFF, -1, -0x80000000]))
    elif kind == "wrong_type":
        i = rng.randrange(12, len(data)) if len(data) > 12 else 0
        data[i] = rng.choice([0, 1, 2, 3, 4, 6, 8, 10, 11, 12, 13, 14, 15, 16, 17, 255])
    elif kind == "method_name":
        name_len = struct.unpack(">i", frame[4:8])[0]
        name = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 8, 40, 300, 5000])))
        data = bytearray(frame[:4] + struct.pack(">i", len(name)) + name + frame[8 + name_len:])
    elif kind == "garbage":
        data = bytearray(rng.randbytes(rng.randint(1, 256)))
    else:  # splice two frames at random points
        other = _BASE[rng.randrange(len(_BASE))]
        data = data[:rng.randrange(len(data))] + other[rng.randrange(len(other)):]
    return bytes(data)


_BASE = _encoded_calls()


def _send(payload: bytes) -> int:
    """One connection: send, half-close, read until the server closes. Bytes received."""
    received = 0
    try:
        with socket.create_connection(("127.0.0.1", _PORT[0]), timeout=5) as s:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                received += len(chunk)
    except OSError:
        pass  # reset by the server: fine
    return received


_PORT = [0]


def _probe(port: int) -> list[str]:
    sock = TSocket.TSocket("127.0.0.1", port)
    sock.setTimeout(5000)
    transport = TTransport.TBufferedTransport(sock)
    transport.open()
    try:
        client = ThriftHiveMetastore.Client(TBinaryProtocol.TBinaryProtocolAccelerated(transport))
        return list(client.get_all_databases())
    finally:
        transport.close()


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[ThriftServer]:
    src = sample_source()
    service = CatalogService(Settings(data_dir=tmp_path), udb_factory=src.factory)
    service.attach_database("fake", "fake://", "sales")
    srv = ThriftServer(service, "127.0.0.1", 0, idle_timeout_s=5,
                       max_message_bytes=8 * 1024 * 1024).start()
    yield srv
    srv.stop()
    service.close()


def test_fuzzed_frames_never_take_the_server_down(server: ThriftServer) -> None:
    rng = random.Random(SEED)
    _PORT[0] = server.port
    kinds: Counter[str] = Counter()
    rss_start, rss_peak = _rss_mb(), 0.0
    started = time.monotonic()
    sent = connections = probes = 0
    with ThreadPoolExecutor(max_workers=16) as pool:
        while sent < FRAMES:
            payloads = []
            for _ in range(BATCH // FRAMES_PER_CONNECTION):
                frames = [_mutate(rng, _BASE[rng.randrange(len(_BASE))], kinds)
                          for _ in range(FRAMES_PER_CONNECTION)]
                if rng.random() < 0.3:  # a valid call first: the mutation hits the 2nd message
                    frames[0] = _BASE[rng.randrange(len(_BASE))]
                payloads.append(b"".join(frames))
            list(pool.map(_send, payloads))
            sent += len(payloads) * FRAMES_PER_CONNECTION
            connections += len(payloads)
            assert _probe(server.port) == DATABASES, f"probe failed after {sent} frames"
            probes += 1
            rss_peak = max(rss_peak, _rss_mb())
            assert time.monotonic() - started < 120, "fuzz run too slow"
    elapsed = time.monotonic() - started
    rss_end = _rss_mb()
    print(f"\nfuzzed {sent} frames over {connections} connections in {elapsed:.1f}s "
          f"(seed {SEED}); {probes} probes served; mutations {dict(kinds)}; "
          f"malformed connections {server.malformed_connections}, oversized "
          f"{server.oversized_messages}, unknown methods {server.unknown_methods_total} "
          f"({len(server.unknown_methods)} kept); RSS start {rss_start:.0f} MB, "
          f"peak {rss_peak:.0f} MB, end {rss_end:.0f} MB")
    assert sent >= FRAMES
    assert len(server.unknown_methods) <= 100
    assert rss_end - rss_start < 100, "memory not given back"
    assert elapsed < 90
