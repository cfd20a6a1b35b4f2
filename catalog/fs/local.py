"""Local directories (``file:///path``) as an under file system."""

from __future__ import annotations

import os

from pyarrow import fs as pafs

from catalog.exceptions import UfsUnavailableError
from catalog.fs.ufs import ArrowUfs, FileStatus


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

    def _path(self, uri: str) -> str:
        if uri.startswith("/"):
            return uri
        path = uri[len("file:"):]
        return "/" + path.lstrip("/")

    def _uri(self, path: str) -> str:
        return "file://" + ("/" + path.lstrip("/"))
