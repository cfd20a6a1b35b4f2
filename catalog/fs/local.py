"""Local directories (``file:///path``) as an under file system.

Writes are atomic: :meth:`LocalUfs.open_output` writes a hidden sibling
(``.<name>.strata-tmp-<id>``) renamed over the file on a clean close, removed on an error or
:meth:`AtomicOutput.abort`; a crash leaves at most the hidden file, never a partial one.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from pyarrow import fs as pafs

from catalog.exceptions import InvalidInputError, UfsUnavailableError
from catalog.fs.ufs import ArrowUfs, FileStatus, WriteOnlyStream


def local_path(uri: str) -> str | None:
    """The local path of a ``file:`` URI; None for other storages."""
    if not uri.startswith("file:"):
        return None
    return "/" + uri[len("file:"):].lstrip("/")


class LocalUfs(ArrowUfs):
    """The local file system; URIs ``file:///abs/path``. Listing uses ``os.scandir`` (a third
    of pyarrow's cost per directory: sync lists every partition folder)."""

    #: Listing is a system call away: no thread pool pays for itself.
    remote = False

    def list(self, uri: str, recursive: bool = False) -> list[FileStatus] | None:
        top = self._path(uri).rstrip("/") or "/"
        base = uri.rstrip("/")
        out: list[FileStatus] = []
        stack = [""]
        while stack:
            rel_dir = stack.pop()
            try:
                with os.scandir(f"{top}/{rel_dir}" if rel_dir else top) as entries:
                    for entry in entries:
                        rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                        try:
                            st = entry.stat()
                            is_dir = entry.is_dir()
                        except FileNotFoundError:
                            continue  # removed while listed
                        out.append(FileStatus(uri=f"{base}/{rel}", rel=rel, is_dir=is_dir,
                                              size=0 if is_dir else st.st_size,
                                              mtime_ns=st.st_mtime_ns))
                        if is_dir and recursive:
                            stack.append(rel)
            except (FileNotFoundError, NotADirectoryError):
                if not rel_dir:
                    return None  # the directory itself is absent
                continue  # a sub-directory removed while listed
            except OSError as e:
                raise UfsUnavailableError(f"cannot list {uri}: {e}") from e
        return out

    def _build(self) -> pafs.FileSystem:
        return pafs.LocalFileSystem()

    def open_output(self, uri: str) -> AtomicOutput:
        path = self._path(uri)
        if os.path.isdir(path):
            raise InvalidInputError(f"{uri} is a directory")
        parent, name = os.path.split(path)
        try:
            os.makedirs(parent, exist_ok=True)
            tmp = os.path.join(parent, f".{name[:150]}{TMP_MARK}{secrets.token_hex(8)}")
            return AtomicOutput(open(tmp, "xb"), tmp, path)
        except OSError as e:
            raise UfsUnavailableError(f"cannot write {uri}: {e}") from e

    def write_bytes(self, uri: str, data: bytes) -> None:
        with self.open_output(uri) as f:
            f.write(data)

    def _path(self, uri: str) -> str:
        return local_path(uri) or uri

    def _uri(self, path: str) -> str:
        return "file://" + ("/" + path.lstrip("/"))


#: Part of the names of files being written (hidden by the S3 gateway's listings).
TMP_MARK = ".strata-tmp-"


class AtomicOutput(WriteOnlyStream):
    """A binary writer of a hidden temp file renamed over its target on a clean :meth:`close`
    (or the end of a ``with`` block without an error); :meth:`abort` removes it."""

    def __init__(self, f: Any, tmp: str, target: str) -> None:
        self._f = f
        self.tmp = tmp
        self.target = target

    @property
    def closed(self) -> bool:
        return bool(self._f.closed)

    def write(self, data: Any) -> int:
        return int(self._f.write(data))

    def tell(self) -> int:
        return int(self._f.tell())

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        if self._f.closed:
            return
        try:
            self._f.close()
            os.replace(self.tmp, self.target)
        except OSError as e:
            self._remove()
            raise UfsUnavailableError(f"cannot write {self.target}: {e}") from e

    def abort(self) -> None:
        if not self._f.closed:
            self._f.close()
        self._remove()

    def _remove(self) -> None:
        try:
            os.unlink(self.tmp)
        except OSError:
            pass

