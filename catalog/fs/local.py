"""Local directories (``file:///path``) as an under file system."""

from __future__ import annotations

from pyarrow import fs as pafs

from catalog.fs.ufs import ArrowUfs


class LocalUfs(ArrowUfs):
    """The local file system; URIs ``file:///abs/path``."""

    def _build(self) -> pafs.FileSystem:
        return pafs.LocalFileSystem()

    def _path(self, uri: str) -> str:
        if uri.startswith("/"):
            return uri
        path = uri[len("file:"):]
        return "/" + path.lstrip("/")

    def _uri(self, path: str) -> str:
        return "file://" + ("/" + path.lstrip("/"))
