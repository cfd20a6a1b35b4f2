"""Catalog models -> HMS Thrift structs, fully populated (engines check every field)."""

from __future__ import annotations

import base64
from typing import Any

from hmsclient.genthrift.hive_metastore import ttypes as hms
from thrift.Thrift import TType

from catalog.models import (
    Column,
    ColumnStatistics,
    Database,
    Partition,
    StorageDescriptor,
    Table,
)

_PRINCIPAL = hms.PrincipalType._NAMES_TO_VALUES
_STATS_CLASSES: dict[str, Any] = {
    "boolean": hms.BooleanColumnStatsData,
    "long": hms.LongColumnStatsData,
    "double": hms.DoubleColumnStatsData,
    "string": hms.StringColumnStatsData,
    "binary": hms.BinaryColumnStatsData,
    "decimal": hms.DecimalColumnStatsData,
    "date": hms.DateColumnStatsData,
}


def _fields(cols: list[Column]) -> list[hms.FieldSchema]:
    return [hms.FieldSchema(name=c.name, type=c.type, comment=c.comment) for c in cols]


def database_to_thrift(db: Database) -> hms.Database:
    return hms.Database(
        name=db.name, description=db.description, locationUri=db.location or "",
        parameters=dict(db.parameters), ownerName=db.owner_name,
        ownerType=_PRINCIPAL.get(db.owner_type) if db.owner_type else None)


def sd_to_thrift(sd: StorageDescriptor) -> hms.StorageDescriptor:
    sk = sd.skewed
    return hms.StorageDescriptor(
        cols=_fields(sd.columns), location=sd.location, inputFormat=sd.input_format,
        outputFormat=sd.output_format, compressed=sd.compressed, numBuckets=sd.num_buckets,
        serdeInfo=hms.SerDeInfo(name=sd.serde.name, serializationLib=sd.serde.serialization_lib,
                                parameters=dict(sd.serde.parameters)),
        bucketCols=list(sd.bucket_columns),
        sortCols=[hms.Order(col=s.column, order=s.order) for s in sd.sort_columns],
        parameters=dict(sd.parameters),
        skewedInfo=hms.SkewedInfo(
            skewedColNames=list(sk.column_names),
            skewedColValues=[list(v) for v in sk.column_values],
            skewedColValueLocationMaps={tuple(k): v for k, v in sk.location_map}),
        storedAsSubDirectories=sd.stored_as_sub_directories)


def table_to_thrift(t: Table) -> hms.Table:
    return hms.Table(
        tableName=t.name, dbName=t.db_name, owner=t.owner, createTime=t.create_time,
        lastAccessTime=t.last_access_time, retention=t.retention, sd=sd_to_thrift(t.sd),
        partitionKeys=_fields(t.partition_keys), parameters=dict(t.parameters),
        viewOriginalText=t.view_original_text, viewExpandedText=t.view_expanded_text,
        tableType=t.table_type, temporary=t.temporary, rewriteEnabled=t.rewrite_enabled)


def partition_to_thrift(p: Partition) -> hms.Partition:
    return hms.Partition(
        values=list(p.values), dbName=p.db_name, tableName=p.table_name,
        createTime=p.create_time, lastAccessTime=p.last_access_time, sd=sd_to_thrift(p.sd),
        parameters=dict(p.parameters))


def _from_plain(cls: Any, data: dict[str, Any]) -> Any:
    """Inverse of the UDB's plain form: build a Thrift struct from its field dict."""
    kwargs: dict[str, Any] = {}
    for spec in cls.thrift_spec:
        if spec is None or spec[2] not in data:
            continue
        _, ttype, name, type_args, _ = spec
        value = data[name]
        if ttype == TType.STRUCT:
            value = _from_plain(type_args[0], value)
        elif ttype == TType.STRING and type_args == "BINARY" and isinstance(value, str):
            value = base64.b64decode(value)
        kwargs[name] = value
    return cls(**kwargs)


def stats_to_thrift(s: ColumnStatistics) -> hms.ColumnStatisticsObj:
    data = hms.ColumnStatisticsData()
    cls = _STATS_CLASSES.get(s.kind)
    if cls is not None:
        setattr(data, f"{s.kind}Stats", _from_plain(cls, s.data))
    return hms.ColumnStatisticsObj(colName=s.column, colType=s.type, statsData=data)


def column_statistics_to_thrift(db: str, table: str, stats: list[ColumnStatistics],
                                partition_name: str | None = None,
                                last_analyzed: int | None = None) -> hms.ColumnStatistics:
    desc = hms.ColumnStatisticsDesc(isTblLevel=partition_name is None, dbName=db,
                                    tableName=table, partName=partition_name,
                                    lastAnalyzed=last_analyzed)
    return hms.ColumnStatistics(statsDesc=desc, statsObj=[stats_to_thrift(s) for s in stats])
