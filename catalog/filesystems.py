"""What kind of file system holds a local path (``/proc/self/mounts``): memory, network, disk."""

from __future__ import annotations

import os

#: File systems whose pages are memory: reading them never waits for a disk.
MEMORY_FILE_SYSTEMS = frozenset({"tmpfs", "ramfs"})
#: File systems whose calls may wait on a network (a stat of them is a round trip, or a hang).
NETWORK_FILE_SYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "lustre", "gpfs",
    "afs", "davfs", "sshfs", "virtiofs", "beegfs", "ocfs2", "gfs2", "orangefs", "pvfs2"})


def file_system_type(path: str) -> str | None:
    """The type of the file system holding ``path`` (its deepest mount point in
    ``/proc/self/mounts``); None when that cannot be read."""
    real = os.path.realpath(path)
    best, fs_type = "", None
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = fields[1].replace("\\040", " ")
                if (real == point or real.startswith(point.rstrip("/") + "/")) and \
                        len(point) >= len(best):
                    best, fs_type = point, fields[2]
    except OSError:
        return None
    return fs_type


def stat_is_local(path: str) -> bool:
    """Whether a stat under ``path`` never waits on a network: a known file system that is
    neither a network one nor FUSE (which may be anything)."""
    fs_type = file_system_type(path)
    return fs_type is not None and fs_type not in NETWORK_FILE_SYSTEMS and \
        not fs_type.startswith("fuse")
