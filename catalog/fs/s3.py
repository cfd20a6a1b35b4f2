"""S3 (``s3://bucket/key``, ``s3a://``) as an under file system, through ``pyarrow.fs.S3FileSystem``.

Options are named as Trino's native S3 file system names them: ``s3.endpoint``, ``s3.region``,
``s3.aws-access-key``, ``s3.aws-secret-key``, ``s3.path-style-access``, plus
``s3.connect-timeout`` / ``s3.request-timeout`` (seconds) and ``s3.max-error-retries``. Without
keys the AWS default credential chain applies, except the EC2 instance metadata endpoint, which
is off unless ``AWS_EC2_METADATA_DISABLED=false`` is set in the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from datetime import datetime
from email.utils import parsedate_to_datetime

import pyarrow as pa
from pyarrow import fs as pafs

from catalog.exceptions import InvalidOptionError
from catalog.fs.ufs import ArrowUfs, FileStatus
from catalog.options import seconds_option

# Never probe the instance metadata endpoint unless asked to (it hangs off EC2).
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

#: Option names whose values are secrets: never shown, never logged.
SECRET_OPTIONS = frozenset({"s3.aws-secret-key"})


class S3Ufs(ArrowUfs):
    """One S3 endpoint with one set of credentials; URIs ``s3://bucket/key``."""

    #: Keys imply their folders: no marker objects are made for a write's parents.
    implicit_dirs = True

    OPTIONS = frozenset({
        "s3.endpoint", "s3.region", "s3.aws-access-key", "s3.aws-secret-key",
        "s3.path-style-access", "s3.connect-timeout", "s3.request-timeout",
        "s3.max-error-retries",
    })

    def _build(self) -> pafs.FileSystem:
        o = self.options
        kwargs: dict[str, object] = {
            "connect_timeout": seconds_option(o, "s3.connect-timeout", 10.0,
                                              minimum=0.001, maximum=3600),
            "request_timeout": seconds_option(o, "s3.request-timeout", 30.0,
                                              minimum=0.001, maximum=3600),
            "retry_strategy": pafs.AwsStandardS3RetryStrategy(
                max_attempts=_count(o, "s3.max-error-retries", 3) + 1),
            "region": o.get("s3.region") or "us-east-1",
            # Small objects go up in one PutObject on close (no multipart upload).
            "allow_delayed_open": True,
        }
        endpoint = o.get("s3.endpoint")
        if endpoint:
            scheme, sep, host = endpoint.partition("://")
            if not sep:
                scheme, host = "https", endpoint
            if scheme not in ("http", "https") or not host.strip("/"):
                raise InvalidOptionError(
                    f"s3.endpoint must be http(s)://host[:port], got '{endpoint}'")
            kwargs["endpoint_override"] = host.strip("/")
            kwargs["scheme"] = scheme
        access, secret = o.get("s3.aws-access-key"), o.get("s3.aws-secret-key")
        if bool(access) != bool(secret):
            raise InvalidOptionError("s3.aws-access-key and s3.aws-secret-key go together")
        if access:
            kwargs["access_key"], kwargs["secret_key"] = access, secret
        path_style = o.get("s3.path-style-access", "true" if endpoint else "false").lower()
        if path_style not in ("true", "false"):
            raise InvalidOptionError(
                f"s3.path-style-access must be true or false, got '{o['s3.path-style-access']}'")
        kwargs["force_virtual_addressing"] = path_style == "false"
        return pafs.S3FileSystem(**kwargs)  # type: ignore[arg-type]

    def stat_file(self, uri: str) -> FileStatus | None:
        """One HeadObject (through pyarrow's input file) giving size, mtime and the ETag; a key
        that is no object falls back to :meth:`info` (a folder, or absent)."""
        try:
            f = self.fs.open_input_file(self._path(uri))
        except (OSError, pa.ArrowException):
            return self.info(uri)
        try:
            meta = f.metadata()
            size = int(f.size())
        except (OSError, pa.ArrowException) as e:
            raise self._unavailable("stat", uri, e) from e
        finally:
            f.close()
        got = {(k.decode() if isinstance(k, bytes) else k).lower():
               (v.decode() if isinstance(v, bytes) else v) for k, v in meta.items()}
        etag = got.get("etag") or None
        mtime_ns = _http_time_ns(got.get("last-modified"))
        if mtime_ns is None:
            st = self.info(uri)
            if st is None:
                return None
            mtime_ns = st.mtime_ns
        return FileStatus(uri=uri, rel="", is_dir=False, size=size, mtime_ns=mtime_ns,
                          etag=etag.strip('"') if etag else None)

    def _path(self, uri: str) -> str:
        return uri.split("://", 1)[1]

    def _uri(self, path: str) -> str:
        return f"{self.scheme}://{path}"



def _http_time_ns(value: str | None) -> int | None:
    """Nanoseconds of an HTTP date or an ISO-8601 time (pyarrow gives either); None if none."""
    if not value:
        return None
    try:
        return int(parsedate_to_datetime(value).timestamp() * 1e9)
    except (TypeError, ValueError):
        pass
    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1e9)
    except ValueError:
        return None


def _count(options: Mapping[str, str], key: str, default: int) -> int:
    raw = options.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as e:
        raise InvalidOptionError(f"{key} must be a whole number, got '{raw}'") from e
    if not 0 <= value <= 20:
        raise InvalidOptionError(f"{key} must be between 0 and 20, got '{raw}'")
    return value
