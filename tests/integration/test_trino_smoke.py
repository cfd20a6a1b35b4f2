"""End-to-end smoke test: a REAL Trino 476 reads tables through a REAL Hive Metastore 2.3.

Trino's Hive connector is configured from the shipped trino-plugin-config/hive.properties (only
the metastore URI substituted) and talks to the HMS through ThriftTaps, which record every
metastore method Trino calls per statement.

Two catalogs point at the same HMS:

* ``strata`` goes through a tap that translates table locations ``file:/p`` (what HMS 2.3 stores)
  into ``local:///p`` (and back for requests). Trino 476's native local file system lists files
  as ``local:///...`` and silently drops every file whose parent is not textually equal to the
  table/partition location, so ``file:`` tables read as EMPTY. Serving ``local:///`` locations to
  Trino is what Strata has to do for local-disk tables; this catalog emulates it.
* ``hms_direct`` goes straight (untranslated) to HMS and pins that Trino behaviour down.

Needs scripts/fetch_trino.sh (skipped with the reason otherwise), pyspark (its jars provide HMS
2.3) and a Java 17 for the HMS.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.thrift_tap import ThriftTap
from tests.support.trino import TrinoQueryError, TrinoServer, free_port, trino_available, trino_unavailable_reason

pytestmark = [
    pytest.mark.integration,
    pytest.mark.trino,
    pytest.mark.skipif(not trino_available(), reason=trino_unavailable_reason() or ""),
]

CATALOG = "strata"  # through the location-translating tap
DIRECT = "hms_direct"  # straight to HMS, locations as HMS stores them
SCHEMA = "smoke"


def file_location(path: Path) -> str:
    """A Hadoop-style ``file://`` location (not percent-encoded: HMS would keep ``%3D`` literally)."""
    return f"file://{path}"


def to_trino_location(value: str) -> str:
    """``file:/p`` / ``file:///p`` -> ``local:///p``: the form Trino 476's local file system can list."""
    return "local:///" + value[len("file:"):].lstrip("/") if value.startswith("file:/") else value


def to_hms_location(value: str) -> str:
    """``local:///p`` -> ``file:///p`` for HMS 2.3, whose Hadoop has no ``local`` file system."""
    return "file:///" + value[len("local:///"):] if value.startswith("local:///") else value


# --------------------------------------------------------------------------------------------
# A little HMS 2.3 of our own. This will switch to tests/support/hms.py once that lands.
# --------------------------------------------------------------------------------------------

# HMS 2.3 has no bind-address setting (it always binds the wildcard address). This LD_PRELOAD
# shim turns a wildcard bind() into a loopback bind so the test HMS listens on 127.0.0.1 only.
_BIND_LOOPBACK_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*real_bind)(int, const struct sockaddr *, socklen_t);
    if (!real_bind) real_bind = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "bind");
    if (addr && addr->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        struct sockaddr_in a; memcpy(&a, addr, sizeof a);
        if (a.sin_addr.s_addr == htonl(INADDR_ANY)) {
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            return real_bind(fd, (struct sockaddr *)&a, sizeof a);
        }
    } else if (addr && addr->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 a; memcpy(&a, addr, sizeof a);
        if (memcmp(&a.sin6_addr, &in6addr_any, sizeof a.sin6_addr) == 0) {
            static const unsigned char mapped[16] = {0,0,0,0,0,0,0,0,0,0,0xff,0xff,127,0,0,1};
            memcpy(&a.sin6_addr, mapped, 16);  /* ::ffff:127.0.0.1 on a dual-stack socket */
            return real_bind(fd, (struct sockaddr *)&a, sizeof a);
        }
    }
    return real_bind(fd, addr, len);
}
"""

_HIVE_SITE = """<?xml version="1.0"?>
<configuration>
  <property><name>javax.jdo.option.ConnectionURL</name><value>jdbc:derby:;databaseName={db};create=true</value></property>
  <property><name>datanucleus.schema.autoCreateAll</name><value>true</value></property>
  <property><name>hive.metastore.schema.verification</name><value>false</value></property>
  <property><name>hive.async.log.enabled</name><value>false</value></property>
  <property><name>hive.metastore.warehouse.dir</name><value>file://{warehouse}</value></property>
