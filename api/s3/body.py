"""Request bodies of the S3 gateway: plain or ``aws-chunked``, verified while they stream.

:class:`Body` yields the decoded payload and, at its end, checks everything the request promised
before the consumer may commit what it wrote: ``x-amz-content-sha256`` (a hex digest:
``XAmzContentSHA256Mismatch``), ``Content-MD5`` (``BadDigest``), an ``x-amz-checksum-*`` header
or trailer (``BadDigest``), each chunk signature and the trailer signature of the signed
streaming modes (``SignatureDoesNotMatch``), ``x-amz-decoded-content-length`` and
``Content-Length`` (``IncompleteBody``) and the size limit (``EntityTooLarge``). The MD5 of the
payload is always computed: it is the ETag.

The ``aws-chunked`` framing: ``<hex size>[;chunk-signature=<sig>]\\r\\n<data>\\r\\n`` per chunk, a
final chunk of size 0, then (trailer modes) ``name:value\\r\\n`` lines, in the signed mode
followed by ``x-amz-trailer-signature:<sig>\\r\\n``, and an empty line.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator, Mapping

from api.s3.auth import (
    STREAMING,
    STREAMING_SIGNED,
    STREAMING_SIGNED_TRAILER,
    Auth,
    ChunkSigner,
)
from api.s3.checksums import ALGORITHMS, DIGEST_BYTES, Checksum, decode_b64
from api.s3.errors import S3Error

MAX_LINE = 4096
MAX_TRAILERS = 16
PIECE = 1024 * 1024


class _Reader:
    """Buffered reads over an async iterator of byte strings."""

    def __init__(self, source: AsyncIterator[bytes]) -> None:
        self._it = source.__aiter__()
        self._buf = bytearray()
        self._eof = False

    async def _more(self) -> bool:
        if self._eof:
            return False
        try:
            data = await self._it.__anext__()
        except StopAsyncIteration:
            self._eof = True
            return False
        self._buf += data
        return True

    async def line(self) -> bytes | None:
        """The next line without its CRLF; a last line may lack it; None at the end."""
        start = 0
        while True:
            i = self._buf.find(b"\r\n", start)
            if i >= 0:
                out = bytes(self._buf[:i])
                del self._buf[:i + 2]
                return out
            if len(self._buf) > MAX_LINE:
                raise S3Error("IncompleteBody", "malformed aws-chunked body: a line is too long")
            start = max(0, len(self._buf) - 1)
            if not await self._more():
                if self._buf:
                    out = bytes(self._buf)
                    self._buf.clear()
                    return out
                return None

    async def some(self, n: int) -> bytes:
        """Between 1 and ``n`` bytes; b"" at the end."""
        if not self._buf and not await self._more():
            return b""
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    async def exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            if not await self._more():
                break
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    async def at_end(self) -> bool:
        return not self._buf and not await self._more()


def _header_checksum(headers: Mapping[str, str]) -> tuple[str, bytes] | None:
    """(algorithm, expected digest) of an ``x-amz-checksum-*`` header; InvalidRequest if bad."""
    for name, value in headers.items():
        if name.startswith("x-amz-checksum-") and name[len("x-amz-checksum-"):] in ALGORITHMS:
            algo = name[len("x-amz-checksum-"):]
            digest = decode_b64(value, DIGEST_BYTES[algo])
            if digest is None:
                raise S3Error("InvalidRequest", f"value for {name} header is invalid")
            return algo, digest
    return None


class Body:
    """The decoded, verified payload of one request (iterate once)."""

    def __init__(self, source: AsyncIterator[bytes], headers: Mapping[str, str], auth: Auth,
                 max_bytes: int) -> None:
        """``headers``: lower-case names. Refuses at once what can be refused before reading:
        a missing length, a declared size over ``max_bytes``, malformed digests."""
        self._source = source
        self.auth = auth
        self.max_bytes = max_bytes
        self.md5 = hashlib.md5()
        self.size = 0
        encoding = [p.strip().lower() for p in headers.get("content-encoding", "").split(",")]
        self.chunked = auth.payload in STREAMING or "aws-chunked" in encoding
        self._content_length = _int(headers.get("content-length"), "Content-Length")
        self._decoded_length = _int(headers.get("x-amz-decoded-content-length"),
                                    "x-amz-decoded-content-length")
        if self._content_length is None and "chunked" not in headers.get(
                "transfer-encoding", "").lower():
            raise S3Error("MissingContentLength", "you must provide the Content-Length HTTP "
                                                  "header")
        declared = self._decoded_length if self.chunked else self._content_length
        if self.chunked and self._decoded_length is None and auth.payload == STREAMING_SIGNED:
            raise S3Error("MissingContentLength", "x-amz-decoded-content-length is required "
                                                  "for STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
        if declared is not None and declared > max_bytes:
            raise S3Error("EntityTooLarge", "your proposed upload exceeds the maximum allowed "
                          "size")
        self._sha256 = hashlib.sha256() if _is_hex_digest(auth.payload) else None
        self._content_md5: bytes | None = None
        if "content-md5" in headers:
            self._content_md5 = decode_b64(headers["content-md5"], 16)
            if self._content_md5 is None:
                raise S3Error("InvalidDigest", "the Content-MD5 you specified is not valid")
        header_sum = _header_checksum(headers)
        self._trailer_names = [t.strip().lower() for t in headers.get("x-amz-trailer", "")
                               .split(",") if t.strip()]
        self._checksums: dict[str, Checksum] = {}
        self._expected: dict[str, bytes] = {}
        if header_sum is not None:
            self._checksums[header_sum[0]] = ALGORITHMS[header_sum[0]]()
            self._expected[header_sum[0]] = header_sum[1]
        for name in self._trailer_names:
            algo = name[len("x-amz-checksum-"):] if name.startswith("x-amz-checksum-") else ""
            if algo not in ALGORITHMS:
                raise S3Error("InvalidRequest", f"unsupported trailer {name[:64]}")
            self._checksums.setdefault(algo, ALGORITHMS[algo]())
        self.trailers: dict[str, str] = {}

    @property
    def etag(self) -> str:
        return f'"{self.md5.hexdigest()}"'

    def _count(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            raise S3Error("EntityTooLarge", "your proposed upload exceeds the maximum allowed "
                                            "size")
        self.md5.update(data)
        if self._sha256 is not None:
            self._sha256.update(data)
        for c in self._checksums.values():
            c.update(data)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        reader = _Reader(self._source)
        if self.chunked:
            async for data in self._decode(reader):
                self._count(data)
                yield data
        else:
            while True:
                data = await reader.some(PIECE)
                if not data:
                    break
                self._count(data)
                yield data
            if self._content_length is not None and self.size != self._content_length:
                raise S3Error("IncompleteBody", "you did not provide the number of bytes "
                                                "specified by the Content-Length HTTP header")
        self._verify()

    async def read_all(self, limit: int, too_large: S3Error | None = None) -> bytes:
        """The whole (small) payload, for XML bodies; ``too_large`` (default MalformedXML)
        beyond ``limit`` bytes."""
        out = bytearray()
        async for data in self:
            out += data
            if len(out) > limit:
                raise too_large or S3Error("MalformedXML", "the XML you provided is too large")
        return bytes(out)

    async def _decode(self, reader: _Reader) -> AsyncIterator[bytes]:
        signer = self.auth.chunks()
        while True:
            line = await reader.line()
            if line is None:
                raise S3Error("IncompleteBody", "the aws-chunked body ended before its final "
                                                "chunk")
            size_text, _, ext = line.partition(b";")
            try:
                if not size_text.strip() or len(size_text.strip()) > 16:
                    raise ValueError
                size = int(size_text.strip(), 16)
            except ValueError as e:
                raise S3Error("IncompleteBody", "malformed aws-chunked body: bad chunk size") from e
            signature = None
            if ext:
                name, _, value = ext.partition(b"=")
                if name.strip() == b"chunk-signature":
                    signature = value.strip().decode("ascii", "replace")
            if signer is not None and signature is None:
                raise S3Error("SignatureDoesNotMatch", "a chunk carries no chunk-signature")
            digest = hashlib.sha256() if signer is not None else None
            remaining = size
            while remaining:
                data = await reader.some(min(remaining, PIECE))
                if not data:
                    raise S3Error("IncompleteBody", "the aws-chunked body ended inside a chunk")
                remaining -= len(data)
                if digest is not None:
                    digest.update(data)
                yield data
            if signer is not None:
                assert digest is not None and signature is not None
                signer.check_chunk(digest.hexdigest(), signature)
            if size == 0:
                break
            if await reader.exactly(2) != b"\r\n":
                raise S3Error("IncompleteBody", "malformed aws-chunked body: a chunk does not "
                                                "end with CRLF")
        await self._read_trailers(reader, signer)

    async def _read_trailers(self, reader: _Reader, signer: ChunkSigner | None) -> None:
        trailer_signature: str | None = None
        while True:
            line = await reader.line()
            if line is None or line == b"":
                break
            if len(self.trailers) >= MAX_TRAILERS:
                raise S3Error("IncompleteBody", "too many trailers")
            name, sep, value = line.decode("utf-8", "replace").partition(":")
            if not sep:
                raise S3Error("IncompleteBody", "malformed trailer line")
            name, value = name.strip().lower(), value.strip()
            if name == "x-amz-trailer-signature":
                trailer_signature = value
            else:
                self.trailers[name] = value
        if signer is not None and self.auth.payload == STREAMING_SIGNED_TRAILER:
            if trailer_signature is None:
                raise S3Error("SignatureDoesNotMatch", "the trailer carries no "
                                                       "x-amz-trailer-signature")
            canonical = "".join(f"{n}:{v}\n" for n, v in sorted(self.trailers.items()))
            signer.check_trailer(canonical.encode("utf-8"), trailer_signature)
        for name in self._trailer_names:
            algo = name[len("x-amz-checksum-"):]
            if name not in self.trailers:
                raise S3Error("InvalidRequest", f"the {name} trailer announced in x-amz-trailer "
                                                "is missing")
            digest = decode_b64(self.trailers[name], DIGEST_BYTES[algo])
            if digest is None:
                raise S3Error("InvalidRequest", f"value for {name} trailer is invalid")
            self._expected[algo] = digest

    def _verify(self) -> None:
        if self.chunked and self._decoded_length is not None and self.size != self._decoded_length:
            raise S3Error("IncompleteBody", "the decoded body does not have the length of "
                                            "x-amz-decoded-content-length")
        if self._sha256 is not None and self._sha256.hexdigest() != self.auth.payload:
            raise S3Error("XAmzContentSHA256Mismatch", "the provided 'x-amz-content-sha256' "
                          "header does not match what was computed")
        if self._content_md5 is not None and self._content_md5 != self.md5.digest():
            raise S3Error("BadDigest", "the Content-MD5 you specified did not match what we "
                                       "received")
        for algo, expected in self._expected.items():
            if self._checksums[algo].digest() != expected:
                raise S3Error("BadDigest", f"the {algo.upper()} you specified did not match the "
                                           "calculated checksum")

    def checksum_headers(self) -> dict[str, str]:
        """``x-amz-checksum-*`` of the verified body, to echo in the response."""
        return {f"x-amz-checksum-{a}": base64.b64encode(c.digest()).decode("ascii")
                for a, c in self._checksums.items()}


def _is_hex_digest(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _int(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        n = int(value)
    except ValueError as e:
        raise S3Error("InvalidArgument", f"{name} must be a whole number") from e
    if n < 0:
        raise S3Error("InvalidArgument", f"{name} must not be negative")
    return n
