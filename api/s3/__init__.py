"""The S3-compatible gateway: the namespace (:class:`catalog.fs.namespace.Namespace`) over the S3
REST API, an ASGI app (:class:`api.s3.app.S3Gateway`) served by uvicorn next to the REST API.

Addressing: the first namespace level is the bucket (``s3://lake/sales/x.csv`` is
``/lake/sales/x.csv``); path-style (``http://host:port/lake/sales/x.csv``) and virtual-host style
(``http://lake.localhost:port/sales/x.csv``, for the domains ``localhost`` and the listen host
when it is a name). The path is percent-decoded exactly once; keys with ``.`` or ``..``
segments, ``//``, NUL or other control characters, invalid UTF-8, more than 1,024 bytes, or the
reserved temporary-file mark are refused (``InvalidArgument`` / ``KeyTooLongError``, 400).

Operations:

* ListBuckets (top-level namespace folders: mounts and the folders leading to them), HeadBucket,
  GetBucketLocation, GetBucketVersioning (never enabled); CreateBucket answers
  ``BucketAlreadyOwnedByYou`` for an existing bucket and ``AccessDenied`` otherwise (buckets are
  mounts: ``catalogctl fs mount``), DeleteBucket ``AccessDenied``.
* ListObjectsV2 (prefix, delimiter and CommonPrefixes, continuation-token, start-after, max-keys
  up to 1,000, KeyCount, encoding-type=url) and ListObjects v1 (marker, NextMarker).
* GetObject / HeadObject: Content-Length, Last-Modified, ETag, Accept-Ranges; ``Range`` as
  ``bytes=a-b``, ``a-``, ``-n`` (206; several ranges or bad syntax: the whole object; not
  satisfiable: 416 ``InvalidRange``); If-Match / If-Unmodified-Since (412) and If-None-Match /
  If-Modified-Since (304) in RFC 7232's order; ``partNumber=1``; ``response-content-type`` and
  the other ``response-*`` overrides. Bodies stream in 1 MiB chunks.
* PutObject with ``If-None-Match: *`` (412 when the key exists; atomic on local mounts) and
  ``If-Match``, ``Content-MD5`` (``BadDigest``), ``x-amz-checksum-*`` headers; a key ending in
  ``/`` with an empty body makes a folder. CopyObject (``x-amz-copy-source``, directive COPY or
  REPLACE, ``x-amz-copy-source-if-*``). DeleteObject (204, also when absent), DeleteObjects (up to
  1,000 keys, Quiet).
* Multipart: CreateMultipartUpload, UploadPart, CompleteMultipartUpload (ETag = MD5 of the
  parts' MD5s + ``-N``; ``InvalidPart``, ``InvalidPartOrder``, ``EntityTooSmall`` for non-last
  parts under 5 MiB; whitespace keeps the connection alive while the object is written, errors
  after that are an ``<Error>`` in the 200 body, as S3 does), AbortMultipartUpload, ListParts,
  UploadPartCopy (``x-amz-copy-source-range``, the copy-source conditions, whitespace
  keep-alive), ListMultipartUploads (prefix, delimiter, key and upload-id markers,
  max-uploads, ``encoding-type=url``).
* Bodies: plain (``x-amz-content-sha256`` verified: ``XAmzContentSHA256Mismatch``; or
  ``UNSIGNED-PAYLOAD``) and ``aws-chunked``: ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD`` (every chunk
  signature verified), ``STREAMING-UNSIGNED-PAYLOAD-TRAILER`` and
  ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER`` (trailing ``x-amz-checksum-crc32`` / ``crc32c`` /
  ``crc64nvme`` / ``sha1`` / ``sha256`` verified, and the trailer signature), with
  ``x-amz-decoded-content-length``. Nothing becomes visible before the whole body is verified.
  Objects and parts are limited by ``s3_max_object_bytes`` (``EntityTooLarge``; parts also 5 GiB).
* Everything else: ``NotImplemented`` (501) for known sub-resources (``?acl``, ``?tagging``...),
  ``MethodNotAllowed`` (405) for other methods.

Errors are S3 error XML (Code, Message, Resource, RequestId; no body for HEAD). The catalog's
errors map once (:func:`api.s3.errors.from_catalog`): a missing path is ``NoSuchKey`` (or
``NoSuchBucket``), a read-only mount, a policy refusal or a mount point in use ``AccessDenied``,
an unreachable storage ``ServiceUnavailable`` (503), other storage failures and anything
unexpected ``InternalError`` (500, logged, never a traceback to the client).

Access: AWS Signature V4 (header and presigned URLs, ``X-Amz-Expires`` up to 7 days) with
``s3_access_key`` / ``s3_secret_key`` for ``s3_region`` (:mod:`api.s3.auth`). Without keys the
gateway allows anonymous access, and then refuses to start unless it listens on loopback only.
Object semantics (ETags, folders, atomic visibility, staging): :mod:`api.s3.objects`.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from api.s3.app import S3Gateway
from api.s3.auth import Credentials
from catalog.config import Settings
from catalog.exceptions import InvalidOptionError
from catalog.fs.namespace import Namespace

__all__ = ["S3Gateway", "create_s3_app", "credentials_from", "is_loopback"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def credentials_from(settings: Settings) -> Credentials | None:
    """The gateway's key pair from ``settings``; None when none is configured."""
    access = (settings.s3_access_key or "").strip()
    secret = settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else ""
    if bool(access) != bool(secret):
        raise InvalidOptionError("CATALOG_S3_ACCESS_KEY and CATALOG_S3_SECRET_KEY go together")
    return Credentials(access, secret, settings.s3_region) if access else None


def create_s3_app(fs: Namespace, settings: Settings, *, host: str | None = None,
                  spool_dir: str | Path | None = None) -> S3Gateway:
    """The gateway over ``fs`` for ``settings``; refuses anonymous access beyond loopback."""
    host = settings.host if host is None else host
    credentials = credentials_from(settings)
    if credentials is None and not is_loopback(host):
        raise InvalidOptionError(
            f"the S3 gateway listens on {host}: set CATALOG_S3_ACCESS_KEY and "
            "CATALOG_S3_SECRET_KEY (without keys it serves loopback only, anonymously)")
    domains = ["localhost"]
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        if host.lower() != "localhost":
            domains.append(host.lower())
    return S3Gateway(fs, credentials=credentials, region=settings.s3_region,
                     max_object_bytes=settings.s3_max_object_bytes, domains=tuple(domains),
                     spool_dir=spool_dir)
