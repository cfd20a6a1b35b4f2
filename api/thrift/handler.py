"""The HMS Thrift method implementations over :class:`catalog.service.CatalogService`.

Each public method is named after the Thrift method it serves and takes that method's decoded
``*_args`` struct. It returns the success value: a Thrift object, or :class:`Encoded` bytes for
the hot paths whose answers are cached pre-serialised (tables and partitions).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from hmsclient.genthrift.hive_metastore import ttypes as hms
from thrift.protocol import fastbinary  # type: ignore[attr-defined]
from thrift.Thrift import TType

from api.thrift.cache import EncodedCache
from api.thrift.convert import (
    column_statistics_to_thrift,
    database_to_thrift,
    partition_to_thrift,
    stats_to_thrift,
    table_to_thrift,
)
from catalog.exceptions import (
    InvalidInputError,
    NoSuchDatabaseError,
    NoSuchPartitionError,
    NotFoundError,
)
from catalog.models import ColumnStatistics
from catalog.service import CatalogService
from catalog.serving import ClientView

SERVER_NAME = "Strata"
SERVER_VERSION = "2.3.10"


@dataclass(frozen=True, slots=True)
class Encoded:
    """A success value already in Thrift binary form: ``ttype`` and the value's bytes."""

    ttype: int
    payload: bytes


def encode_struct(obj: Any) -> bytes:
    return bytes(fastbinary.encode_binary(obj, [obj.__class__, obj.thrift_spec]))


def encoded_list(items: Sequence[bytes], elem_type: int = TType.STRUCT) -> Encoded:
    return Encoded(TType.LIST, struct.pack(">bi", elem_type, len(items)) + b"".join(items))


def _wrap_field(field_id: int, ttype: int, payload: bytes) -> bytes:
    """A one-field struct around an encoded value (e.g. GetTableResult{table})."""
    return struct.pack(">bh", ttype, field_id) + payload + b"\x00"


@lru_cache(maxsize=1024)
def hive_pattern(pattern: str | None) -> re.Pattern[str]:
    """Hive's name patterns: ``*`` is any run of characters, ``|`` separates alternatives.

    Case-insensitive, whole name. ``.`` is any one character (so ``.*`` is one or more, as in
    Hive, which turns ``*`` into ``.*`` of a regex); every other character is literal: client
    text is never compiled as a regex. The regex built is linear: the fixed-length pieces between
    runs are each taken at their leftmost fit by an atomic lazy group ``(?>.*?piece)`` — for
    fixed-length pieces the leftmost fit is as good as any, so nothing is ever backtracked into —
    and only the last run backtracks, over one piece: O(len(name) * len(pattern)).
    """
    if not pattern or pattern == "*":
        return re.compile(".*", re.S)
    parts = []
    for alt in pattern.split("|"):
        pieces: list[list[str]] = [[]]
        for c in alt.strip():
            if c == "*":
                if pieces[-1] or len(pieces) == 1:  # '**' is one run
                    pieces.append([])
            else:
                pieces[-1].append("." if c == "." else re.escape(c))
        first, *rest = ["".join(p) for p in pieces]
        if rest:
            *middle, last = rest
            first += "".join(f"(?>.*?{m})" for m in middle) + ".*" + last
        parts.append(f"(?:{first})")
    return re.compile("|".join(parts), re.I | re.S)


def _matching(names: Sequence[str], pattern: str | None) -> list[str]:
    rx = hive_pattern(pattern)
    return [n for n in names if rx.fullmatch(n)]


def _limit(items: list[Any], max_parts: int | None) -> list[Any]:
    return items if max_parts is None or max_parts < 0 else items[:max_parts]


_TABLE_FILTER = re.compile(
    r'^\s*hive_filter_field_(owner|params|last_access)__(\w*)\s*(=|<>|!=)\s*["\']?(.*?)["\']?\s*$')


