"""The S3 gateway's ASGI application: request routing, authentication and the operations, each
a thin handler over :class:`api.s3.objects.ObjectStore` (see :mod:`api.s3` for the list)."""

from __future__ import annotations

import asyncio
import email.utils
import functools
import hashlib
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote_to_bytes

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from api.asgi_server import ZERO_COPY
from api.metrics import GATEWAY, UNROUTED
from api.s3.auth import Auth, Credentials, Verifier, query_pairs
from api.s3.body import Body
from api.s3.errors import S3Error, from_catalog
from api.s3.objects import (
    MAX_PARTS,
    ChunkReader,
    ObjectInfo,
    ObjectStore,
    Part,
    RangeReader,
    Upload,
    check_bucket,
    check_key,
    decode_token,
    encode_token,
    etag_matches,
)
from api.s3.xmldoc import child_text, children, document, element, iso, parse, text
from catalog.cache.model import BlockSegment
from catalog.exceptions import CatalogError
from catalog.fs.namespace import Namespace

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_KEYS = 1000
MAX_DELETE = 1000
MAX_XML_BYTES = 4 * 1024 * 1024
MAX_PART_BYTES = 5 * 1024**3
WRITE_BATCH = 1024 * 1024
#: GET bodies up to this size are read whole and sent in one piece; larger ones stream.
WHOLE_BODY_BYTES = 1024 * 1024
KEEPALIVE_S = 5.0
OWNER = "<Owner><ID>strata</ID><DisplayName>strata</DisplayName></Owner>"
#: Sub-resources of buckets and objects that the gateway does not implement (501).
UNSUPPORTED = frozenset({
    "acl", "policy", "policyStatus", "cors", "lifecycle", "tagging", "encryption", "website",
    "logging", "notification", "replication", "requestPayment", "object-lock", "retention",
    "legal-hold", "accelerate", "analytics", "inventory", "metrics", "intelligent-tiering",
    "ownershipControls", "publicAccessBlock", "torrent", "restore", "select", "attributes",
    "versions", "session",
})


@dataclass
class Call:
    """One request, parsed."""

    request: Request
    method: str
    bucket: str | None
    key: str
    query: dict[str, str]
    headers: dict[str, str]
    auth: Auth
    resource: str


#: Where a handler notes the S3 operation it serves, for the request metrics.
OPERATION_KEY = "strata.s3.operation"
Handler = Callable[..., Awaitable[Response]]
#: The gateway's metrics hook: (operation, HTTP status, seconds from request to last byte).
Observer = Callable[[str, int, float], None]


def _operation(name: str, **variants: str) -> Callable[[Handler], Handler]:
    """Names the S3 operation a handler serves (``variants``: the name when that keyword argument
    is true, e.g. ``head=True`` -> HeadObject); :meth:`S3Gateway.__call__` reports it."""
    def wrap(fn: Handler) -> Handler:
        @functools.wraps(fn)
        async def handler(self: Any, c: Call, **kwargs: Any) -> Response:
            c.request.scope[OPERATION_KEY] = next(
                (op for arg, op in variants.items() if kwargs.get(arg)), name)
            return await fn(self, c, **kwargs)
        return handler
    return wrap


async def _run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await run_in_threadpool(fn, *args, **kwargs)


class ObjectBody(StreamingResponse):
    """A GetObject body streamed from :meth:`ObjectStore.open_range` with ``segments``: a cached
    block's range goes as one zero-copy send (``sendfile``) where the server offers ASGI's
    ``http.response.zerocopysend`` (:mod:`api.asgi_server`), as its bytes elsewhere; other
    chunks as they come. Each next chunk is taken in a worker thread (a cold block is fetched
    there) once the previous one is sent, so a segment's file stays open while it is sent."""

    def __init__(self, reader: ChunkReader | RangeReader, *, status_code: int,
                 headers: Mapping[str, str]) -> None:
        super().__init__(iter(()), status_code=status_code, headers=headers)
        self._reader = reader
        self._zero_copy = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._zero_copy = ZERO_COPY in (scope.get("extensions") or {})
        await super().__call__(scope, receive, send)

    async def stream_response(self, send: Send) -> None:
        reader = self._reader
        items = reader.items() if isinstance(reader, ChunkReader) else iter(reader)
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        try:
            while True:
                item = await run_in_threadpool(next, items, None)
                if item is None:
                    break
                if not isinstance(item, BlockSegment):
                    await send({"type": "http.response.body", "body": item, "more_body": True})
                elif self._zero_copy:
                    GATEWAY.sendfile_bytes.inc(item.count)
                    with os.fdopen(os.dup(item.fd), "rb") as f:
                        await send({"type": ZERO_COPY, "file": f, "offset": item.offset,
                                    "count": item.count, "more_body": True})
                else:
                    data = await run_in_threadpool(item.read)
                    await send({"type": "http.response.body", "body": data, "more_body": True})
        finally:
            await run_in_threadpool(reader.close)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _http_date(mtime_ns: int) -> str:
    return email.utils.formatdate(mtime_ns / 1e9, usegmt=True)


