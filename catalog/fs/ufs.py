"""Under file systems: the storages the namespace mounts (``file://`` local directories, ``s3://``).

The contract is small (:class:`UnderFileSystem`: ``info``, ``list``, ``open_input``,
``open_output``, ``delete``, ``mkdirs``) and the conveniences derive from it (``read_range``,
``read_bytes``, ``write_bytes``, ``exists``). Every method takes full UFS URIs
(``file:///data/x``, ``s3://bucket/key``) and answers "absent" only for what does not exist:
anything that could not be asked (timeout, credentials, 5xx, permission) raises
:class:`~catalog.exceptions.UfsUnavailableError`.

Implementations are loaded by URI scheme from :data:`UFS_SCHEMES` (``scheme -> "module:class"``,
imported when first used), as pyiceberg's ``SCHEMA_TO_FILE_IO`` does.
"""

from __future__ import annotations

import importlib
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any, Self
from urllib.parse import urlsplit

import pyarrow as pa
from pyarrow import fs as pafs

from catalog.exceptions import (
    InvalidInputError,
    InvalidOptionError,
    NoSuchPathError,
    UfsUnavailableError,
)

#: URI scheme -> "module:class" of its under file system, imported only when used.
UFS_SCHEMES: dict[str, str] = {
    "file": "catalog.fs.local:LocalUfs",
    "s3": "catalog.fs.s3:S3Ufs",
    "s3a": "catalog.fs.s3:S3Ufs",
}


@dataclass(frozen=True, slots=True)
class FileStatus:
    """One file or directory of an under storage."""

    uri: str
    rel: str  # path relative to the listed directory ('' for ``info`` answers)
    is_dir: bool
    size: int
    mtime_ns: int
    etag: str | None = None  # where the storage gives one (S3, on ``stat_file``)

    @property
    def name(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1]


def uri_scheme(uri: str) -> str:
    """The scheme of a UFS URI; plain absolute paths are ``file``."""
    if uri.startswith("/"):
        return "file"
    head, sep, _ = uri.partition("://")
    if sep and head.isalnum() and head.islower():
        return head
    parts = urlsplit(uri)
    if not parts.scheme or "://" not in uri and not uri.startswith("file:"):
        raise InvalidInputError(f"'{uri}' is not a storage URI (file:///path, s3://bucket/key)")
    return parts.scheme.lower()


def normalize_uri(uri: str) -> str:
    """The canonical form of a UFS URI: ``file:///abs/path`` or ``s3://bucket/key``, no
    trailing slash (``s3a://`` stays ``s3a://``: it is what the tables say)."""
    scheme = uri_scheme(uri)
    if _is_canonical(uri, scheme):
        return uri
    if scheme == "file":
        path = uri if uri.startswith("/") else urlsplit(uri).path
        if not path.startswith("/"):
            raise InvalidInputError(f"'{uri}' is not an absolute local path")
        path = os.path.normpath(path)
        path = "/" + path.lstrip("/")  # normpath keeps a leading '//'
        return "file://" + path if path != "/" else "file:///"
    parts = urlsplit(uri)
    if not parts.netloc:
        raise InvalidInputError(f"'{uri}' names no bucket")
    key = "/".join(p for p in parts.path.split("/") if p)
    return f"{scheme}://{parts.netloc}" + (f"/{key}" if key else "")


def _is_canonical(uri: str, scheme: str) -> bool:
    """Fast path of :func:`normalize_uri` (sync normalizes every partition location)."""
    prefix = "file:///" if scheme == "file" else f"{scheme}://"
    if not uri.startswith(prefix) or uri.endswith("/") or "?" in uri or "#" in uri:
        return False
    rest = uri[len(prefix):]
    if not rest or (scheme != "file" and rest.startswith("/")):
        return False
    return "//" not in rest and "/./" not in rest and "/../" not in rest and not rest.endswith(
        ("/.", "/..")) and not rest.startswith(("./", "../")) and rest not in (".", "..")


