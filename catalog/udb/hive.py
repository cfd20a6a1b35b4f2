"""UDB ``hive``: a database of an existing Hive Metastore, read over HMS Thrift.

Works against Hive Metastore 2.3 and Hive 4 (which dropped several old calls): every read tries
the request-style call first and falls back to the older call on "Invalid method name".
Connections are pooled; each call has a timeout and is retried with exponential backoff on
transport errors.
"""

from __future__ import annotations

import base64
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse

from hmsclient.genthrift.hive_metastore import ThriftHiveMetastore
from hmsclient.genthrift.hive_metastore import ttypes as hms
from thrift.protocol import TBinaryProtocol
from thrift.Thrift import TApplicationException, TException
from thrift.transport import TSocket, TTransport

from catalog.exceptions import (
    InvalidInputError,
    NoSuchDatabaseError,
    UdbError,
    UdbUnavailableError,
)
from catalog.models import (
    Column,
    ColumnStatistics,
    Database,
    Partition,
    SerDe,
    SkewedInfo,
    SortColumn,
    StorageDescriptor,
    Table,
    partition_name,
)
from catalog.udb.base import UnderDatabase

if TYPE_CHECKING:
    from catalog.fs.namespace import Namespace
    from catalog.config import Settings

T = TypeVar("T")

_PRINCIPAL_TYPES = {v: k for k, v in hms.PrincipalType._NAMES_TO_VALUES.items()}
_STATS_KINDS = ("boolean", "long", "double", "string", "binary", "decimal", "date")
_BATCH = 100


def parse_thrift_uri(uri: str) -> tuple[str, int]:
    """``thrift://host:port`` -> (host, port); the port defaults to 9083."""
    parsed = urlparse(uri)
    if parsed.scheme != "thrift" or not parsed.hostname:
        raise InvalidInputError(f"'{uri}' is not a metastore URI like thrift://host:9083")
    try:
        port = parsed.port or 9083
    except ValueError as e:
        raise InvalidInputError(f"'{uri}' has an invalid port") from e
    return parsed.hostname, port


class _Connection:
    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        sock = TSocket.TSocket(host, port)
        sock.setTimeout(int(timeout_s * 1000))
        self.transport = TTransport.TBufferedTransport(sock)
        self.client = ThriftHiveMetastore.Client(
            TBinaryProtocol.TBinaryProtocolAccelerated(self.transport))
        self.transport.open()

    def close(self) -> None:
        try:
            self.transport.close()
        except Exception:  # noqa: BLE001 - closing a broken socket must not raise
            pass


def _is_unknown_method(e: BaseException) -> bool:
    return isinstance(e, TApplicationException) and e.type == TApplicationException.UNKNOWN_METHOD