def _parse_http_date(value: str) -> float | None:
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """``[start, end)`` of a ``Range: bytes=...`` header; None for no (or an ignored: several
    ranges, bad syntax) range; InvalidRange (416) when it cannot be satisfied."""
    if value is None or not value.strip().lower().startswith("bytes="):
        return None
    spec = value.strip()[6:].strip()
    first, sep, last = spec.partition("-")
    first, last = first.strip(), last.strip()
    if "," in spec or not sep:
        return None
    unsatisfiable = S3Error("InvalidRange", "the requested range is not satisfiable",
                            headers={"Content-Range": f"bytes */{size}"})
    if not first:
        if not last.isdigit():
            return None
        n = int(last)
        if n == 0 or size == 0:
            raise unsatisfiable
        return max(0, size - n), size
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        raise unsatisfiable
    return start, min(size, int(last) + 1) if last else size


def check_conditions(headers: Mapping[str, str], info: ObjectInfo) -> bool:
    """Evaluates If-Match / If-Unmodified-Since (412) and If-None-Match / If-Modified-Since
    (True: answer 304) as RFC 7232 orders them, with S3's one-second Last-Modified."""
    seconds = info.mtime_ns // 1_000_000_000
    failed = S3Error("PreconditionFailed", "At least one of the pre-conditions you specified "
                                           "did not hold")
    if_match = headers.get("if-match")
    if if_match is not None:
        if not etag_matches(if_match, info.etag):
            raise failed
    elif "if-unmodified-since" in headers:
        when = _parse_http_date(headers["if-unmodified-since"])
        if when is not None and seconds > when:
            raise failed
    if_none = headers.get("if-none-match")
    if if_none is not None:
        return etag_matches(if_none, info.etag)
    if "if-modified-since" in headers:
        when = _parse_http_date(headers["if-modified-since"])
        if when is not None and seconds <= when:
            return True
    return False


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    return (length is not None and length.strip() not in ("", "0")) or (
        "transfer-encoding" in request.headers)


