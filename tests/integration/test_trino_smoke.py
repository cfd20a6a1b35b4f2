"""A real Trino 476 straight on a real Hive Metastore 2.3, without Strata.

Pins the Trino behaviour Strata's Trino listener works around, and records which metastore
methods Trino calls per statement. Reading through Strata is test_trino_strata.py's job.

The session ``hms`` fixture gets a database ``trino_smoke`` (filled by
:func:`populate_via_thrift`; it stays: HMS 2.3 on pyspark's jars fails ``drop_database``, its
ACID listener wants BoneCP) that one Trino sees through two catalogs generated from the shipped
``trino-plugin-config/hive.properties``:

* ``hms_direct`` goes straight to the HMS: locations as HMS stores them (``file:/p``);
* ``hms_local`` goes through a :class:`ThriftTap` that records every call and rewrites
  ``file:/p`` to ``local:///p`` in replies (and back in requests): the same metadata with only
  the location scheme changed, which is what ``ClientView.TRINO`` does in Strata.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from api.thrift.handler import HmsHandler
from tests.support.hms import HiveMetastore
from tests.support.hms_populate import ORDERS_COLUMNS, ORDERS_ROWS, PARTITIONS, populate_via_thrift
from tests.support.thrift_tap import ThriftTap
from tests.support.trino import TrinoServer, trino_test_marks

pytestmark = trino_test_marks()

DIRECT = "hms_direct"
LOCAL = "hms_local"
SCHEMA = "trino_smoke"


def to_trino_location(value: str) -> str:
    """``file:/p`` / ``file:///p`` -> ``local:///p``."""
    return "local:///" + value[len("file:"):].lstrip("/") if value.startswith("file:/") else value


def to_hms_location(value: str) -> str:
    """``local:///p`` -> ``file:///p`` (HMS 2.3's Hadoop has no ``local`` file system)."""
    return "file:///" + value[len("local:///"):] if value.startswith("local:///") else value


@dataclass
class Env:
    trino: TrinoServer
    tap: ThriftTap
    data: Path
    work: Path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, hms: HiveMetastore) -> Iterator[Env]:
    work = tmp_path_factory.mktemp("trino-smoke")
    data = work / "data"
    populate_via_thrift(hms.uri, data, db=SCHEMA)
    with (
        ThriftTap("127.0.0.1", hms.port, rewrite_request=to_hms_location,
                  rewrite_reply=to_trino_location) as tap,
        TrinoServer(work / "trino", {DIRECT: hms.uri,
                                     LOCAL: f"thrift://127.0.0.1:{tap.port}"}) as trino,
    ):
        print(f"\nTrino {trino.url} up in {trino.startup_seconds:.1f}s (pid {trino.pid})")
        yield Env(trino, tap, data.resolve(), work)


def test_trino_runs_on_loopback(env: Env) -> None:
    rows = env.trino.query("SELECT http_uri, node_version, coordinator FROM system.runtime.nodes")
    assert rows == [(env.trino.url, "476", True)]


def test_trino_476_local_fs_reads_file_locations_as_empty(env: Env) -> None:
    """Tables whose location is ``file:...`` resolve but read as EMPTY in Trino 476.

    Its native local file system lists files as ``local:///...`` and the Hive connector drops
    every listed file whose parent is not textually the table location. If this starts
    failing, Trino fixed it and Strata's Trino listener (``ClientView.TRINO``) is moot.
    """
    q = env.trino.query
    ddl = q(f"SHOW CREATE TABLE {DIRECT}.{SCHEMA}.orders_text")[0][0]
    assert f"external_location = 'file:{env.data}/orders_text'" in ddl
    assert len(q(f"DESCRIBE {DIRECT}.{SCHEMA}.orders_text")) == len(ORDERS_COLUMNS)
    assert q(f"SELECT count(*) FROM {DIRECT}.{SCHEMA}.orders_text") == [(0,)]
    assert q(f"SELECT count(*) FROM {DIRECT}.{SCHEMA}.sales_part WHERE year = 2024") == [(0,)]

    # The same metadata with local:/// locations reads every row.
    assert q(f"SELECT count(*) FROM {LOCAL}.{SCHEMA}.orders_text") == [(len(ORDERS_ROWS),)]
    paths = q(f'SELECT DISTINCT "$path" FROM {LOCAL}.{SCHEMA}.sales_part WHERE year = 2024')
    assert sorted(p for (p,) in paths) == sorted(
        f"local://{env.data}/sales_part/year={y}/region={r}/part-0.csv"
        for y, r in PARTITIONS if y == 2024)