class HiveUdb(UnderDatabase):
    """A database of a Hive Metastore reached at ``thrift://host:port``."""

    OPTIONS = frozenset({"stats"})

    def __init__(self, uri: str, source_db: str, options: Mapping[str, str],
                 settings: Settings, fs: Namespace | None = None) -> None:
        super().__init__(uri, source_db, options, fs)
        self.host, self.port = parse_thrift_uri(uri)
        self.timeout_s = settings.udb_timeout_s
        self.retries = settings.udb_retries
        self.pool_size = settings.udb_pool_size
        self.with_stats = options.get("stats", "true").lower() not in ("false", "0", "no")
        self._pool: queue.LifoQueue[_Connection] = queue.LifoQueue()
        self._lock = threading.Lock()
        self._unsupported: set[str] = set()

    # -- connection pool + retries ---------------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[_Connection]:
        try:
            conn = self._pool.get_nowait()
        except queue.Empty:
            conn = _Connection(self.host, self.port, self.timeout_s)
        ok = False
        try:
            yield conn
            ok = True
        except TTransport.TTransportException:
            raise  # the connection is broken
        except TException:
            ok = True  # a whole answer (NoSuchObject, Invalid method name): the socket is fine
            raise
        finally:
            if ok and self._pool.qsize() < self.pool_size:
                self._pool.put(conn)
            else:
                conn.close()

    def _call(self, what: str, fn: Callable[[Any], T]) -> T:
        """Run ``fn(client)`` with retries on transport errors; vendor errors are translated."""
        delay = 0.2
        for attempt in range(self.retries + 1):
            try:
                with self._connection() as conn:
                    return fn(conn.client)
            except hms.NoSuchObjectException:
                raise
            except (TTransport.TTransportException, socket.error, EOFError) as e:
                if attempt == self.retries:
                    raise UdbUnavailableError(
                        f"hive metastore {self.host}:{self.port} unreachable during {what}: "
                        f"{e}") from e
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
            except TApplicationException:
                raise
            except TException as e:
                raise UdbError(f"hive metastore {self.host}:{self.port} failed {what}: "
                               f"{getattr(e, 'message', None) or e}") from e
        raise AssertionError("unreachable")

    def _first_supported(self, what: str, *calls: tuple[str, Callable[[Any], T]]) -> T:
        """Try each (method, call) in turn, skipping methods the server does not know."""
        last: BaseException | None = None
        for method, fn in calls:
            if method in self._unsupported:
                continue
            try:
                return self._call(what, fn)
            except TApplicationException as e:
                if not _is_unknown_method(e):
                    raise UdbError(f"hive metastore failed {what}: {e.message}") from e
                self._unsupported.add(method)
                last = e
        raise UdbError(f"hive metastore {self.host}:{self.port} supports none of the calls for "
                       f"{what}") from last

    def close(self) -> None:
        while True:
            try:
                self._pool.get_nowait().close()
            except queue.Empty:
                return

    # -- the contract ----------------------------------------------------------------------------

    def get_database(self) -> Database:
        try:
            db = self._call("get_database", lambda c: c.get_database(self.source_db))
        except hms.NoSuchObjectException as e:
            raise NoSuchDatabaseError(self.source_db) from e
        return database_from_thrift(db)

    def list_tables(self) -> list[str]:
        try:
            names: list[str] = self._first_supported(
                "list tables",
                ("get_all_tables", lambda c: c.get_all_tables(self.source_db)),
                ("get_tables", lambda c: c.get_tables(self.source_db, "*")),
            )
        except hms.NoSuchObjectException as e:
            raise NoSuchDatabaseError(self.source_db) from e
        return sorted(names)

    def get_tables(self, names: Sequence[str]) -> list[Table]:
        tables: list[hms.Table] = []
        for start in range(0, len(names), _BATCH):
            tables.extend(self._fetch_tables(list(names[start:start + _BATCH])))
        result = []
        for t in tables:
            stats = self._table_stats(t) if self.with_stats and t.tableType != "VIRTUAL_VIEW" else []
            result.append(table_from_thrift(t, stats))
        result.sort(key=lambda t: t.name)
        return result

    def _fetch_tables(self, names: list[str]) -> list[hms.Table]:
        def by_req(c: Any) -> list[hms.Table]:
            return list(c.get_table_objects_by_name_req(
                hms.GetTablesRequest(dbName=self.source_db, tblNames=names)).tables or [])

        def by_names(c: Any) -> list[hms.Table]:
            return list(c.get_table_objects_by_name(self.source_db, names) or [])

        def one_by_one(c: Any) -> list[hms.Table]:
            out = []
            for n in names:
                try:
                    out.append(c.get_table_req(hms.GetTableRequest(
                        dbName=self.source_db, tblName=n)).table)
                except hms.NoSuchObjectException:
                    continue
            return out

        return self._first_supported(
            "get tables",
            ("get_table_objects_by_name_req", by_req),
            ("get_table_objects_by_name", by_names),
            ("get_table_req", one_by_one),
        )

    def _table_stats(self, t: hms.Table) -> list[ColumnStatistics]:
        cols = [c.name for c in (t.sd.cols or [])] if t.sd else []
        if not cols:
            return []
        try:
            res = self._first_supported(
                "table statistics",
                ("get_table_statistics_req", lambda c: c.get_table_statistics_req(
                    hms.TableStatsRequest(dbName=t.dbName, tblName=t.tableName, colNames=cols))),
            )
        except (hms.NoSuchObjectException, UdbError):
            return []
        return [stats_from_thrift(o) for o in (res.tableStats or [])]

    def list_partitions(self, table: Table) -> list[Partition]:
        if not table.partition_keys:
            return []
        src_table = table.name
        try:
            parts: list[hms.Partition] = self._first_supported(
                "list partitions",
                ("get_partitions", lambda c: c.get_partitions(self.source_db, src_table, -1)),
                ("get_partitions_ps", lambda c: c.get_partitions_ps(
                    self.source_db, src_table, [], -1)),
            )
        except hms.NoSuchObjectException:
            return []
        stats: dict[str, list[ColumnStatistics]] = {}
        if self.with_stats and parts:
            stats = self._partition_stats(table, parts)
        keys = [k.name for k in table.partition_keys]
        out = []
        for p in parts:
            name = partition_name(keys, list(p.values or []))
            out.append(partition_from_thrift(p, stats.get(name, [])))
        return out

    def _partition_stats(self, table: Table, parts: list[hms.Partition]
                         ) -> dict[str, list[ColumnStatistics]]:
        cols = [c.name for c in table.sd.columns]
        keys = [k.name for k in table.partition_keys]
        names = [partition_name(keys, list(p.values or [])) for p in parts]
        out: dict[str, list[ColumnStatistics]] = {}
        for start in range(0, len(names), 1000):
            request = hms.PartitionsStatsRequest(dbName=self.source_db, tblName=table.name,
                                                 colNames=cols,
                                                 partNames=names[start:start + 1000])

            def fetch(c: Any, request: Any = request) -> Any:
                return c.get_partitions_statistics_req(request)

            try:
                res = self._first_supported("partition statistics",
                                            ("get_partitions_statistics_req", fetch))
            except (hms.NoSuchObjectException, UdbError):
                return out
            for name, objs in (res.partStats or {}).items():
                if objs:
                    out[name] = [stats_from_thrift(o) for o in objs]
        return out

    def fetch_all(self, names: Sequence[str]) -> Iterator[tuple[Table, list[Partition]]]:
        """Tables with their partitions, fetched on several pooled connections at once."""
        workers = self.pool_size
        batches = [list(names[i:i + _BATCH]) for i in range(0, len(names), _BATCH)]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hive-udb") as pool:
            for tables in pool.map(self.get_tables, batches):
                for t, parts in zip(tables, pool.map(self.list_partitions, tables)):
                    yield t, parts


