"""The server's attach policy: which storages and metastores an attach may read or connect to
(``CATALOG_ALLOWED_ROOTS``, ``CATALOG_ALLOWED_METASTORES``), checked before anything is read."""

from __future__ import annotations

import fnmatch
import os

from catalog.config import Settings
from catalog.exceptions import InvalidInputError, PermissionDeniedError
from catalog.fs.namespace import Namespace
from catalog.fs.ufs import normalize_uri


def check_attach_allowed(settings: Settings, fs: Namespace, udb_type: str, uri: str,
                         source_db: str) -> None:
    """Raise ``PermissionDeniedError`` unless the policy lets ``udb_type`` at ``uri`` be read."""
    roots, metastores = settings.allowed_roots, settings.allowed_metastores
    if udb_type == "directory" and roots and not uri.startswith("strata:"):
        # strata:/// paths and storages served by a mount are the admin's choice.
        try:
            target = normalize_uri(uri.split("?", 1)[0])
        except InvalidInputError:
            return  # the connector names what is wrong with it
        if fs.reverse(target) is not None:
            return
        if not target.startswith("file://"):
            raise PermissionDeniedError(
                f"directory URI '{uri}' is not served by a mount (only local paths "
                "under CATALOG_ALLOWED_ROOTS or mounted storages may be attached)")
        local = target[len("file://"):]
        paths = [local] + ([os.path.join(local, source_db)]
                           if source_db not in ("", ".") and "/" not in source_db else [])
        real_roots = [os.path.realpath(r.strip().removeprefix("file://"))
                      for r in roots if r.strip()]
        for p in paths:
            real = os.path.realpath(p)  # a symlink may not lead out of the roots
            if not any(real == r or real.startswith(r.rstrip("/") + "/") for r in real_roots):
                raise PermissionDeniedError(
                    f"directory URI '{uri}' is outside the allowed roots (CATALOG_ALLOWED_ROOTS)")
    if udb_type == "hive" and metastores:
        from catalog.udb.hive import parse_thrift_uri  # the Thrift client only when needed

        host, port = parse_thrift_uri(uri)
        host = host.lower()
        if not any(fnmatch.fnmatchcase(f"{host}:{port}" if ":" in pat else host,
                                       pat.strip().lower())
                   for pat in metastores if pat.strip()):
            raise PermissionDeniedError(
                f"metastore {host}:{port} is not allowed (CATALOG_ALLOWED_METASTORES)")