def fold_scheme(uri: str) -> str:
    """``s3a://`` and ``s3://`` name the same objects: the ``s3://`` spelling, for comparing."""
    return "s3://" + uri[len("s3a://"):] if uri.startswith("s3a://") else uri


def is_within(uri: str, root: str) -> bool:
    """Whether normalized ``uri`` is ``root`` or below it."""
    if uri == root:
        return True
    return uri.startswith(root if root.endswith("/") else root + "/")


class WriteOnlyStream:
    """The fixed answers of a binary output stream (writable, neither readable nor seekable) and
    its ``with`` protocol: a clean exit closes (the file becomes visible), an exception aborts."""

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False


class UnderFileSystem(ABC):
    """One under storage (a local tree, an S3 endpoint with its credentials)."""

    #: Option names this storage accepts (named as Trino names them).
    OPTIONS: frozenset[str] = frozenset()
    #: Whether a call is a network round trip (listings then run in parallel).
    remote = True
    #: Whether folders exist only through the files below them (object stores).
    implicit_dirs = False

    def __init__(self, options: Mapping[str, str] | None = None, scheme: str = "file") -> None:
        self.options = dict(options or {})
        self.scheme = scheme

    @abstractmethod
    def info(self, uri: str) -> FileStatus | None:
        """Status of ``uri``; None when it does not exist."""

    @abstractmethod
    def list(self, uri: str, recursive: bool = False) -> list[FileStatus] | None:
        """Entries below directory ``uri`` (every level when ``recursive``); None when absent."""

    @abstractmethod
    def open_input(self, uri: str) -> Any:
        """A seekable binary reader (``pyarrow.NativeFile``); NoSuchPathError when absent."""

    @abstractmethod
    def open_output(self, uri: str) -> IO[bytes] | Any:
        """A binary writer replacing ``uri`` (parents created as needed)."""

    @abstractmethod
    def delete(self, uri: str, recursive: bool = False) -> None:
        """Remove a file (or a directory tree with ``recursive``); absent is no error."""

    @abstractmethod
    def mkdirs(self, uri: str) -> None:
        """Create a directory and its parents (a no-op where directories are implicit)."""

    # -- derived conveniences --------------------------------------------------------------------

    def stat_file(self, uri: str) -> FileStatus | None:
        """:meth:`info` with the ETag where the storage has one: the identity the cache keys a
        file's blocks by. The default is :meth:`info`."""
        return self.info(uri)

    def exists(self, uri: str) -> bool:
        return self.info(uri) is not None

    def read_range(self, uri: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of a file (fewer at its end)."""
        with self.open_input(uri) as f:
            f.seek(start)
            return bytes(f.read(max(0, end - start)))

    def read_bytes(self, uri: str) -> bytes:
        with self.open_input(uri) as f:
            return bytes(f.read())

    def write_bytes(self, uri: str, data: bytes) -> None:
        with self.open_output(uri) as f:
            f.write(data)

    def close(self) -> None:
        """Release connections; the default has none."""


class ArrowUfs(UnderFileSystem):
    """An under file system backed by a ``pyarrow.fs.FileSystem``; subclasses build it and map
    URIs to its paths. Errors are translated here, once."""

    def __init__(self, options: Mapping[str, str] | None = None, scheme: str = "file") -> None:
        super().__init__(options, scheme)
        self.fs = self._build()

    @abstractmethod
    def _build(self) -> pafs.FileSystem:
        """The pyarrow file system for these options."""

    @abstractmethod
    def _path(self, uri: str) -> str:
        """The pyarrow path of ``uri``."""

    @abstractmethod
    def _uri(self, path: str) -> str:
        """The URI of pyarrow path ``path``."""

    def _unavailable(self, what: str, uri: str, e: BaseException) -> UfsUnavailableError:
        return UfsUnavailableError(f"cannot {what} {uri}: {_one_line(e)}")

    def info(self, uri: str) -> FileStatus | None:
        try:
            fi = self.fs.get_file_info(self._path(uri))
        except (OSError, pa.ArrowException) as e:
            raise self._unavailable("stat", uri, e) from e
        return self._status(fi, "")

    def list(self, uri: str, recursive: bool = False) -> list[FileStatus] | None:
        path = self._path(uri).rstrip("/")
        try:
            infos = self.fs.get_file_info(
                pafs.FileSelector(path, recursive=recursive, allow_not_found=True))
        except (NotADirectoryError, FileNotFoundError):
            return None
        except (OSError, pa.ArrowException) as e:
            raise self._unavailable("list", uri, e) from e
        if not infos:
            status = self.info(uri)
            if status is None or not status.is_dir:
                return None  # absent, or a file: no directory to list
        cut = len(path) + 1
        out = []
        for fi in infos:
            status = self._status(fi, fi.path[cut:])
            if status is not None:
                out.append(status)
        return out

    def _status(self, fi: pafs.FileInfo, rel: str) -> FileStatus | None:
        if fi.type == pafs.FileType.NotFound:
            return None
        is_dir = fi.type == pafs.FileType.Directory
        return FileStatus(uri=self._uri(fi.path), rel=rel, is_dir=is_dir,
                          size=0 if is_dir else int(fi.size or 0),
                          mtime_ns=int(fi.mtime_ns or 0))

    def open_input(self, uri: str) -> Any:
        try:
            return self.fs.open_input_file(self._path(uri))
        except FileNotFoundError as e:
            raise NoSuchPathError(f"no file {uri}") from e
        except IsADirectoryError as e:
            raise InvalidInputError(f"{uri} is a directory") from e
        except (OSError, pa.ArrowException) as e:
            if "not found" in str(e).lower() or "does not exist" in str(e).lower():
                raise NoSuchPathError(f"no file {uri}") from e
            raise self._unavailable("read", uri, e) from e

    def open_output(self, uri: str) -> Any:
        path = self._path(uri)
        try:
            parent = path.rsplit("/", 1)[0]
            if parent and not self.implicit_dirs:
                self.fs.create_dir(parent, recursive=True)
            return self.fs.open_output_stream(path)
        except (OSError, pa.ArrowException) as e:
            raise self._unavailable("write", uri, e) from e

    def write_bytes(self, uri: str, data: bytes) -> None:
        try:
            super().write_bytes(uri, data)
        except (OSError, pa.ArrowException) as e:  # raised by the close that uploads
            raise self._unavailable("write", uri, e) from e

    def delete(self, uri: str, recursive: bool = False) -> None:
        path = self._path(uri)
        try:
            fi = self.fs.get_file_info(path)
            if fi.type == pafs.FileType.NotFound:
                return
            if fi.type == pafs.FileType.Directory:
                if not recursive:
                    raise InvalidInputError(f"{uri} is a directory (delete it recursively)")
                self.fs.delete_dir(path)
            else:
                self.fs.delete_file(path)
        except FileNotFoundError:
            return
        except (OSError, pa.ArrowException) as e:
            raise self._unavailable("delete", uri, e) from e

    def mkdirs(self, uri: str) -> None:
        try:
            self.fs.create_dir(self._path(uri), recursive=True)
        except (OSError, pa.ArrowException) as e:
            raise self._unavailable("create", uri, e) from e


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def load_ufs(uri: str, options: Mapping[str, str] | None = None) -> UnderFileSystem:
    """The under file system for ``uri``'s scheme, built with ``options``."""
    scheme = uri_scheme(uri)
    target = UFS_SCHEMES.get(scheme)
    if target is None:
        raise InvalidInputError(f"unsupported storage scheme '{scheme}' in '{uri}' (supported: "
                                f"{', '.join(sorted(UFS_SCHEMES))})")
    module_name, _, class_name = target.partition(":")
    cls: type[UnderFileSystem] = getattr(importlib.import_module(module_name), class_name)
    unknown = set(options or {}) - cls.OPTIONS
    if unknown:
        known = ", ".join(sorted(cls.OPTIONS)) or "none"
        raise InvalidOptionError(f"unknown option(s) {', '.join(sorted(unknown)[:5])} for "
                                 f"{scheme}:// storage (known: {known})")
    return cls(options, scheme=scheme)