# -- Thrift -> model -----------------------------------------------------------------------------


def database_from_thrift(db: hms.Database) -> Database:
    owner_type = getattr(db, "ownerType", None)
    return Database(
        name=db.name, description=db.description, location=db.locationUri,
        parameters=dict(db.parameters or {}), owner_name=db.ownerName,
        owner_type=_PRINCIPAL_TYPES.get(owner_type) if owner_type is not None else None)


# The converters build models with ``model_construct``: the Thrift structs are already typed, and
# attaching 100,000 partitions must not spend its time re-validating them. Column lists, serdes
# and skew infos repeat across the partitions of a table and are shared (the models are frozen).


@lru_cache(maxsize=4096)
def _column_list(key: tuple[tuple[str, str, str | None], ...]) -> list[Column]:
    return [Column.model_construct(name=n, type=t, comment=c) for n, t, c in key]


def _columns(cols: list[hms.FieldSchema] | None) -> list[Column]:
    return _column_list(tuple((c.name, c.type, c.comment) for c in (cols or [])))


@lru_cache(maxsize=1024)
def _serde(name: str | None, lib: str | None, params: tuple[tuple[str, str], ...]) -> SerDe:
    return SerDe.model_construct(name=name, serialization_lib=lib, parameters=dict(params))


_NO_SKEW = SkewedInfo()


