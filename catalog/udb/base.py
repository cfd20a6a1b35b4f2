"""The under-database contract: the few primitives every connector implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence

from catalog.fs.fingerprint import data_fingerprint
from catalog.models import Database, Partition, Table


class UnderDatabase(ABC):
    """One database of an external system (a Hive Metastore, a directory tree, ...).

    Implementations translate their vendor errors into :mod:`catalog.exceptions`
    (``NotFoundError`` for missing objects, ``UdbUnavailableError`` when unreachable).
    """

    #: Connector-specific option names accepted by ``attach-db -o``.
    OPTIONS: frozenset[str] = frozenset()

    def __init__(self, uri: str, source_db: str, options: Mapping[str, str]) -> None:
        self.uri = uri
        self.source_db = source_db
        self.options = dict(options)
        #: Problems of the last reads that skipped something (a table, a column), for humans.
        self.problems: list[str] = []

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

    def fingerprint(self, location: str | None) -> str | None:
        """Digest of the data under ``location`` (file names, sizes, mtimes)."""
        return data_fingerprint(location)

    def close(self) -> None:
        """Release connections; the default has none."""
