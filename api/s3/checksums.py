"""Body checksums of S3 requests: ``x-amz-checksum-{crc32,crc32c,crc64nvme,sha1,sha256}`` (sent as
a header or as an aws-chunked trailer, base64 of the big-endian digest) and ``Content-MD5``.

CRC32 is :func:`zlib.crc32`; CRC32C uses the ``google-crc32c`` or ``crc32c`` package when one is
installed, else a table implementation (correct but slow: some MB/s); CRC64/NVME is a table
implementation (boto3 sends it only when asked to, with ``awscrt``).
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections.abc import Callable
from typing import Any, Protocol


class Checksum(Protocol):
    def update(self, data: bytes) -> None: ...

    def digest(self) -> bytes: ...


def _table(poly: int, bits: int) -> list[int]:
    """The reflected CRC table of ``poly`` (reversed bit order)."""
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c & ((1 << bits) - 1))
    return table


_CRC32C_TABLE = _table(0x82F63B78, 32)
_CRC64NVME_TABLE = _table(0x9A6C9329AC4BC9B5, 64)


def _crc_update(table: list[int], mask: int, crc: int, data: bytes) -> int:
    crc ^= mask
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ mask


def _native_crc32c() -> Callable[[int, bytes], int] | None:
    try:
        import google_crc32c  # type: ignore[import-not-found]

        fn: Any = google_crc32c.extend
        return lambda crc, data: int(fn(crc, data))
    except ImportError:
        pass
    try:
        import crc32c  # type: ignore[import-not-found]

        fn2: Any = crc32c.crc32c
        return lambda crc, data: int(fn2(data, crc))
    except ImportError:
        return None


_CRC32C_NATIVE = _native_crc32c()


class Crc32:
    def __init__(self) -> None:
        self.crc = 0

    def update(self, data: bytes) -> None:
        self.crc = zlib.crc32(data, self.crc)

    def digest(self) -> bytes:
        return (self.crc & 0xFFFFFFFF).to_bytes(4, "big")


class Crc32c:
    def __init__(self) -> None:
        self.crc = 0

    def update(self, data: bytes) -> None:
        if _CRC32C_NATIVE is not None:
            self.crc = _CRC32C_NATIVE(self.crc, data)
        else:
            self.crc = _crc_update(_CRC32C_TABLE, 0xFFFFFFFF, self.crc, data)

    def digest(self) -> bytes:
        return (self.crc & 0xFFFFFFFF).to_bytes(4, "big")


class Crc64Nvme:
    def __init__(self) -> None:
        self.crc = 0

    def update(self, data: bytes) -> None:
        self.crc = _crc_update(_CRC64NVME_TABLE, 0xFFFFFFFFFFFFFFFF, self.crc, data)

    def digest(self) -> bytes:
        return self.crc.to_bytes(8, "big")


class _Hash:
    def __init__(self, name: str) -> None:
        self.h = hashlib.new(name)

    def update(self, data: bytes) -> None:
        self.h.update(data)

    def digest(self) -> bytes:
        return self.h.digest()


#: ``x-amz-checksum-<name>`` -> a new checksum of that algorithm.
ALGORITHMS: dict[str, Callable[[], Checksum]] = {
    "crc32": Crc32,
    "crc32c": Crc32c,
    "crc64nvme": Crc64Nvme,
    "sha1": lambda: _Hash("sha1"),
    "sha256": lambda: _Hash("sha256"),
}
#: Length of each algorithm's digest (to check a header before reading a body).
DIGEST_BYTES = {"crc32": 4, "crc32c": 4, "crc64nvme": 8, "sha1": 20, "sha256": 32}


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def decode_b64(value: str, length: int) -> bytes | None:
    """The digest in base64 ``value`` if it is well formed and ``length`` bytes, else None."""
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except ValueError:
        return None
    return raw if len(raw) == length else None