def _skewed(skewed: hms.SkewedInfo | None) -> SkewedInfo:
    if skewed is None or not (skewed.skewedColNames or skewed.skewedColValues
                              or skewed.skewedColValueLocationMaps):
        return _NO_SKEW
    return SkewedInfo(
        column_names=list(skewed.skewedColNames or []),
        column_values=[list(v) for v in (skewed.skewedColValues or [])],
        location_map=[(list(k), v) for k, v in (skewed.skewedColValueLocationMaps or {}).items()])


def sd_from_thrift(sd: hms.StorageDescriptor | None) -> StorageDescriptor:
    if sd is None:
        return StorageDescriptor()
    serde = sd.serdeInfo
    return StorageDescriptor.model_construct(
        columns=_columns(sd.cols), location=sd.location, input_format=sd.inputFormat,
        output_format=sd.outputFormat, compressed=bool(sd.compressed),
        num_buckets=sd.numBuckets if sd.numBuckets is not None else -1,
        serde=_serde(serde.name, serde.serializationLib,
                     tuple(sorted((serde.parameters or {}).items()))) if serde else SerDe(),
        bucket_columns=list(sd.bucketCols or []),
        sort_columns=[SortColumn(column=o.col, order=o.order) for o in (sd.sortCols or [])],
        parameters=dict(sd.parameters or {}), skewed=_skewed(sd.skewedInfo),
        stored_as_sub_directories=bool(sd.storedAsSubDirectories))


def table_from_thrift(t: hms.Table, stats: list[ColumnStatistics] | None = None) -> Table:
    owner_type = getattr(t, "ownerType", None)
    return Table(
        db_name=t.dbName, name=t.tableName, table_type=t.tableType or "MANAGED_TABLE",
        owner=t.owner,
        owner_type=_PRINCIPAL_TYPES.get(owner_type) if owner_type is not None else None,
        create_time=t.createTime or 0, last_access_time=t.lastAccessTime or 0,
        retention=t.retention or 0, sd=sd_from_thrift(t.sd),
        partition_keys=_columns(t.partitionKeys), parameters=dict(t.parameters or {}),
        view_original_text=t.viewOriginalText, view_expanded_text=t.viewExpandedText,
        temporary=bool(t.temporary), rewrite_enabled=bool(t.rewriteEnabled),
        column_stats=stats or [])


def partition_from_thrift(p: hms.Partition, stats: list[ColumnStatistics] | None = None
                          ) -> Partition:
    return Partition.model_construct(
        values=list(p.values or []), db_name=p.dbName, table_name=p.tableName,
        create_time=p.createTime or 0, last_access_time=p.lastAccessTime or 0,
        sd=sd_from_thrift(p.sd), parameters=dict(p.parameters or {}),
        column_stats=stats or [])


def _plain(value: Any) -> Any:
    """A Thrift struct's field value as JSON-able data (bytes as base64)."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if hasattr(value, "thrift_spec"):
        return {spec[2]: _plain(getattr(value, spec[2])) for spec in value.thrift_spec
                if spec is not None and getattr(value, spec[2]) is not None}
    return value


def stats_from_thrift(obj: hms.ColumnStatisticsObj) -> ColumnStatistics:
    data = obj.statsData
    for kind in _STATS_KINDS:
        member = getattr(data, f"{kind}Stats", None)
        if member is not None:
            return ColumnStatistics(column=obj.colName, type=obj.colType, kind=kind,
                                    data=_plain(member))
    return ColumnStatistics(column=obj.colName, type=obj.colType, kind="none")
