"""The UDB contract over the implementations that need real servers.

Cases: ``directory`` on S3 (moto's S3 server on loopback, reached through a namespace mount,
by ``strata:///lake`` and by its ``s3://`` URI) and ``hive`` against a real Hive Metastore 2.3
holding the Spark-built source database (``tests/support/source_tables.py``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from catalog.config import Settings
from catalog.fs.namespace import Namespace
from catalog.udb import load_udb
from catalog.udb.base import UnderDatabase
from catalog.udb.directory import DirectoryUdb
from tests.support.hms import HiveMetastore
from tests.support.s3 import MotoS3Server
from tests.support.source_tables import (
    BIG_ORDERS,
    ORDERS_TEXT,
    SALES_PART,
    SourceDatabase,
)
from tests.support.udb_contract import (
    LAKE_DB,
    LAKE_OPTIONS,
    LAKE_PARTITION_KEYS,
    LAKE_PARTITIONS,
    LAKE_TABLES,
    UdbCase,
    UdbContract,
    events_parquet,
    lake_files,
    local_path,
)

pytestmark = pytest.mark.integration

#: Columns of ``orders_text`` with HMS column statistics (written by source_tables).
ORDERS_STATS_COLUMNS = ("order_id", "customer_id", "amount", "order_date", "note")


def s3_case(name: str, server: MotoS3Server, bucket: str, tmp_path: Path,
            by_namespace_path: bool) -> UdbCase:
    client = server.client()
    for rel, data in lake_files().items():
        client.put_object(Bucket=bucket, Key=f"lake/{rel}", Body=data)
    ns = Namespace()
    ns.mount("/lake", f"s3://{bucket}/lake", server.options())
    uri = "strata:///lake" if by_namespace_path else f"s3://{bucket}/lake"
    settings = Settings(data_dir=tmp_path / "state")
    prefix = f"s3://{bucket}/"

    def key_of(location: str) -> str:
        assert location.startswith(prefix), location
        return location[len(prefix):].rstrip("/")

    def add_object(location: str) -> None:
        client.put_object(Bucket=bucket, Key=f"{key_of(location)}/contract-added.parquet",
                          Body=events_parquet(1000))

    def drop(table: str) -> None:
        listed = client.list_objects_v2(Bucket=bucket, Prefix=f"lake/{LAKE_DB}/{table}/")
        keys = [{"Key": o["Key"]} for o in listed.get("Contents", [])]
        assert keys
        client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})

    def open_db(db: str) -> UnderDatabase:
        if by_namespace_path:  # through the loader, as the service opens it
            return load_udb("directory", uri, db, {}, settings, fs=ns)
        return DirectoryUdb(uri, db, {}, None, fs=ns)  # directly, without settings

    return UdbCase(
        name=name,
        open_db=open_db,
        source_db=LAKE_DB, database_name=LAKE_DB, tables=LAKE_TABLES,
        plain_table="customers", partitioned_table="events",
        partition_keys=LAKE_PARTITION_KEYS, partitions=LAKE_PARTITIONS, options=LAKE_OPTIONS,
        change_data=add_object, drop_table=drop)


def hms_case(hms: HiveMetastore, source: SourceDatabase, tmp_path: Path,
             added: list[Path]) -> UdbCase:
    settings = Settings(data_dir=tmp_path / "state", udb_timeout_s=30, udb_retries=1)

    def add_empty_file(location: str) -> None:
        # Empty, so no query of the shared source tables sees a row more; removed afterwards.
        path = local_path(location) / f"contract-{uuid.uuid4().hex[:8]}.txt"
        assert path.parent.is_dir(), path
        path.write_bytes(b"")
        added.append(path)

    return UdbCase(
        name="hive-hms23",
        open_db=lambda db: load_udb("hive", hms.uri, db, {}, settings),
        source_db=source.db, database_name=source.db,
        tables=tuple(sorted(source.tables + source.views)),
        plain_table=ORDERS_TEXT, partitioned_table=SALES_PART,
        partition_keys=("year", "region"), partitions=source.partitions,
        options=frozenset({"stats"}), view=BIG_ORDERS,
        stats_table=ORDERS_TEXT, stats_columns=ORDERS_STATS_COLUMNS,
        change_data=add_empty_file,
        drop_table=None)  # the HMS source is shared by the session; never dropped from


@pytest.fixture(params=["directory-s3-namespace-path", "directory-s3-uri", "hive-hms23"])
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[UdbCase]:
    added: list[Path] = []
    built: UdbCase
    if request.param == "hive-hms23":
        built = hms_case(request.getfixturevalue("hms"), request.getfixturevalue("source_db"),
                         tmp_path, added)
    else:
        built = s3_case(request.param, request.getfixturevalue("s3_server"),
                        request.getfixturevalue("s3_bucket"), tmp_path,
                        by_namespace_path=request.param == "directory-s3-namespace-path")
    try:
        yield built
    finally:
        built.close_all()
        for path in added:
            path.unlink(missing_ok=True)


class TestUdbContractIntegration(UdbContract):
    """Every check of the contract, on each case backed by a real server."""


def test_s3_lake_locations_are_s3_uris_either_way(s3_server: MotoS3Server, s3_bucket: str,
                                                  tmp_path: Path) -> None:
    """Both URI spellings of the mounted lake serve the same tables at the same s3:// URIs."""
    cases = [s3_case("a", s3_server, s3_bucket, tmp_path, by_namespace_path=True),
             s3_case("b", s3_server, s3_bucket, tmp_path, by_namespace_path=False)]
    try:
        read = [{t.name: (t, parts) for t, parts in c.open().fetch_all(list(LAKE_TABLES))}
                for c in cases]
        assert read[0] == read[1]
        customers = read[0]["customers"][0]
        assert customers.sd.location == f"s3://{s3_bucket}/lake/{LAKE_DB}/customers"
        assert isinstance(cases[0].opened[0], DirectoryUdb)
    finally:
        for c in cases:
            c.close_all()
