"""Data fingerprints: a digest of the file names, sizes and mtimes under a location.

Sync compares fingerprints to notice data changes that leave the metadata untouched (files added,
rewritten or removed under an unchanged table or partition location).
"""

from __future__ import annotations

import hashlib
import os
from urllib.parse import urlparse

#: Fingerprint of a location that does not exist (or cannot be listed).
ABSENT = "absent"


def _hidden(name: str) -> bool:
    # Hive, Spark and Trino skip these when reading a table directory.
    return name.startswith(".") or name.startswith("_")


def _local_entries(root: str) -> list[tuple[str, int, int]]:
    entries: list[tuple[str, int, int]] = []
    stack = [root]
    while stack:
        top = stack.pop()
        with os.scandir(top) as it:
            for e in it:
                if _hidden(e.name):
                    continue
                if e.is_dir(follow_symlinks=True):
                    stack.append(e.path)
                else:
                    st = e.stat()
                    entries.append((os.path.relpath(e.path, root), st.st_size, st.st_mtime_ns))
    return entries


def _pyarrow_entries(location: str) -> list[tuple[str, int, int]]:
    from pyarrow import fs as pafs

    filesystem, path = pafs.FileSystem.from_uri(location)
    infos = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
    out = []
    for info in infos:
        rel = info.path[len(path):].lstrip("/")
        if info.type == pafs.FileType.File and not any(_hidden(p) for p in rel.split("/")):
            mtime = info.mtime_ns if info.mtime_ns is not None else 0
            out.append((rel, info.size or 0, mtime))
    return out


def data_fingerprint(location: str | None) -> str | None:
    """Digest of the visible files under ``location``; None without a location.

    Returns :data:`ABSENT` when the location does not exist or cannot be listed.
    """
    if not location:
        return None
    parsed = urlparse(location)
    try:
        if parsed.scheme in ("", "file"):
            entries = _local_entries(parsed.path if parsed.scheme else location)
        else:
            entries = _pyarrow_entries(location)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return ABSENT
    except (OSError, ValueError):
        return ABSENT
    return digest_entries(entries)


def digest_entries(entries: list[tuple[str, int, int]]) -> str:
    """The fingerprint of (relative path, size, mtime in ns) entries, in any order."""
    h = hashlib.blake2b(digest_size=16)
    for name, size, mtime in sorted(entries):
        h.update(f"{name}\0{size}\0{mtime}\n".encode())
    return f"{len(entries)}:{h.hexdigest()}"