def _xml(body: bytes, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(body, status_code=status, media_type="application/xml",
                    headers=dict(headers or {}))


class S3Gateway:
    """The ASGI app. ``credentials`` None: anonymous access (only sensible on loopback).
    ``observer`` is told every request's operation, status and latency (default: the process's
    Prometheus instruments, :data:`api.metrics.GATEWAY`; None: nobody)."""

    def __init__(self, fs: Namespace, *, credentials: Credentials | None, region: str,
                 max_object_bytes: int, domains: tuple[str, ...] = ("localhost",),
                 spool_dir: str | Path | None = None,
                 observer: Observer | None = GATEWAY.observe) -> None:
        self.store = ObjectStore(fs, spool_dir=spool_dir)
        self.observer = observer
        self.verifier = Verifier(credentials)
        self.region = region
        self.max_object_bytes = max_object_bytes
        self.domains = tuple(d.lower().strip(".") for d in domains if d)

    # -- ASGI ------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if self.observer is None:
            await self._serve(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless an answer starts

        async def noting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._serve(scope, receive, noting_send)
        finally:
            try:
                self.observer(scope.get(OPERATION_KEY, UNROUTED), status,
                              time.perf_counter() - started)
            except Exception:  # noqa: BLE001 - metrics never fail a request
                log.exception("S3 gateway: the metrics hook failed")

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        request_id = secrets.token_hex(8).upper()
        resource = scope.get("raw_path", b"/").decode("latin-1")
        try:
            response = await self._handle(request, resource)
        except S3Error as e:
            response = self._error(e, request, resource, request_id)
        except CatalogError as e:
            response = self._error(from_catalog(e), request, resource, request_id)
        except ClientDisconnect:
            log.debug("client went away during %s %s", request.method, resource)
            response = self._error(S3Error("IncompleteBody", "the request body was cut short"),
                                   request, resource, request_id)
        except Exception:  # noqa: BLE001 - never a traceback to the client
            log.exception("S3 gateway: %s %s failed", request.method, resource)
            response = self._error(S3Error("InternalError", "we encountered an internal error; "
                                           "please try again"), request, resource, request_id)
        response.headers["x-amz-request-id"] = request_id
        response.headers["Server"] = "Strata"
        if response.status_code >= 300 and _has_body(request):
            # The body may be unread (or, after 'Expect: 100-continue', never sent): the next
            # bytes on this connection cannot be trusted to start a request.
            response.headers["Connection"] = "close"
        await response(scope, receive, send)

    def _error(self, e: S3Error, request: Request, resource: str, request_id: str) -> Response:
        headers = {**e.headers, "x-amz-request-id": request_id}
        if e.code == "NotModified":
            return Response(status_code=304, headers=headers)
        if request.method == "HEAD":
            return Response(status_code=e.status, headers=headers)
        return _xml(e.xml(resource, request_id), e.status, headers)

    # -- routing ---------------------------------------------------------------------------------

    def _address(self, request: Request) -> tuple[str | None, str]:
        """(bucket, key) of the request, path-style or virtual-host style; the path is
        percent-decoded exactly once and must be UTF-8."""
        raw_path = request.scope.get("raw_path") or request.scope["path"].encode()
        try:
            path = unquote_to_bytes(raw_path).decode("utf-8")
        except UnicodeDecodeError as e:
            raise S3Error("InvalidArgument", "the request path is not valid UTF-8") from e
        if not path.startswith("/"):
            raise S3Error("InvalidArgument", "the request path must start with '/'")
        host = request.headers.get("host", "").lower()
        host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        for domain in self.domains:
            if host.endswith("." + domain):
                return host[:-len(domain) - 1], path[1:]
        rest = path[1:]
        if not rest:
            return None, ""
        bucket, _, key = rest.partition("/")
        return bucket, key

    async def _handle(self, request: Request, resource: str) -> Response:
        raw_headers = [(k.decode("latin-1"), v.decode("latin-1"))
                       for k, v in request.scope["headers"]]
        headers: dict[str, str] = {}
        for k, v in raw_headers:
            k = k.lower()
            headers[k] = f"{headers[k]},{v}" if k in headers else v
        auth = self.verifier.verify(request.method, request.scope.get("raw_path") or b"/",
                                    request.scope.get("query_string", b""), raw_headers)
        try:
            query = {n.decode("utf-8"): v.decode("utf-8")
                     for n, v in query_pairs(request.scope.get("query_string", b""))}
        except UnicodeDecodeError as e:
            raise S3Error("InvalidArgument", "the query string is not valid UTF-8") from e
        bucket, key = self._address(request)
        if bucket is not None:
            check_bucket(bucket)
        if key:
            assert bucket is not None
            check_key(bucket, key)
        call = Call(request, request.method, bucket, key, query, headers, auth, resource)
        return await self._route(call)

    async def _route(self, c: Call) -> Response:
        m, q = c.method, c.query
        if c.bucket is None:
            if m == "GET":
                return await self.list_buckets(c)
            raise S3Error("MethodNotAllowed", "the specified method is not allowed against "
                                              "this resource")
        unsupported = UNSUPPORTED.intersection(q)
        if not c.key:
            if m == "GET":
                if unsupported:
                    raise S3Error("NotImplemented", f"?{sorted(unsupported)[0]} is not "
                                                    "implemented")
                if "location" in q:
                    return await self.bucket_location(c)
                if "uploads" in q:
                    return await self.list_uploads(c)
                if "versioning" in q:
                    return await self.bucket_versioning(c)
                if "list-type" in q:
                    if q["list-type"] != "2":
                        raise S3Error("InvalidArgument", "list-type must be 2")
                    return await self.list_objects(c, v2=True)
                return await self.list_objects(c, v2=False)
            if m == "HEAD":
                return await self.head_bucket(c)
            if m == "POST" and "delete" in q:
                return await self.delete_objects(c)
            if m in ("PUT", "DELETE", "POST"):
                if unsupported or m == "POST":
                    raise S3Error("NotImplemented", "a header or parameter you provided implies "
                                                    "functionality that is not implemented")
                return await self.put_or_delete_bucket(c)
            raise S3Error("MethodNotAllowed", "the specified method is not allowed against "
                                              "this resource")
        if unsupported and m in ("GET", "PUT", "DELETE", "POST"):
            raise S3Error("NotImplemented", f"?{sorted(unsupported)[0]} is not implemented")
        if m == "GET":
            if "uploadId" in q:
                return await self.list_parts(c)
            return await self.get_object(c, head=False)
        if m == "HEAD":
            return await self.get_object(c, head=True)
        if m == "PUT":
            if "uploadId" in q or "partNumber" in q:
                return await self.upload_part(c)
            if "x-amz-copy-source" in c.headers:
                return await self.copy_object(c)
            return await self.put_object(c)
        if m == "POST":
            if "uploads" in q:
                return await self.create_upload(c)
            if "uploadId" in q:
                return await self.complete_upload(c)
            raise S3Error("NotImplemented", "this POST operation is not implemented")
        if m == "DELETE":
            if "uploadId" in q:
                return await self.abort_upload(c)
            return await self.delete_object(c)
        raise S3Error("MethodNotAllowed", "the specified method is not allowed against this "
                                          "resource")

    # -- service and buckets ---------------------------------------------------------------------

    @_operation("ListBuckets")
    async def list_buckets(self, c: Call) -> Response:
        buckets = await _run(self.store.buckets)
        items = "".join("<Bucket>" + element("Name", text(name)) +
                        element("CreationDate", iso(mtime)) + "</Bucket>"
                        for name, mtime in buckets)
        return _xml(document("ListAllMyBucketsResult", [OWNER, f"<Buckets>{items}</Buckets>"]))

    @_operation("HeadBucket")
    async def head_bucket(self, c: Call) -> Response:
        assert c.bucket is not None
        await _run(self.store.require_bucket, c.bucket)
        return Response(status_code=200, headers={"x-amz-bucket-region": self.region})

    @_operation("GetBucketLocation")
    async def bucket_location(self, c: Call) -> Response:
        assert c.bucket is not None
        await _run(self.store.require_bucket, c.bucket)
        region = "" if self.region == "us-east-1" else text(self.region)
        return _xml(document("LocationConstraint", [region]))

    @_operation("GetBucketVersioning")
    async def bucket_versioning(self, c: Call) -> Response:
        assert c.bucket is not None
        await _run(self.store.require_bucket, c.bucket)
        return _xml(document("VersioningConfiguration", []))

    @_operation("PutOrDeleteBucket")
    async def put_or_delete_bucket(self, c: Call) -> Response:
        assert c.bucket is not None
        exists = await _run(self.store.bucket_exists, c.bucket)
        if c.method == "PUT":
            if exists:
                raise S3Error("BucketAlreadyOwnedByYou", "your previous request to create the "
                              "named bucket succeeded and you already own it")
            raise S3Error("AccessDenied", "buckets are namespace mounts: create one with "
                                          "catalogctl fs mount")
        if not exists:
            raise S3Error("NoSuchBucket", "the specified bucket does not exist")
        raise S3Error("AccessDenied", "buckets are namespace mounts: remove one with "
                                      "catalogctl fs unmount")

    @_operation("ListObjects", v2="ListObjectsV2")
    async def list_objects(self, c: Call, *, v2: bool) -> Response:
        assert c.bucket is not None
        q = c.query
        prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
        encoding = q.get("encoding-type")
        if encoding is not None and encoding != "url":
            raise S3Error("InvalidArgument", "invalid encoding method specified in request")
        url = encoding == "url"
        try:
            max_keys = int(q.get("max-keys", MAX_KEYS))
        except ValueError as e:
            raise S3Error("InvalidArgument", "max-keys must be a whole number") from e
        if max_keys < 0:
            raise S3Error("InvalidArgument", "max-keys must not be negative")
        max_keys = min(max_keys, MAX_KEYS)
        token = q.get("continuation-token") if v2 else None
        if v2:
            after = decode_token(token) if token else q.get("start-after", "")
        else:
            after = q.get("marker", "")
        listing = await _run(self.store.list_objects, c.bucket, prefix, delimiter, after, max_keys)
        parts = [element("Name", text(c.bucket)), element("Prefix", text(prefix, url))]
        if v2:
            if token is not None:
                parts.append(element("ContinuationToken", text(token)))
            if q.get("start-after"):
                parts.append(element("StartAfter", text(q["start-after"], url)))
            parts.append(element("KeyCount", len(listing.objects) + len(listing.prefixes)))
        else:
            parts.append(element("Marker", text(after, url)))
        parts.append(element("MaxKeys", max_keys))
        if delimiter:
            parts.append(element("Delimiter", text(delimiter, url)))
        if url:
            parts.append(element("EncodingType", "url"))
        parts.append(element("IsTruncated", "true" if listing.truncated else "false"))
        if listing.truncated and listing.next_marker is not None:
            if v2:
                parts.append(element("NextContinuationToken", encode_token(listing.next_marker)))
            else:
                parts.append(element("NextMarker", text(listing.next_marker, url)))
        for o in listing.objects:
            parts.append("<Contents>" + element("Key", text(o.key, url)) +
                         element("LastModified", iso(o.mtime_ns)) +
                         element("ETag", text(o.etag)) + element("Size", o.size) +
                         element("StorageClass", "STANDARD") + "</Contents>")
        for p in listing.prefixes:
            parts.append("<CommonPrefixes>" + element("Prefix", text(p, url)) +
                         "</CommonPrefixes>")
        return _xml(document("ListBucketResult", parts))

    # -- reading ---------------------------------------------------------------------------------

    @_operation("GetObject", head="HeadObject")
    async def get_object(self, c: Call, *, head: bool) -> Response:
        # A warm GET is answered on the event loop: a thread hop costs more than the whole GET.
        # Whatever may wait for the under storage or a disk goes to a worker thread, in one hop
        # for the lookup, the checks and (small bodies) the bytes.
        answer = self._get_cached_object(c, head)
        if answer is not None:
            return answer
        return await _run(self._get_object, c, head)

    def _get_cached_object(self, c: Call, head: bool) -> Response | None:
        """The answer when the object's identity needs no network (trusted, or a local stat) and
        its bytes (at most WHOLE_BODY_BYTES) are in the block store where they read without
        waiting; else None."""
        assert c.bucket is not None
        found = self.store.head_quick(c.bucket, c.key)
        if found is None:
            return None
        info, ident = found
        answer = self._object_answer(c, head, info)
        if isinstance(answer, Response):
            return answer
        status, headers, start, end = answer
        if end - start > WHOLE_BODY_BYTES:
            return None
        body = self.store.read_cached(c.bucket, c.key, ident, start, end)
        if body is None or len(body) != end - start:
            return None
        return Response(body, status_code=status, headers=headers)

    def _get_object(self, c: Call, head: bool) -> Response:
        assert c.bucket is not None
        info = self.store.head(c.bucket, c.key)
        answer = self._object_answer(c, head, info)
        if isinstance(answer, Response):
            return answer
        status, headers, start, end = answer
        if end - start > WHOLE_BODY_BYTES:
            reader = self.store.open_range(c.bucket, info, start, end, segments=True)
            return ObjectBody(reader, status_code=status, headers=headers)
        reader = self.store.open_range(c.bucket, info, start, end)
        try:
            body = b"".join(reader)
        finally:
            reader.close()
        if len(body) != end - start:  # nothing sent yet: still a clean error
            raise S3Error("PreconditionFailed", "the object changed while it was read; retry")
        return Response(body, status_code=status, headers=headers)

    def _object_answer(self, c: Call, head: bool, info: ObjectInfo
                       ) -> Response | tuple[int, dict[str, str], int, int]:
        """The whole answer to a GET/HEAD of ``info`` without a body (304, HEAD), else the
        status, headers and byte range ``[start, end)`` of the body to send."""
        base = {"ETag": info.etag, "Last-Modified": _http_date(info.mtime_ns),
                "Accept-Ranges": "bytes"}
        if check_conditions(c.headers, info):
            return Response(status_code=304, headers=base)
        part = c.query.get("partNumber")
        if part is not None and part != "1":
            raise S3Error("InvalidArgument" if not part.isdigit() else "InvalidRange",
                          "the requested part number is not satisfiable",
                          headers={"Content-Range": f"bytes */{info.size}"})
        span = parse_range(c.headers.get("range"), info.size) if part is None else None
        start, end = span if span is not None else (0, info.size)
        headers = dict(base)
        headers["Content-Type"] = c.query.get("response-content-type",
                                              "application/octet-stream")
        for name in ("content-disposition", "content-encoding", "content-language",
                     "cache-control", "expires"):
            if f"response-{name}" in c.query:
                headers[name] = c.query[f"response-{name}"]
        headers["Content-Length"] = str(end - start)
        status = 200
        if span is not None:
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{info.size}"
        if head:
            return Response(status_code=status, headers=headers)
        return status, headers, start, end

    # -- writing ---------------------------------------------------------------------------------

    def _body(self, c: Call, max_bytes: int) -> Body:
        return Body(c.request.stream(), c.headers, c.auth, max_bytes)

    async def _receive(self, body: Body, write: Callable[[bytes], None],
                       abort: Callable[[], None]) -> None:
        """Stream ``body`` into ``write`` in batches, calling ``abort`` on any failure."""
        buf = bytearray()
        try:
            async for data in body:
                buf += data
                if len(buf) >= WRITE_BATCH:
                    await _run(write, bytes(buf))
                    buf.clear()
            if buf:
                await _run(write, bytes(buf))
        except BaseException:
            await _run(abort)
            raise

    @_operation("PutObject")
    async def put_object(self, c: Call) -> Response:
        assert c.bucket is not None
        exclusive = False
        if_none = c.headers.get("if-none-match")
        if if_none is not None:
            if if_none.strip() != "*":
                raise S3Error("NotImplemented", "If-None-Match on PutObject supports '*' only")
            exclusive = True
        body = self._body(c, self.max_object_bytes)
        if c.key.endswith("/"):
            await body.read_all(0, S3Error("InvalidArgument", "a key ending with '/' names a "
                                           "folder: its body must be empty"))
            info = await _run(self.store.make_folder, c.bucket, c.key)
            return Response(status_code=200, headers={"ETag": info.etag})
        await _run(self.store.require_bucket, c.bucket)
        if exclusive and await _run(self.store.head_or_none, c.bucket, c.key) is not None:
            raise S3Error("PreconditionFailed", "At least one of the pre-conditions you "
                                                "specified did not hold (the key exists)")
        writer = await _run(functools.partial(self.store.writer, c.bucket, c.key,
                                              write_type=c.headers.get("x-strata-write-type")))
        await self._receive(body, writer.write, writer.abort)
        info = await _run(writer.commit, body.etag, exclusive=exclusive,
                          if_match=c.headers.get("if-match"))
        return Response(status_code=200, headers={"ETag": info.etag, **body.checksum_headers()})

    @_operation("CopyObject")
    async def copy_object(self, c: Call) -> Response:
        assert c.bucket is not None
        src_bucket, src_key = self._copy_source(c.headers["x-amz-copy-source"])
        directive = c.headers.get("x-amz-metadata-directive", "COPY").upper()
        if directive not in ("COPY", "REPLACE"):
            raise S3Error("InvalidArgument", "unknown metadata directive")
        if (src_bucket, src_key) == (c.bucket, c.key) and directive == "COPY":
            raise S3Error("InvalidRequest", "this copy request is illegal because it is trying "
                          "to copy an object to itself without changing the object's metadata")
        src = await self._copy_source_object(c, src_bucket, src_key)
        if src.size > self.max_object_bytes:
            raise S3Error("EntityTooLarge", "the source object exceeds the maximum allowed size")
        if c.key.endswith("/") or src_key.endswith("/"):
            if not (c.key.endswith("/") and src_key.endswith("/")):
                raise S3Error("InvalidArgument", "a folder key copies only to a folder key")
            info = await _run(self.store.make_folder, c.bucket, c.key)
        else:
            await _run(self.store.require_bucket, c.bucket)
            info = await _run(self._copy, src_bucket, src, c.bucket, c.key)
        return _xml(document("CopyObjectResult", [element("LastModified", iso(info.mtime_ns)),
                                                  element("ETag", text(info.etag))]))

    def _copy(self, src_bucket: str, src: ObjectInfo, bucket: str, key: str) -> ObjectInfo:
        reader = self.store.open_range(src_bucket, src, 0, src.size)
        writer = self.store.writer(bucket, key)
        md5 = hashlib.md5()
        try:
            for data in reader:
                md5.update(data)
                writer.write(data)
        except BaseException:
            reader.close()
            writer.abort()
            raise
        return writer.commit(f'"{md5.hexdigest()}"')

    async def _copy_source_object(self, c: Call, bucket: str, key: str) -> ObjectInfo:
        """The copy source, if its ``x-amz-copy-source-if-*`` conditions hold (else
        PreconditionFailed); NoSuchKey / NoSuchBucket when absent."""
        src = await _run(self.store.head, bucket, key)
        conditions = {k[len("x-amz-copy-source-"):]: v for k, v in c.headers.items()
                      if k.startswith("x-amz-copy-source-if-")}
        if check_conditions(conditions, src):
            raise S3Error("PreconditionFailed", "At least one of the pre-conditions you "
                                                "specified did not hold")
        return src

    @staticmethod
    def _copy_source(value: str) -> tuple[str, str]:
        raw, _, version = value.partition("?")
        if version and version not in ("versionId=null", "versionId="):
            raise S3Error("InvalidArgument", "object versions are not supported")
        try:
            source = unquote_to_bytes(raw).decode("utf-8")
        except UnicodeDecodeError as e:
            raise S3Error("InvalidArgument", "x-amz-copy-source is not valid UTF-8") from e
        bucket, _, key = source.lstrip("/").partition("/")
        if not key:
            raise S3Error("InvalidArgument", "x-amz-copy-source must be bucket/key")
        check_bucket(bucket)
        check_key(bucket, key)
        return bucket, key

    @_operation("DeleteObject")
    async def delete_object(self, c: Call) -> Response:
        assert c.bucket is not None
        await _run(self.store.delete, c.bucket, c.key)
        return Response(status_code=204)

    @_operation("DeleteObjects")
    async def delete_objects(self, c: Call) -> Response:
        assert c.bucket is not None
        raw = await self._body(c, MAX_XML_BYTES).read_all(MAX_XML_BYTES)
        doc = parse(raw, "Delete")
        quiet = (child_text(doc, "Quiet") or "").strip().lower() == "true"
        keys = []
        for obj in children(doc, "Object"):
            key = child_text(obj, "Key")
            if key is None:
                raise S3Error("MalformedXML", "an Object has no Key")
            keys.append(key)
        if not keys or len(keys) > MAX_DELETE:
            raise S3Error("MalformedXML", f"a Delete names 1 to {MAX_DELETE} objects")
        bucket = c.bucket
        await _run(self.store.require_bucket, bucket)

        def delete_all() -> list[str]:
            out = []
            for key in keys:
                try:
                    if not key:
                        raise S3Error("InvalidArgument", "the key is empty")
                    check_key(bucket, key)
                    self.store.delete(bucket, key)
                    if not quiet:
                        out.append("<Deleted>" + element("Key", text(key)) + "</Deleted>")
                except (S3Error, CatalogError) as e:
                    err = e if isinstance(e, S3Error) else from_catalog(e)
                    out.append("<Error>" + element("Key", text(key)) +
                               element("Code", err.code) + element("Message", text(err.message))
                               + "</Error>")
            return out

        return _xml(document("DeleteResult", await _run(delete_all)))

    # -- multipart uploads -----------------------------------------------------------------------

    async def _upload(self, c: Call) -> Upload:
        assert c.bucket is not None
        return await _run(self.store.upload, c.query.get("uploadId", ""), c.bucket, c.key)

    @_operation("CreateMultipartUpload")
    async def create_upload(self, c: Call) -> Response:
        assert c.bucket is not None
        if c.key.endswith("/"):
            raise S3Error("InvalidArgument", "a key ending with '/' names a folder")
        upload_id = await _run(self.store.create_upload, c.bucket, c.key)
        return _xml(document("InitiateMultipartUploadResult", [
            element("Bucket", text(c.bucket)), element("Key", text(c.key)),
            element("UploadId", upload_id)]))

    @_operation("UploadPart")
    async def upload_part(self, c: Call) -> Response:
        try:
            number = int(c.query.get("partNumber", ""))
        except ValueError as e:
            raise S3Error("InvalidArgument", "partNumber must be a whole number") from e
        if not 1 <= number <= MAX_PARTS:
            raise S3Error("InvalidArgument", f"part number must be an integer between 1 and "
                                             f"{MAX_PARTS}, inclusive")
        if "x-amz-copy-source" in c.headers:
            return await self.upload_part_copy(c, number=number)
        if "x-amz-copy-source-range" in c.headers:
            raise S3Error("InvalidArgument", "x-amz-copy-source-range is only allowed with "
                                             "x-amz-copy-source")
        upload = await self._upload(c)
        body = self._body(c, min(MAX_PART_BYTES, self.max_object_bytes))
        writer = await _run(self.store.part_writer, upload, number)
        await self._receive(body, writer.write, writer.abort)
        etag = await _run(writer.commit, body.md5.hexdigest())
        return Response(status_code=200, headers={"ETag": etag, **body.checksum_headers()})

    @_operation("UploadPartCopy")
    async def upload_part_copy(self, c: Call, *, number: int) -> Response:
        """UploadPartCopy: part ``number`` from ``x-amz-copy-source`` (an object, not a folder),
        all of it or ``x-amz-copy-source-range``, if the ``x-amz-copy-source-if-*`` conditions
        hold (else PreconditionFailed). A copy still running after :data:`KEEPALIVE_S` answers
        200 at once and keeps the connection alive with whitespace; an error after that is an
        ``<Error>`` in the 200 body, as S3 does (clients check for it)."""
        assert c.bucket is not None
        src_bucket, src_key = self._copy_source(c.headers["x-amz-copy-source"])
        upload = await self._upload(c)
        if src_key.endswith("/"):
            raise S3Error("InvalidArgument", "the copy source names a folder: a part is copied "
                                             "from an object")
        src = await self._copy_source_object(c, src_bucket, src_key)
        start, end = self._copy_source_range(c.headers.get("x-amz-copy-source-range"), src.size)
        if end - start > min(MAX_PART_BYTES, self.max_object_bytes):
            raise S3Error("EntityTooLarge", "the part exceeds the maximum allowed part size")
        task = asyncio.ensure_future(_run(self.store.copy_part, upload, number, src_bucket, src,
                                          start, end))
        # A client gone before the end leaves the copy to finish: its outcome is then unread.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        done, _ = await asyncio.wait({task}, timeout=KEEPALIVE_S)
        if done:
            return _xml(self._copy_part_result(task.result()))
        resource = f"/{c.bucket}/{c.key}"
        stream = self._kept_alive(task, resource, f"copying a part into {resource}",
                                  self._copy_part_result)
        return StreamingResponse(stream, media_type="application/xml")

    @staticmethod
    def _copy_source_range(value: str | None, size: int) -> tuple[int, int]:
        """``[start, end)`` of an ``x-amz-copy-source-range: bytes=first-last`` (inclusive
        offsets) over a source of ``size`` bytes, the whole source without one. As S3:
        InvalidArgument for any other form (``first > last`` included) and for a range that
        does not lie within the source."""
        if value is None:
            return 0, size
        spec = value.strip()
        first, sep, last = spec[len("bytes="):].partition("-")
        if not (spec.startswith("bytes=") and sep and first.isascii() and first.isdigit()
                and last.isascii() and last.isdigit() and int(first) <= int(last)):
            raise S3Error("InvalidArgument", "The x-amz-copy-source-range value must be of the "
                          "form bytes=first-last where first and last are the zero-based "
                          "offsets of the first and last bytes to copy")
        if int(last) >= size:
            raise S3Error("InvalidArgument", "Range specified is not valid for source object "
                                             f"of size: {size}")
        return int(first), int(last) + 1

    @staticmethod
    def _copy_part_result(part: Part) -> bytes:
        return document("CopyPartResult", [element("LastModified", iso(part.mtime_ns)),
                                           element("ETag", text(part.etag))])

    async def _kept_alive(self, task: asyncio.Future[T], resource: str, what: str,
                          answer: Callable[[T], bytes]) -> AsyncIterator[bytes]:
        """A 200 XML answer of a request still running: the XML declaration at once, a space
        every :data:`KEEPALIVE_S` while ``task`` runs (S3 keeps the connection alive so), then
        ``answer`` of its result without the declaration, or an ``<Error>`` (an error after the
        200 is in the body, as S3 does; clients check for it)."""
        yield b'<?xml version="1.0" encoding="UTF-8"?>\n'
        while True:
            done, _ = await asyncio.wait({task}, timeout=KEEPALIVE_S)
            if done:
                break
            yield b" "
        try:
            result = task.result()
        except S3Error as e:
            yield self._inline_error(e, resource)
            return
        except CatalogError as e:
            yield self._inline_error(from_catalog(e), resource)
            return
        except Exception:  # noqa: BLE001 - never a traceback to the client
            log.exception("S3 gateway: %s failed", what)
            yield self._inline_error(S3Error("InternalError", "we encountered an internal "
                                             "error; please try again"), resource)
            return
        yield answer(result).split(b"\n", 1)[1]

    @_operation("CompleteMultipartUpload")
    async def complete_upload(self, c: Call) -> Response:
        upload = await self._upload(c)
        raw = await Body(c.request.stream(), {k: v for k, v in c.headers.items()
                                              if not k.startswith("x-amz-checksum-")},
                         c.auth, MAX_XML_BYTES).read_all(MAX_XML_BYTES)
        doc = parse(raw, "CompleteMultipartUpload")
        wanted: list[tuple[int, str]] = []
        for part in children(doc, "Part"):
            number, etag = child_text(part, "PartNumber"), child_text(part, "ETag")
            if number is None or etag is None or not number.strip().isdigit():
                raise S3Error("MalformedXML", "each Part needs a PartNumber and an ETag")
            wanted.append((int(number), etag))
        plan = await _run(self.store.plan_complete, upload, wanted, self.max_object_bytes)
        location = f"/{upload.bucket}/{upload.key}"

        def answer(info: ObjectInfo) -> bytes:
            return document("CompleteMultipartUploadResult", [
                element("Location", text(location)), element("Bucket", text(upload.bucket)),
                element("Key", text(upload.key)), element("ETag", text(info.etag))])

        task = asyncio.ensure_future(_run(self.store.finish_complete, upload, plan))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # read if unsent
        stream = self._kept_alive(task, location, f"completing upload {upload.upload_id}",
                                  answer)
        return StreamingResponse(stream, media_type="application/xml")

    @staticmethod
    def _inline_error(e: S3Error, resource: str) -> bytes:
        return e.xml(resource, secrets.token_hex(8).upper()).split(b"\n", 1)[1]

    @_operation("AbortMultipartUpload")
    async def abort_upload(self, c: Call) -> Response:
        upload = await self._upload(c)
        await _run(self.store.abort_upload, upload)
        return Response(status_code=204)

    @_operation("ListParts")
    async def list_parts(self, c: Call) -> Response:
        upload = await self._upload(c)
        try:
            max_parts = min(int(c.query.get("max-parts", MAX_KEYS)), MAX_KEYS)
            marker = int(c.query.get("part-number-marker", "0") or 0)
        except ValueError as e:
            raise S3Error("InvalidArgument", "max-parts and part-number-marker are numbers") from e
        parts = [p for n, p in (await _run(self.store.parts, upload)).items() if n > marker]
        shown, truncated = parts[:max_parts], len(parts) > max_parts
        out = [element("Bucket", text(upload.bucket)), element("Key", text(upload.key)),
               element("UploadId", upload.upload_id), element("PartNumberMarker", marker),
               element("MaxParts", max_parts),
               element("IsTruncated", "true" if truncated else "false"),
               element("StorageClass", "STANDARD")]
        if shown:
            out.append(element("NextPartNumberMarker", shown[-1].number))
        for p in shown:
            out.append("<Part>" + element("PartNumber", p.number) +
                       element("LastModified", iso(p.mtime_ns)) + element("ETag", text(p.etag))
                       + element("Size", p.size) + "</Part>")
        return _xml(document("ListPartsResult", out))

    @_operation("ListMultipartUploads")
    async def list_uploads(self, c: Call) -> Response:
        """ListMultipartUploads: prefix, delimiter (CommonPrefixes), key-marker and
        upload-id-marker (ignored without key-marker), max-uploads (default and cap 1,000),
        encoding-type=url; by key, then initiation time (:meth:`ObjectStore.list_uploads`)."""
        assert c.bucket is not None
        q = c.query
        prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
        key_marker, id_marker = q.get("key-marker", ""), q.get("upload-id-marker", "")
        encoding = q.get("encoding-type")
        if encoding is not None and encoding != "url":
            raise S3Error("InvalidArgument", "invalid encoding method specified in request")
        url = encoding == "url"
        raw = q.get("max-uploads", str(MAX_KEYS)).strip()
        if not (raw.isascii() and raw.isdigit()):
            raise S3Error("InvalidArgument", "Argument max-uploads must be an integer between 0 "
                                             "and 2147483647")
        max_uploads = min(int(raw), MAX_KEYS)
        page = await _run(self.store.list_uploads, c.bucket, prefix, delimiter, key_marker,
                          id_marker if key_marker else "", max_uploads)
        out = [element("Bucket", text(c.bucket)), element("KeyMarker", text(key_marker, url)),
               element("UploadIdMarker", text(id_marker))]
        if page.next_key_marker is not None:
            out.append(element("NextKeyMarker", text(page.next_key_marker, url)))
        out.append(element("Prefix", text(prefix, url)))
        if delimiter:
            out.append(element("Delimiter", text(delimiter, url)))
        if page.next_upload_id_marker is not None:
            out.append(element("NextUploadIdMarker", page.next_upload_id_marker))
        out += [element("MaxUploads", max_uploads),
                element("IsTruncated", "true" if page.truncated else "false")]
        initiator = "<Initiator><ID>strata</ID><DisplayName>strata</DisplayName></Initiator>"
        for u in page.uploads:
            out.append("<Upload>" + element("Key", text(u.key, url)) +
                       element("UploadId", u.upload_id) + initiator + OWNER +
                       element("StorageClass", "STANDARD") +
                       element("Initiated", iso(u.initiated_ns)) + "</Upload>")
        for p in page.prefixes:
            out.append("<CommonPrefixes>" + element("Prefix", text(p, url)) +
                       "</CommonPrefixes>")
        if url:
            out.append(element("EncodingType", "url"))
        return _xml(document("ListMultipartUploadsResult", out))
