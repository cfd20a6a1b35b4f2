"""Data fingerprints: a digest of the file names, sizes and mtimes under a location.

Sync compares fingerprints to notice data changes that leave the metadata untouched (files added,
rewritten or removed under an unchanged table or partition location). Listing goes through the
namespace (:meth:`catalog.fs.namespace.Namespace.fingerprints`, in parallel); this module only
digests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from catalog.fs.ufs import FileStatus

#: Fingerprint of a location that does not exist.
ABSENT = "absent"


def hidden(name: str) -> bool:
    """Hive, Spark and Trino skip these when reading a table directory."""
    return name.startswith(".") or name.startswith("_")


def digest_statuses(statuses: Iterable[FileStatus]) -> str:
    """The fingerprint of a recursive listing: its visible files (no hidden path segment)."""
    return digest_entries([(s.rel, s.size, s.mtime_ns) for s in statuses
                           if not s.is_dir and not any(hidden(p) for p in s.rel.split("/"))])


def digest_entries(entries: list[tuple[str, int, int]]) -> str:
    """The fingerprint of (relative path, size, mtime in ns) entries, in any order."""
    h = hashlib.blake2b(digest_size=16)
    for name, size, mtime in sorted(entries):
        # Names that are not UTF-8 come surrogate-escaped from the listing: digest their bytes.
        h.update(f"{name}\0{size}\0{mtime}\n".encode("utf-8", "surrogateescape"))
    return f"{len(entries)}:{h.hexdigest()}"