# Statements whose metastore traffic is recorded (Trino's metastore cache flushed before each).
TAPPED_STATEMENTS = {
    "SHOW SCHEMAS": f"SHOW SCHEMAS FROM {LOCAL}",
    "SHOW TABLES": f"SHOW TABLES FROM {LOCAL}.{SCHEMA}",
    "DESCRIBE": f"DESCRIBE {LOCAL}.{SCHEMA}.orders_text",
    "SHOW CREATE TABLE": f"SHOW CREATE TABLE {LOCAL}.{SCHEMA}.orders_text",
    "SHOW STATS": f"SHOW STATS FOR {LOCAL}.{SCHEMA}.orders_text",
    "SELECT unpartitioned": f"SELECT * FROM {LOCAL}.{SCHEMA}.orders_text",
    "SELECT partitioned, partition filter":
        f"SELECT * FROM {LOCAL}.{SCHEMA}.sales_part WHERE year = 2024 AND region = 'eu'",
    "SELECT partitioned, no filter": f"SELECT * FROM {LOCAL}.{SCHEMA}.sales_part",
    "SHOW STATS partitioned": f"SHOW STATS FOR {LOCAL}.{SCHEMA}.sales_part",
    "SELECT hive view": f"SELECT * FROM {LOCAL}.{SCHEMA}.big_orders",
    "information_schema.columns": f"SELECT table_name, column_name FROM "
                                  f"{LOCAL}.information_schema.columns "
                                  f"WHERE table_schema = '{SCHEMA}'",
}


def test_metastore_calls_per_statement_are_all_served_by_strata(env: Env) -> None:
    """Which HMS methods Trino 476 calls per statement against a real HMS (cold cache).

    Against the real HMS every call succeeds, so Trino never falls back to another method:
    this is the list Strata must serve, and each of them is a method of Strata's handler.
    """
    report: dict[str, list[dict[str, object]]] = {}
    for label, sql in TAPPED_STATEMENTS.items():
        env.trino.query(f"CALL {LOCAL}.system.flush_metadata_cache()")
        mark = env.tap.mark()
        env.trino.query(sql)
        time.sleep(0.2)  # let the tap's threads record the last replies
        report[label] = [{"method": r.name, "args": _jsonable(r.args), "reply": r.reply_type,
                          "failed": r.failed} for r in env.tap.records_since(mark)]
    out = env.work / "trino_metastore_calls.json"
    out.write_text(json.dumps(report, indent=1))
    print(f"\nmetastore calls per statement ({out}):")
    for label, calls in report.items():
        print(f"  {label}: {[c['method'] for c in calls]}")

    assert not env.tap.errors
    methods = {label: {str(c["method"]) for c in calls} for label, calls in report.items()}
    assert "get_all_databases" in methods["SHOW SCHEMAS"]
    assert "get_table_meta" in methods["SHOW TABLES"]
    assert "get_table_req" in methods["DESCRIBE"]
    assert "get_partitions_by_names" in methods["SELECT partitioned, partition filter"]
    assert "get_table_statistics_req" in methods["SHOW STATS"]
    assert "get_partitions_statistics_req" in methods["SHOW STATS partitioned"]
    assert [str(r) for r in env.tap.records if r.failed] == []
    served = {name for name in dir(HmsHandler) if not name.startswith("_")}
    called = set().union(*methods.values())
    assert called - served == set()


def _jsonable(value: object) -> object:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return value
