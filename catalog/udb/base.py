"""The under-database contract: the few primitives every connector implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence

from catalog.fs.namespace import Namespace
from catalog.models import Database, Partition, Table


class UnderDatabase(ABC):
    """One database of an external system (a Hive Metastore, a directory tree, ...).

    Implementations translate their vendor errors into :mod:`catalog.exceptions`
    (``NotFoundError`` for missing objects, ``UdbUnavailableError`` when unreachable).
    """

    #: Connector-specific option names accepted by ``attach-db -o``.
    OPTIONS: frozenset[str] = frozenset()

    def __init__(self, uri: str, source_db: str, options: Mapping[str, str],
                 fs: Namespace | None = None) -> None:
        self.uri = uri
        self.source_db = source_db
        self.options = dict(options)
        #: The door to storage (mounts, credentials, parallel listing).
        self.fs = fs if fs is not None else Namespace()
        #: Problems of the last reads that skipped something (a table, a column), for humans.
        self.problems: list[str] = []
        #: Tables (lower-cased name -> reason) that exist but could not be read this time: sync
        #: keeps serving their last state instead of removing them.
        self.unreadable: dict[str, str] = {}

    @abstractmethod
    def get_database(self) -> Database:
        """The source database itself; raises ``NoSuchDatabaseError`` if missing."""

    @abstractmethod
    def list_tables(self) -> list[str]:
        """Names of the tables and views of the source database."""

    @abstractmethod
    def get_tables(self, names: Sequence[str]) -> list[Table]:
        """Full tables (with column statistics); names that vanished meanwhile are left out."""

    @abstractmethod
    def list_partitions(self, table: Table) -> list[Partition]:
        """Every partition of ``table`` (with column statistics where the source has them)."""

    def fetch_all(self, names: Sequence[str]) -> Iterator[tuple[Table, list[Partition]]]:
        """Tables of ``names`` with their partitions; connectors may fetch in parallel."""
        for table in self.get_tables(names):
            yield table, self.list_partitions(table)

    def fingerprints(self, locations: Iterable[str | None]) -> dict[str, str | None]:
        """location -> digest of the data under it (file names, sizes, mtimes), listed in
        parallel through the namespace; raises ``UfsUnavailableError`` if storage cannot be
        listed (never "absent"). A connector that listed the data while reading the tables
        (``directory``) answers with that listing: the digest of the data it described, so a
        change after that read shows at the next sync, which opens a new connector."""
        return self.fs.fingerprints(locations)

    def fingerprint(self, location: str | None) -> str | None:
        """The digest of one location (see :meth:`fingerprints`)."""
        return self.fingerprints([location]).get(location) if location else None

    def close(self) -> None:
        """Release connections; the default has none."""
