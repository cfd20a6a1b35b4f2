"""The UDB contract (tests/support/udb_contract.py) on the implementations that need real servers:
``directory`` on a real S3 server (moto, reached through a mount's credentials) and ``hive``
against a real Hive Metastore 2.3."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from catalog.config import Settings
from catalog.fs.namespace import Namespace
from catalog.udb import load_udb
from catalog.udb.directory import DirectoryUdb
from tests.support.hms import HiveMetastore
from tests.support.s3 import MotoS3Server
from tests.support.source_tables import SourceDatabase
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


def s3_case(server: MotoS3Server, bucket: str, via_namespace_path: bool) -> UdbCase:
    client = server.client()
    for rel, data in lake_files().items():
        client.put_object(Bucket=bucket, Key=f"lake/{rel}", Body=data)
    fs = Namespace()
    fs.mount("/lake", f"s3://{bucket}/lake", server.options())
    uri = "strata:///lake" if via_namespace_path else f"s3://{bucket}/lake"
    prefix = f"s3://{bucket}/"

    def change(location: str) -> None:
        key = location[len(prefix):] + "/contract-added.parquet"
        client.put_object(Bucket=bucket, Key=key, Body=events_parquet(1000))

    def drop(name: str) -> None:
        listed = client.list_objects_v2(Bucket=bucket, Prefix=f"lake/{LAKE_DB}/{name}/")
        for obj in listed.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=obj["Key"])

    return UdbCase(
        name="directory-s3" + ("-ns" if via_namespace_path else ""),
        open_db=lambda db: DirectoryUdb(uri, db, {}, None, fs=fs),
        source_db=LAKE_DB, database_name=LAKE_DB, tables=LAKE_TABLES,
        plain_table="customers", partitioned_table="events",
        partition_keys=LAKE_PARTITION_KEYS, partitions=LAKE_PARTITIONS, options=LAKE_OPTIONS,
        change_data=change, drop_table=drop)


def hms_case(hms: HiveMetastore, source: SourceDatabase, tmp_path: Path,
             added: list[Path]) -> UdbCase:
    settings = Settings(data_dir=tmp_path / "state")

    def change(location: str) -> None:
        # An empty file adds no rows to the shared TEXTFILE table; removed after the test.
        path = local_path(location) / "zz-contract-added"
        path.write_bytes(b"")
        added.append(path)

    return UdbCase(
        name="hive-on-hms",
        open_db=lambda db: load_udb("hive", hms.uri, db, {}, settings),
        source_db=source.db, database_name=source.db,
        tables=tuple(sorted(source.tables + source.views)),
        plain_table="items_parquet", partitioned_table="sales_part",
        partition_keys=("year", "region"), partitions=source.partitions,
        options=frozenset({"stats"}), view=source.views[0], change_data=change)


@pytest.fixture(params=["directory-s3", "directory-s3-ns", "hive-on-hms"])
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[UdbCase]:
    added: list[Path] = []
    if request.param.startswith("directory-s3"):
        built = s3_case(request.getfixturevalue("s3_server"),
                        request.getfixturevalue("s3_bucket"),
                        via_namespace_path=request.param.endswith("-ns"))
    else:
        built = hms_case(request.getfixturevalue("hms"), request.getfixturevalue("source_db"),
                         tmp_path, added)
    try:
        yield built
    finally:
        built.close_all()
        for path in added:
            path.unlink(missing_ok=True)


class TestUdbContractIntegration(UdbContract):
    """Every check of the contract, on S3 and on a real HMS."""
