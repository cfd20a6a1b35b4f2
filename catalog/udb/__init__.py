"""Under-database connectors, loaded by type name (``hive``, ``directory``)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

from catalog.exceptions import InvalidInputError

if TYPE_CHECKING:
    from catalog.config import Settings
    from catalog.fs.namespace import Namespace
    from catalog.udb.base import UnderDatabase

#: type name -> "module:class" of its factory, imported only when used.
UDB_TYPES: dict[str, str] = {
    "hive": "catalog.udb.hive:HiveUdb",
    "directory": "catalog.udb.directory:DirectoryUdb",
}


def load_udb(udb_type: str, uri: str, source_db: str, options: Mapping[str, str],
             settings: Settings, fs: Namespace | None = None) -> UnderDatabase:
    """Build the connector registered as ``udb_type``; its storage access goes through ``fs``."""
    target = UDB_TYPES.get(udb_type)
    if target is None:
        raise InvalidInputError(
            f"unknown under-database type '{udb_type}' (known: {', '.join(sorted(UDB_TYPES))})")
    module_name, _, class_name = target.partition(":")
    factory = getattr(importlib.import_module(module_name), class_name)
    udb: UnderDatabase = factory(uri, source_db, options, settings, fs=fs)
    return udb