</configuration>
"""


def _pyspark_jars() -> Path | None:
    try:
        import pyspark
    except ImportError:
        return None
    jars = Path(pyspark.__file__).parent / "jars"
    return jars if any(jars.glob("hive-metastore-2.3*.jar")) else None


def _hms_java() -> str | None:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    return shutil.which("java")


def _bind_loopback_shim(work: Path) -> Path | None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    src, lib = work / "bind_loopback.c", work / "bind_loopback.so"
    src.write_text(_BIND_LOOPBACK_C)
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(lib), str(src), "-ldl"], check=True)
    return lib


@dataclass
class LocalHms:
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    warehouse: Path


def _launch_hms(work: Path) -> LocalHms:
    """Start HMS 2.3 on a free loopback port without waiting for it (see :func:`_wait_for_hms`)."""
    jars, java = _pyspark_jars(), _hms_java()
    if jars is None or java is None:
        pytest.skip("HMS 2.3 needs pyspark's jars and a java on PATH")
    conf = work / "conf"
    conf.mkdir(parents=True)
    warehouse = work / "warehouse"
    warehouse.mkdir()
    (conf / "hive-site.xml").write_text(_HIVE_SITE.format(db=work / "metastore_db", warehouse=warehouse))
    env = dict(os.environ)
    shim = _bind_loopback_shim(work)
    if shim is not None:
        env["LD_PRELOAD"] = str(shim)
    else:
        warnings.warn("no C compiler: the test HMS binds all interfaces", stacklevel=2)
    port = free_port()
    log_path = work / "hms.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [java, "-Xmx384m", f"-Dhive.log.dir={work}", "-Dhive.log.file=hive.log",
             "-cp", f"{conf}:{jars}/*", "org.apache.hadoop.hive.metastore.HiveMetaStore", "-p", str(port)],
            cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    return LocalHms(port, proc, log_path, warehouse)


def _wait_for_hms(hms: LocalHms, timeout: float = 180.0) -> None:
    """Block until the HMS answers get_all_databases."""
    from hmsclient import hmsclient

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if hms.proc.poll() is not None:
            raise RuntimeError(f"HMS exited with {hms.proc.returncode}: {hms.log_path.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", hms.port), timeout=1):
                pass
            with hmsclient.HMSClient(host="127.0.0.1", port=hms.port) as client:
                client.get_all_databases()
            return
        except Exception:
            time.sleep(0.5)
    raise TimeoutError(f"HMS did not come up in {timeout}s: {hms.log_path.read_text()[-3000:]}")


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@dataclass
class Env:
    trino: TrinoServer
    tap: ThriftTap
    direct_tap: ThriftTap
    hms: LocalHms
    data: Path


def _text_table(name: str, cols: list[tuple[str, str]], location: Path,
                partition_keys: list[tuple[str, str]] | None = None, params: dict[str, str] | None = None):
    from hmsclient.genthrift.hive_metastore import ttypes as t

    return t.Table(
        tableName=name, dbName=SCHEMA, owner="strata", tableType="EXTERNAL_TABLE",
        parameters={"EXTERNAL": "TRUE", **(params or {})},
        partitionKeys=[t.FieldSchema(n, ty, None) for n, ty in partition_keys or []],
        sd=_text_sd(cols, location),
    )


def _text_sd(cols: list[tuple[str, str]], location: Path):
    from hmsclient.genthrift.hive_metastore import ttypes as t

    return t.StorageDescriptor(
        cols=[t.FieldSchema(n, ty, None) for n, ty in cols],
        location=file_location(location),
        inputFormat="org.apache.hadoop.mapred.TextInputFormat",
        outputFormat="org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
        compressed=False, numBuckets=-1, bucketCols=[], sortCols=[], parameters={},
        serdeInfo=t.SerDeInfo(None, "org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe",
                              {"field.delim": ",", "serialization.format": ","}),
    )


def _create_metadata(hms: LocalHms, data: Path) -> None:
    """Database, plain table (with stats), partitioned table and a Hive view, via Thrift."""
    from hmsclient import hmsclient
    from hmsclient.genthrift.hive_metastore import ttypes as t

    people = data / "people"
    people.mkdir(parents=True)
    (people / "part-0.csv").write_text("1,alice,3.5\n2,bob,1.0\n3,carol,7.25\n")
    events = data / "events"
    for dt, rows in {"2024-01-01": "1,click\n2,view\n", "2024-01-02": "3,click\n"}.items():
        (events / f"dt={dt}").mkdir(parents=True)
        (events / f"dt={dt}" / "part-0.csv").write_text(rows)

    with hmsclient.HMSClient(host="127.0.0.1", port=hms.port) as c:
        c.create_database(t.Database(name=SCHEMA, description="smoke test",
                                     locationUri=file_location(data / "smoke.db"), parameters={}))
        c.create_table(_text_table("people", [("id", "int"), ("name", "string"), ("score", "double")],
                                   people, params={"numRows": "3", "totalSize": "35", "numFiles": "1"}))
        stats = t.ColumnStatistics(
            statsDesc=t.ColumnStatisticsDesc(isTblLevel=True, dbName=SCHEMA, tableName="people"),
            statsObj=[t.ColumnStatisticsObj("id", "int", t.ColumnStatisticsData(
                longStats=t.LongColumnStatsData(lowValue=1, highValue=3, numNulls=0, numDVs=3)))],
        )
        c.update_table_column_statistics(stats)
        c.create_table(_text_table("events", [("id", "int"), ("kind", "string")], events,
                                   partition_keys=[("dt", "string")]))
        c.add_partitions([
            t.Partition(values=[dt], dbName=SCHEMA, tableName="events", parameters={},
                        sd=_text_sd([("id", "int"), ("kind", "string")], events / f"dt={dt}"))
            for dt in ("2024-01-01", "2024-01-02")
        ])
        view_sql = "SELECT `people`.`id`, `people`.`name` FROM `smoke`.`people` WHERE `people`.`score` > 2"
        c.create_table(t.Table(
            tableName="high_scores", dbName=SCHEMA, owner="strata", tableType="VIRTUAL_VIEW",
            parameters={}, partitionKeys=[],
            viewOriginalText=view_sql, viewExpandedText=view_sql,
            sd=t.StorageDescriptor(cols=[t.FieldSchema("id", "int", None), t.FieldSchema("name", "string", None)],
                                   location=None, inputFormat=None, outputFormat=None, compressed=False,
                                   numBuckets=-1, bucketCols=[], sortCols=[], parameters={},
                                   serdeInfo=t.SerDeInfo(None, None, {})),
        ))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("trino_smoke")
    hms = _launch_hms(base / "hms")  # HMS and Trino start side by side; Trino connects lazily
    try:
        data = base / "data"
        with (
            ThriftTap("127.0.0.1", hms.port, rewrite_request=to_hms_location, rewrite_reply=to_trino_location) as tap,
            ThriftTap("127.0.0.1", hms.port) as direct_tap,
        ):
            catalogs = {CATALOG: f"thrift://127.0.0.1:{tap.port}", DIRECT: f"thrift://127.0.0.1:{direct_tap.port}"}
            with TrinoServer(base / "trino", catalogs) as trino:
                print(f"\nTrino {trino.url} started in {trino.startup_seconds:.1f}s (pid {trino.pid})")
                _wait_for_hms(hms)
                _create_metadata(hms, data)
                yield Env(trino, tap, direct_tap, hms, data)
    finally:
        _stop_process(hms.proc)


def _q(env: Env, sql: str) -> list[tuple]:
    return env.trino.query(sql)


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


def test_trino_runs_on_loopback(env: Env) -> None:
    rows = _q(env, "SELECT http_uri, node_version, coordinator FROM system.runtime.nodes")
    assert rows == [(env.trino.url, "476", True)]


def test_show_schemas_and_tables(env: Env) -> None:
    schemas = {r[0] for r in _q(env, f"SHOW SCHEMAS FROM {CATALOG}")}
    assert {"default", SCHEMA, "information_schema"} <= schemas
    tables = {r[0] for r in _q(env, f"SHOW TABLES FROM {CATALOG}.{SCHEMA}")}
    assert {"people", "events", "high_scores"} <= tables


def test_describe(env: Env) -> None:
    rows = _q(env, f"DESCRIBE {CATALOG}.{SCHEMA}.people")
    assert [(r[0], r[1]) for r in rows] == [("id", "integer"), ("name", "varchar"), ("score", "double")]
    rows = _q(env, f"DESCRIBE {CATALOG}.{SCHEMA}.events")
    assert [(r[0], r[1], r[2]) for r in rows][-1] == ("dt", "varchar", "partition key")


def test_select_unpartitioned(env: Env) -> None:
    rows = _q(env, f"SELECT id, name, score FROM {CATALOG}.{SCHEMA}.people ORDER BY id")
    assert rows == [(1, "alice", 3.5), (2, "bob", 1.0), (3, "carol", 7.25)]


def test_select_partitioned_with_partition_filter(env: Env) -> None:
    rows = _q(env, f"SELECT id, kind, dt FROM {CATALOG}.{SCHEMA}.events WHERE dt = '2024-01-01' ORDER BY id")
    assert rows == [(1, "click", "2024-01-01"), (2, "view", "2024-01-01")]
    assert _q(env, f"SELECT count(*) FROM {CATALOG}.{SCHEMA}.events") == [(3,)]


def test_hive_view(env: Env) -> None:
    rows = _q(env, f"SELECT id, name FROM {CATALOG}.{SCHEMA}.high_scores ORDER BY id")
    assert rows == [(1, "alice"), (3, "carol")]


def test_information_schema_columns(env: Env) -> None:
    rows = _q(env, f"SELECT table_name, column_name, data_type FROM {CATALOG}.information_schema.columns "
                   f"WHERE table_schema = '{SCHEMA}' AND table_name = 'people' ORDER BY ordinal_position")
    assert rows == [("people", "id", "integer"), ("people", "name", "varchar"), ("people", "score", "double")]


def test_show_create_table(env: Env) -> None:
    ddl = _q(env, f"SHOW CREATE TABLE {CATALOG}.{SCHEMA}.people")[0][0]
    assert "format = 'TEXTFILE'" in ddl
    assert f"external_location = 'local://{env.data / 'people'}'" in ddl


def test_show_stats(env: Env) -> None:
    rows = _q(env, f"SHOW STATS FOR {CATALOG}.{SCHEMA}.people")
    by_column = {r[0]: r for r in rows}
    assert by_column[None][4] == 3.0  # row_count from the table's numRows parameter
    assert by_column["id"][2] == 3.0  # distinct_values_count from the column statistics
    assert (by_column["id"][5], by_column["id"][6]) == ("1", "3")  # low / high


def test_create_external_table_through_trino(env: Env) -> None:
    location = env.data / "made_by_trino"
    location.mkdir()
    (location / "part-0.csv").write_text("10,x\n20,y\n")
    env.trino.query(
        f"CREATE TABLE {CATALOG}.{SCHEMA}.made_by_trino (id integer, tag varchar) "
        f"WITH (format = 'TEXTFILE', textfile_field_separator = ',', external_location = '{file_location(location)}')"
    )
    assert _q(env, f"SELECT sum(id) FROM {CATALOG}.{SCHEMA}.made_by_trino") == [(30,)]
    from hmsclient import hmsclient

    with hmsclient.HMSClient(host="127.0.0.1", port=env.hms.port) as c:
        table = c.get_table(SCHEMA, "made_by_trino")
    assert table.tableType == "EXTERNAL_TABLE"
    assert table.sd.location == f"file:{location}"  # HMS normalises file:///p to file:/p


def test_trino_476_local_fs_reads_file_locations_as_empty(env: Env) -> None:
    """Pins a Trino 476 limitation: tables whose location is ``file:...`` read as empty.

    The metadata is fine (the table resolves, DESCRIBE works); only the file listing is dropped.
    If this starts failing, Trino fixed it and Strata may serve ``file:`` locations unchanged.
    """
    assert len(_q(env, f"DESCRIBE {DIRECT}.{SCHEMA}.people")) == 3
    assert _q(env, f"SELECT count(*) FROM {DIRECT}.{SCHEMA}.people") == [(0,)]
    assert _q(env, f"SELECT count(*) FROM {CATALOG}.{SCHEMA}.people") == [(3,)]


def test_query_error_carries_trino_error(env: Env) -> None:
    with pytest.raises(TrinoQueryError) as info:
        env.trino.query(f"SELECT * FROM {CATALOG}.{SCHEMA}.no_such_table")
    assert info.value.error_name == "TABLE_NOT_FOUND"
    assert "no_such_table" in info.value.message


# Statements whose metastore traffic is recorded (cache flushed before each one).
TAPPED_STATEMENTS = {
    "SHOW SCHEMAS": f"SHOW SCHEMAS FROM {CATALOG}",
    "SHOW TABLES": f"SHOW TABLES FROM {CATALOG}.{SCHEMA}",
    "DESCRIBE": f"DESCRIBE {CATALOG}.{SCHEMA}.people",
    "SHOW CREATE TABLE": f"SHOW CREATE TABLE {CATALOG}.{SCHEMA}.people",
    "SHOW STATS": f"SHOW STATS FOR {CATALOG}.{SCHEMA}.people",
    "SELECT unpartitioned": f"SELECT * FROM {CATALOG}.{SCHEMA}.people",
    "SELECT partitioned, partition filter": f"SELECT * FROM {CATALOG}.{SCHEMA}.events WHERE dt = '2024-01-02'",
    "SELECT partitioned, no filter": f"SELECT * FROM {CATALOG}.{SCHEMA}.events",
    "SHOW STATS partitioned": f"SHOW STATS FOR {CATALOG}.{SCHEMA}.events",
    "SELECT hive view": f"SELECT * FROM {CATALOG}.{SCHEMA}.high_scores",
    "information_schema.columns": (f"SELECT table_name, column_name FROM {CATALOG}.information_schema.columns "
                                   f"WHERE table_schema = '{SCHEMA}'"),
}


def test_metastore_calls_per_statement(env: Env, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Record which HMS Thrift methods Trino 476 calls per statement (with a cold metastore cache)."""
    report: dict[str, list[dict[str, object]]] = {}
    for label, sql in TAPPED_STATEMENTS.items():
        env.trino.query(f"CALL {CATALOG}.system.flush_metadata_cache()")
        mark = env.tap.mark()
        env.trino.query(sql)
        time.sleep(0.2)  # let the tap's threads record the last replies
        report[label] = [
            {"method": r.name, "args": _jsonable(r.args), "reply": r.reply_type, "failed": r.failed}
            for r in env.tap.records_since(mark)
        ]
    # The same statement again right away: served from Trino's metastore cache (hive.metastore-cache-ttl).
    mark = env.tap.mark()
    env.trino.query(TAPPED_STATEMENTS["SELECT unpartitioned"])
    time.sleep(0.2)
    report["SELECT unpartitioned, warm cache"] = [
        {"method": r.name, "args": _jsonable(r.args), "reply": r.reply_type, "failed": r.failed}
        for r in env.tap.records_since(mark)
    ]
    all_methods = sorted(set(env.tap.calls) | set(env.direct_tap.calls))
    out = tmp_path_factory.getbasetemp() / "trino_metastore_calls.json"
    out.write_text(json.dumps({"per_statement": report, "all_methods_this_session": all_methods}, indent=1))
    print(f"\nmetastore calls per statement ({out}):")
    for label, calls in report.items():
        print(f"  {label}: {[c['method'] for c in calls]}")
    print(f"  all methods seen this session: {all_methods}")
    failed = [str(r) for r in [*env.tap.records, *env.direct_tap.records] if r.failed]
    print(f"  failed calls: {failed}")
    assert not env.tap.errors
    methods = {label: {c["method"] for c in calls} for label, calls in report.items()}
    assert "get_all_databases" in methods["SHOW SCHEMAS"]
    assert methods["SHOW TABLES"] & {"get_all_tables", "get_tables", "get_tables_by_type", "get_table_meta"}
    assert methods["SELECT partitioned, partition filter"] & {
        "get_partition_names_ps", "get_partition_names", "get_partitions_by_names",
        "get_partitions_by_filter", "get_partition_names_req", "get_partitions_by_names_req"}


def _jsonable(value: object) -> object:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return value