class HmsHandler:
    """Serves the read side of ThriftHiveMetastore (and fb303) from the catalog service."""

    def __init__(self, service: CatalogService, cache: EncodedCache,
                 view: ClientView = ClientView.VERBATIM) -> None:
        self.service = service
        self.cache = cache
        #: The client's spelling of locations; what is served is the core's decision.
        self.view = view

    # -- encoded building blocks -----------------------------------------------------------------

    def _table_bytes(self, db: str, name: str) -> bytes:
        rec = self.service.table_record(db, name)
        key = ("t", self.view.value, rec.id, rec.version)
        data = self.cache.get(key)
        if data is None:
            data = encode_struct(table_to_thrift(self.service.served_table(db, name, self.view)))
            self.cache.put(key, data)
        return data

    def _partition_bytes(self, db: str, table: str, names: Sequence[str]) -> list[bytes]:
        rec = self.service.table_record(db, table)
        out: dict[str, bytes] = {}
        missing = []
        view = self.view.value
        cached = self.cache.get_many([("p", view, rec.id, rec.version, n) for n in names])
        for n, data in zip(names, cached):
            if data is None:
                missing.append(n)
            else:
                out[n] = data
        if missing:
            for n, p in self.service.served_partitions(db, table, missing, self.view):
                data = encode_struct(partition_to_thrift(p))
                self.cache.put(("p", view, rec.id, rec.version, n), data)
                out[n] = data
        return [out[n] for n in names if n in out]

    def _partitions(self, db: str, table: str, names: Sequence[str]) -> Encoded:
        return encoded_list(self._partition_bytes(db, table, names))

    # -- databases -------------------------------------------------------------------------------

    def get_all_databases(self, a: Any) -> list[str]:
        return self.service.served_database_names()

    def get_databases(self, a: Any) -> list[str]:
        return _matching(self.service.served_database_names(), a.pattern)

    def get_database(self, a: Any) -> hms.Database:
        return database_to_thrift(self.service.served_database(a.name or "", self.view))

    # -- tables ----------------------------------------------------------------------------------

    # Like the HMS, listing the tables of an unknown database answers an empty list.

    def _table_names(self, db: str) -> list[str]:
        try:
            return self.service.list_tables(db)
        except NoSuchDatabaseError:
            return []

    def get_all_tables(self, a: Any) -> list[str]:
        return self._table_names(a.db_name)

    def get_tables(self, a: Any) -> list[str]:
        return _matching(self._table_names(a.db_name), a.pattern)

    def get_tables_by_type(self, a: Any) -> list[str]:
        try:
            recs = self.service.table_records(a.db_name)
        except NoSuchDatabaseError:
            return []
        rx = hive_pattern(a.pattern)
        return [r.name for r in recs
                if rx.fullmatch(r.name) and (not a.tableType or r.table.table_type == a.tableType)]

    def get_table_meta(self, a: Any) -> Encoded:
        types = tuple(sorted(a.tbl_types or []))
        key = ("meta", self.service.generation, a.db_patterns, a.tbl_patterns, types)
        cached = self.cache.get(key)
        if cached is not None:
            return Encoded(TType.LIST, cached)
        rx = hive_pattern(a.tbl_patterns)
        items = []
        for db in _matching(self.service.list_databases(), a.db_patterns):
            for r in self.service.table_records(db):
                if rx.fullmatch(r.name) and (not types or r.table.table_type in types):
                    items.append(encode_struct(hms.TableMeta(
                        dbName=db, tableName=r.name, tableType=r.table.table_type,
                        comments=r.table.parameters.get("comment"))))
        answer = encoded_list(items)
        self.cache.put(key, answer.payload)
        return answer

    def get_table(self, a: Any) -> Encoded:
        return Encoded(TType.STRUCT, self._table_bytes(a.dbname, a.tbl_name))

    def get_table_req(self, a: Any) -> Encoded:
        req = a.req
        table = self._table_bytes(req.dbName, req.tblName)
        return Encoded(TType.STRUCT, _wrap_field(1, TType.STRUCT, table))

    def _tables_by_name(self, db: str, names: Sequence[str] | None) -> list[bytes]:
        self.service.database_record(db)
        out = []
        for n in names or []:
            try:
                out.append(self._table_bytes(db, n))
            except NotFoundError:
                continue
        return out

    def get_table_objects_by_name(self, a: Any) -> Encoded:
        return encoded_list(self._tables_by_name(a.dbname, a.tbl_names))

    def get_table_objects_by_name_req(self, a: Any) -> Encoded:
        req = a.req
        names = req.tblNames if req.tblNames is not None else self.service.list_tables(req.dbName)
        items = encoded_list(self._tables_by_name(req.dbName, names))
        return Encoded(TType.STRUCT, _wrap_field(1, TType.LIST, items.payload))

    def get_table_names_by_filter(self, a: Any) -> list[str]:
        recs = self.service.table_records(a.dbname)
        text = (a.filter or "").strip()
        if not text:
            return _limit([r.name for r in recs], a.max_tables)
        m = _TABLE_FILTER.match(text)
        if not m:
            raise InvalidInputError(
                f"unsupported table filter '{text}' (supported: hive_filter_field_owner__, "
                "hive_filter_field_params__<key>, hive_filter_field_last_access__ with = or <>)")
        field, key, op, value = m.groups()
        out = []
        for r in recs:
            t = r.table
            actual = (t.owner if field == "owner" else t.parameters.get(key) if field == "params"
                      else str(t.last_access_time))
            if (actual == value) == (op == "="):
                out.append(r.name)
        return _limit(out, a.max_tables)

    def get_fields(self, a: Any) -> list[hms.FieldSchema]:
        return table_to_thrift(self.service.get_table(a.db_name, a.table_name)).sd.cols

    get_fields_with_environment_context = get_fields

    def get_schema(self, a: Any) -> list[hms.FieldSchema]:
        t = table_to_thrift(self.service.get_table(a.db_name, a.table_name))
        return list(t.sd.cols) + list(t.partitionKeys)

    get_schema_with_environment_context = get_schema

    # -- partitions ------------------------------------------------------------------------------

    def get_partition_names(self, a: Any) -> list[str]:
        return _limit(self.service.partition_names(a.db_name, a.tbl_name), a.max_parts)

    def get_partition_names_ps(self, a: Any) -> list[str]:
        return self.service.select_partition_names(a.db_name, a.tbl_name, values=a.part_vals,
                                                   max_parts=a.max_parts)

    def get_partitions(self, a: Any) -> Encoded:
        names = _limit(self.service.partition_names(a.db_name, a.tbl_name), a.max_parts)
        return self._partitions(a.db_name, a.tbl_name, names)

    get_partitions_with_auth = get_partitions

    def get_partitions_ps(self, a: Any) -> Encoded:
        names = self.service.select_partition_names(a.db_name, a.tbl_name, values=a.part_vals,
                                                    max_parts=a.max_parts)
        return self._partitions(a.db_name, a.tbl_name, names)

    get_partitions_ps_with_auth = get_partitions_ps

    def get_partitions_by_names(self, a: Any) -> Encoded:
        return self._partitions(a.db_name, a.tbl_name, a.names or [])

    def get_partitions_by_filter(self, a: Any) -> Encoded:
        names = self.service.select_partition_names(a.db_name, a.tbl_name, filter_text=a.filter,
                                                    max_parts=a.max_parts)
        return self._partitions(a.db_name, a.tbl_name, names)

    def get_num_partitions_by_filter(self, a: Any) -> int:
        return len(self.service.select_partition_names(a.db_name, a.tbl_name,
                                                       filter_text=a.filter))

    def _one_partition(self, db: str, table: str, name: str) -> Encoded:
        found = self._partition_bytes(db, table, [name])
        if not found:
            raise NoSuchPartitionError(db, table, name)
        return Encoded(TType.STRUCT, found[0])

    def get_partition(self, a: Any) -> Encoded:
        name = self.service.partition_name_of(a.db_name, a.tbl_name, a.part_vals or [])
        return self._one_partition(a.db_name, a.tbl_name, name)

    get_partition_with_auth = get_partition

    def get_partition_by_name(self, a: Any) -> Encoded:
        return self._one_partition(a.db_name, a.tbl_name, a.part_name)

    # -- statistics ------------------------------------------------------------------------------

    @staticmethod
    def _pick(stats: list[ColumnStatistics], columns: Sequence[str] | None
              ) -> list[ColumnStatistics]:
        if columns is None:
            return list(stats)
        wanted = {c.lower() for c in columns}
        return [s for s in stats if s.column.lower() in wanted]

    def get_table_statistics_req(self, a: Any) -> hms.TableStatsResult:
        r = a.request
        t = self.service.served_table(r.dbName, r.tblName)
        return hms.TableStatsResult(
            tableStats=[stats_to_thrift(s) for s in self._pick(t.column_stats, r.colNames)])

    def get_partitions_statistics_req(self, a: Any) -> hms.PartitionsStatsResult:
        r = a.request
        parts = self.service.served_partitions(r.dbName, r.tblName, r.partNames or [])
        result: dict[str, list[hms.ColumnStatisticsObj]] = {}
        for name, p in parts:
            picked = self._pick(p.column_stats, r.colNames)
            if picked:
                result[name] = [stats_to_thrift(s) for s in picked]
        return hms.PartitionsStatsResult(partStats=result)

    def get_table_column_statistics(self, a: Any) -> hms.ColumnStatistics:
        t = self.service.served_table(a.db_name, a.tbl_name)
        picked = self._pick(t.column_stats, [a.col_name])
        if not picked:
            raise NotFoundError(f"no statistics for column '{a.col_name}' of table "
                                f"'{a.db_name}.{a.tbl_name}'")
        return column_statistics_to_thrift(t.db_name, t.name, picked)

    def get_partition_column_statistics(self, a: Any) -> hms.ColumnStatistics:
        found = self.service.served_partitions(a.db_name, a.tbl_name, [a.part_name])
        if not found:
            raise NoSuchPartitionError(a.db_name, a.tbl_name, a.part_name)
        p = found[0][1]
        picked = self._pick(p.column_stats, [a.col_name])
        if not picked:
            raise NotFoundError(f"no statistics for column '{a.col_name}' of partition "
                                f"'{a.part_name}' of '{a.db_name}.{a.tbl_name}'")
        return column_statistics_to_thrift(p.db_name, p.table_name, picked, a.part_name)

    # -- functions, constraints, security, misc --------------------------------------------------

    def get_all_functions(self, a: Any) -> hms.GetAllFunctionsResponse:
        return hms.GetAllFunctionsResponse(functions=[])

    def get_functions(self, a: Any) -> list[str]:
        return []

    def get_function(self, a: Any) -> hms.Function:
        raise NotFoundError(f"function '{a.dbName}.{a.funcName}' does not exist")

    def get_primary_keys(self, a: Any) -> hms.PrimaryKeysResponse:
        self.service.get_table(a.request.db_name, a.request.tbl_name)
        return hms.PrimaryKeysResponse(primaryKeys=[])

    def get_foreign_keys(self, a: Any) -> hms.ForeignKeysResponse:
        return hms.ForeignKeysResponse(foreignKeys=[])

    def get_config_value(self, a: Any) -> str:
        return str(a.defaultValue) if a.defaultValue is not None else ""

    def set_ugi(self, a: Any) -> list[str]:
        return list(a.group_names or [])

    def get_role_names(self, a: Any) -> list[str]:
        return []

    def list_roles(self, a: Any) -> list[hms.Role]:
        return []

    def get_principals_in_role(self, a: Any) -> hms.GetPrincipalsInRoleResponse:
        return hms.GetPrincipalsInRoleResponse(principalGrants=[])

    def get_role_grants_for_principal(self, a: Any) -> hms.GetRoleGrantsForPrincipalResponse:
        return hms.GetRoleGrantsForPrincipalResponse(principalGrants=[])

    def get_privilege_set(self, a: Any) -> hms.PrincipalPrivilegeSet:
        return hms.PrincipalPrivilegeSet(userPrivileges={}, groupPrivileges={}, rolePrivileges={})

    def list_privileges(self, a: Any) -> list[hms.HiveObjectPrivilege]:
        return []

    def get_current_notificationEventId(self, a: Any) -> hms.CurrentNotificationEventId:
        return hms.CurrentNotificationEventId(eventId=0)

    # fb303
    def getName(self, a: Any) -> str:
        return SERVER_NAME

    def getVersion(self, a: Any) -> str:
        return SERVER_VERSION

    def getStatus(self, a: Any) -> int:
        return 2  # fb_status.ALIVE

    def getStatusDetails(self, a: Any) -> str:
        return "serving"

    def aliveSince(self, a: Any) -> int:
        return 0

    def getCounters(self, a: Any) -> dict[str, int]:
        return {}

    def shutdown(self, a: Any) -> None:
        """fb303 ``shutdown`` is what clients send on close: a no-op here."""
        return None


def served_methods(handler: HmsHandler) -> dict[str, Callable[[Any], Any]]:
    """Thrift method name -> bound implementation."""
    return {name: getattr(handler, name) for name in dir(handler)
            if not name.startswith("_") and name not in ("service", "cache", "view")
            and callable(getattr(handler, name))}
