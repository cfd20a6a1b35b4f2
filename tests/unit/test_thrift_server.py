"""Raw HMS Thrift against the Strata server: every served method, the errors, bad input.

The catalog behind the server is fed by the in-memory fake under-database; the integration
suite repeats the important calls against a real Hive Metastore.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hmsclient.genthrift.hive_metastore import ThriftHiveMetastore
from hmsclient.genthrift.hive_metastore import ttypes as hms
from thrift.protocol import TBinaryProtocol
from thrift.Thrift import TApplicationException
from thrift.transport import TSocket, TTransport

from api.thrift.server import ThriftServer
from catalog.config import Settings
from catalog.models import ColumnStatistics
from catalog.service import CatalogService
from tests.support.fake_udb import FakeSource, sample_source


class Client:
    """A generated HMS client on its own connection."""

    def __init__(self, port: int) -> None:
        self.transport = TTransport.TBufferedTransport(TSocket.TSocket("127.0.0.1", port))
        self.transport.open()
        self.c = ThriftHiveMetastore.Client(
            TBinaryProtocol.TBinaryProtocolAccelerated(self.transport))

    def close(self) -> None:
        self.transport.close()


@pytest.fixture()
def source() -> FakeSource:
    src = sample_source()
    events = src.tables["sales"]["events"]
    src.tables["sales"]["events"] = events.model_copy(update={"column_stats": [
        ColumnStatistics(column="id", type="bigint", kind="long",
                         data={"lowValue": 1, "highValue": 99, "numNulls": 0, "numDVs": 42}),
    ]})
    first = src.partitions[("sales", "events")][0]
    src.partitions[("sales", "events")][0] = first.model_copy(update={"column_stats": [
        ColumnStatistics(column="payload", type="string", kind="string",
                         data={"maxColLen": 10, "avgColLen": 4.5, "numNulls": 1, "numDVs": 3}),
    ]})
    return src


@pytest.fixture()
def server(tmp_path: Path, source: FakeSource) -> Iterator[ThriftServer]:
    service = CatalogService(Settings(data_dir=tmp_path), udb_factory=source.factory)
    service.attach_database("fake", "fake://", "sales")
    service.attach_database("fake", "fake://", "sales", name="sales_copy")
    srv = ThriftServer(service, "127.0.0.1", 0, idle_timeout_s=5).start()
    yield srv
    srv.stop()
    service.close()


@pytest.fixture()
def client(server: ThriftServer) -> Iterator[ThriftHiveMetastore.Client]:
    c = Client(server.port)
    yield c.c
    c.close()


def test_databases(client: ThriftHiveMetastore.Client) -> None:
    assert client.get_all_databases() == ["default", "sales", "sales_copy"]
    assert client.get_databases("sales_*") == ["sales_copy"]
    assert client.get_databases("SALES|other") == ["sales"]
    default = client.get_database("default")  # every HMS has one; Spark needs it
    assert default.name == "default" and default.locationUri.startswith("file:")
    assert client.get_all_tables("default") == []
    db = client.get_database("sales_copy")
    assert db.name == "sales_copy" and db.locationUri == "/warehouse/sales.db"
    with pytest.raises(hms.NoSuchObjectException, match="'nope' does not exist"):
        client.get_database("nope")


def test_table_listing(client: ThriftHiveMetastore.Client) -> None:
    assert client.get_all_tables("sales") == ["customers", "events", "recent_events"]
    assert client.get_tables("sales", "*event*") == ["events", "recent_events"]
    assert client.get_tables_by_type("sales", "*", "VIRTUAL_VIEW") == ["recent_events"]
    assert client.get_all_tables("missing") == []
    metas = client.get_table_meta("sales_copy", "*", ["EXTERNAL_TABLE"])
    assert [(m.dbName, m.tableName, m.tableType) for m in metas] == [
        ("sales_copy", "customers", "EXTERNAL_TABLE"), ("sales_copy", "events", "EXTERNAL_TABLE")]
    assert client.get_table_names_by_filter("sales", "", -1) == [
        "customers", "events", "recent_events"]


def test_get_table_is_fully_populated(client: ThriftHiveMetastore.Client) -> None:
    t = client.get_table("sales", "events")
    assert (t.dbName, t.tableName, t.tableType) == ("sales", "events", "EXTERNAL_TABLE")
    assert [k.name for k in t.partitionKeys] == ["dt", "h"]
    assert t.sd.numBuckets == -1 and t.sd.bucketCols == [] and t.sd.sortCols == []
    assert t.sd.serdeInfo is not None and t.sd.skewedInfo is not None
    assert t.sd.skewedInfo.skewedColNames == []
    plain = client.get_table("sales", "customers")
    assert plain.partitionKeys == []  # never null
    req = client.get_table_req(hms.GetTableRequest(dbName="sales", tblName="events"))
    assert req.table == t
    by_name = client.get_table_objects_by_name("sales", ["customers", "nope", "events"])
    assert [x.tableName for x in by_name] == ["customers", "events"]
    res = client.get_table_objects_by_name_req(hms.GetTablesRequest(
        dbName="sales", tblNames=["events"]))
    assert res.tables == [t]
    assert [f.name for f in client.get_fields("sales", "events")] == ["id", "payload"]
    assert [f.name for f in client.get_schema("sales", "events")] == ["id", "payload", "dt", "h"]


def test_renamed_database_view(client: ThriftHiveMetastore.Client) -> None:
    view = client.get_table("sales_copy", "recent_events")
    assert view.tableType == "VIRTUAL_VIEW"
    assert view.dbName == "sales_copy"
    assert "`sales_copy`.events" in view.viewExpandedText
    assert client.get_table("sales", "recent_events").viewExpandedText.startswith(
        "SELECT id FROM sales.events")


def test_missing_objects_raise_no_such_object(client: ThriftHiveMetastore.Client) -> None:
    with pytest.raises(hms.NoSuchObjectException):
        client.get_table("sales", "nope")
    with pytest.raises(hms.NoSuchObjectException):
        client.get_table("nope", "events")
    with pytest.raises(hms.NoSuchObjectException):
        client.get_table_req(hms.GetTableRequest(dbName="sales", tblName="nope"))
    with pytest.raises(hms.NoSuchObjectException):
        client.get_partition("sales", "events", ["2099-01-01", "0"])
    with pytest.raises(hms.NoSuchObjectException):
        client.get_partition_by_name("sales", "events", "dt=2099-01-01/h=0")
    with pytest.raises(hms.NoSuchObjectException):
        client.get_partitions("sales", "nope", -1)


def test_partitions(client: ThriftHiveMetastore.Client) -> None:
    names = client.get_partition_names("sales", "events", -1)
    assert names == [f"dt=2024-01-0{d}/h={h}" for d in (1, 2, 3) for h in (0, 1)]
    assert client.get_partition_names("sales", "events", 2) == names[:2]
    assert client.get_partition_names_ps("sales", "events", ["", "1"], -1) == names[1::2]
    parts = client.get_partitions("sales", "events", -1)
    assert [p.values for p in parts] == [n.replace("dt=", "").split("/h=") for n in names]
    assert all(p.dbName == "sales" and p.sd.location.endswith(n.split("/")[-1])
               for p, n in zip(parts, names))
    assert client.get_partitions_ps("sales", "events", ["2024-01-02"], -1) == parts[2:4]
    assert client.get_partitions_ps_with_auth(
        "sales", "events", ["2024-01-02"], -1, "u", ["g"]) == parts[2:4]
    by_names = client.get_partitions_by_names("sales", "events", [names[3], "bad=1", names[0]])
    assert by_names == [parts[3], parts[0]]
    assert client.get_partition("sales", "events", ["2024-01-01", "1"]) == parts[1]
    assert client.get_partition_by_name("sales", "events", names[5]) == parts[5]
    copy = client.get_partitions("sales_copy", "events", 1)
    assert copy[0].dbName == "sales_copy"


def test_partitions_by_filter(client: ThriftHiveMetastore.Client) -> None:
    got = client.get_partitions_by_filter("sales", "events", 'dt >= "2024-01-02" and h = 1', -1)
    assert [p.values for p in got] == [["2024-01-02", "1"], ["2024-01-03", "1"]]
    assert client.get_num_partitions_by_filter("sales", "events", "h > 0") == 3
    assert len(client.get_partitions_by_filter("sales", "events", "", -1)) == 6
    with pytest.raises(hms.MetaException, match="unknown partition column 'nope'"):
        client.get_partitions_by_filter("sales", "events", "nope = 1", -1)
    with pytest.raises(hms.MetaException):
        client.get_partitions_by_filter("sales", "events", "h = (", -1)


def test_statistics(client: ThriftHiveMetastore.Client) -> None:
    res = client.get_table_statistics_req(hms.TableStatsRequest(
        dbName="sales", tblName="events", colNames=["id", "payload"]))
    assert len(res.tableStats) == 1
    long_stats = res.tableStats[0].statsData.longStats
    assert (long_stats.lowValue, long_stats.highValue, long_stats.numDVs) == (1, 99, 42)
    col = client.get_table_column_statistics("sales", "events", "id")
    assert col.statsDesc.isTblLevel and col.statsObj[0].colName == "id"
    with pytest.raises(hms.NoSuchObjectException):
        client.get_table_column_statistics("sales", "events", "payload")
    name = "dt=2024-01-01/h=0"
    pres = client.get_partitions_statistics_req(hms.PartitionsStatsRequest(
        dbName="sales", tblName="events", colNames=["payload"],
        partNames=[name, "dt=2024-01-01/h=1"]))
    assert list(pres.partStats) == [name]
    assert pres.partStats[name][0].statsData.stringStats.avgColLen == 4.5
    pcol = client.get_partition_column_statistics("sales", "events", name, "payload")
    assert pcol.statsDesc.partName == name and not pcol.statsDesc.isTblLevel


def test_misc_reads(client: ThriftHiveMetastore.Client) -> None:
    assert client.set_ugi("alice", ["g1"]) == ["g1"]
    assert client.get_config_value("hive.metastore.try.direct.sql", "true") == "true"
    assert client.get_all_functions().functions == []
    assert client.get_functions("sales", "*") == []
    assert client.get_role_names() == []
    assert client.list_roles("alice", hms.PrincipalType.USER) == []
    assert client.getName() == "Strata"
    assert client.getVersion()
    priv = client.get_privilege_set(hms.HiveObjectRef(), "alice", [])
    assert priv.userPrivileges == {}
    client.shutdown()  # fb303 oneway: no answer, the connection stays usable
    assert client.get_all_databases() == ["default", "sales", "sales_copy"]


def test_writes_are_refused_read_only(client: ThriftHiveMetastore.Client) -> None:
    with pytest.raises(hms.MetaException, match="read-only"):
        client.create_database(hms.Database(name="x"))
    with pytest.raises(hms.MetaException, match="read-only"):
        client.drop_table("sales", "events", True)
    with pytest.raises(hms.MetaException, match="read-only"):
        client.add_partitions([])
    assert client.get_all_databases() == ["default", "sales", "sales_copy"]


def _raw_call(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                return b"".join(chunks)
            chunks.append(data)


def _call_message(name: str, body: bytes = b"\x00", seqid: int = 7) -> bytes:
    raw = name.encode()
    return struct.pack(">Ii", 0x80010001, len(raw)) + raw + struct.pack(">i", seqid) + body


def test_unknown_method_answers_invalid_method_name(server: ThriftServer) -> None:
    c = Client(server.port)
    try:
        with pytest.raises(TApplicationException) as err:
            c.c._oprot.writeMessageBegin("get_tables_ext", 1, 0)
            ThriftHiveMetastore.get_all_databases_args().write(c.c._oprot)
            c.c._oprot.writeMessageEnd()
            c.c._oprot.trans.flush()
            c.c.recv_get_all_databases()
        assert err.value.type == TApplicationException.UNKNOWN_METHOD
        assert "Invalid method name: 'get_tables_ext'" in str(err.value.message)
        assert c.c.get_all_databases() == ["default", "sales", "sales_copy"]  # same connection still works
    finally:
        c.close()
    assert server.unknown_methods["get_tables_ext"] == 1


@pytest.mark.parametrize("payload", [
    b"",                                           # connect and close
    b"\x80\x01",                                   # truncated header
    _call_message("get_table")[:-3],               # truncated mid-message
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",          # another protocol
    struct.pack(">Ii", 0x80010001, 0x7FFFFFF0),    # absurd name length
    _call_message("get_table", b"\x0b\x00\x01\x7f\xff\xff\xff"),  # absurd string length
    _call_message("get_partitions_by_names",
                  b"\x0f\x00\x03\x0b\x7f\xff\xff\xff"),           # absurd list length
    b"\x00" * 64,                                  # zeros
])
def test_malformed_input_closes_only_that_connection(server: ThriftServer, payload: bytes) -> None:
    reply = _raw_call(server.port, payload)
    assert len(reply) < 1024  # no huge allocation echoed back, no crash
    c = Client(server.port)
    try:
        assert c.c.get_all_databases() == ["default", "sales", "sales_copy"]
    finally:
        c.close()


def test_many_connections_one_call_each(server: ThriftServer) -> None:
    for _ in range(200):
        c = Client(server.port)
        assert c.c.get_table("sales", "customers").tableName == "customers"
        c.close()


def test_sync_changes_are_served_without_restart(server: ThriftServer, source: FakeSource,
                                                 client: ThriftHiveMetastore.Client) -> None:
    before = client.get_table("sales", "customers")
    assert "late" not in [m.tableName for m in client.get_table_meta("sales", "*", [])]
    source.add_table("sales", "late")
    source.add_table("sales", "customers", [("id", "bigint"), ("name", "string"),
                                            ("email", "string")])
    source.add_partition("sales", "events", ["2024-01-04", "0"])
    report = server.service.sync("sales")
    assert report.tables.updated == 2 and report.partitions.added == 1
    assert "late" in [m.tableName for m in client.get_table_meta("sales", "*", [])]
    after = client.get_table("sales", "customers")
    assert [c.name for c in after.sd.cols] == ["id", "name", "email"] != [
        c.name for c in before.sd.cols]
    assert "dt=2024-01-04/h=0" in client.get_partition_names("sales", "events", -1)


def test_remaining_served_methods(client: ThriftHiveMetastore.Client) -> None:
    parts = client.get_partitions("sales", "events", -1)
    assert client.get_partitions_with_auth("sales", "events", 2, "u", ["g"]) == parts[:2]
    assert client.get_partition_with_auth("sales", "events", ["2024-01-01", "0"], "u",
                                          []) == parts[0]
    assert [f.name for f in client.get_fields_with_environment_context(
        "sales", "events", hms.EnvironmentContext())] == ["id", "payload"]
    assert len(client.get_schema_with_environment_context(
        "sales", "events", hms.EnvironmentContext())) == 4
    assert client.get_primary_keys(hms.PrimaryKeysRequest(
        db_name="sales", tbl_name="events")).primaryKeys == []
    assert client.get_foreign_keys(hms.ForeignKeysRequest(
        foreign_db_name="sales", foreign_tbl_name="events")).foreignKeys == []
    assert client.get_current_notificationEventId().eventId == 0
    assert client.getStatus() == 2 and client.getStatusDetails() == "serving"
    assert client.aliveSince() == 0 and client.getCounters() == {}
    assert client.get_principals_in_role(
        hms.GetPrincipalsInRoleRequest(roleName="admin")).principalGrants == []
    assert client.get_role_grants_for_principal(hms.GetRoleGrantsForPrincipalRequest(
        principal_name="alice", principal_type=hms.PrincipalType.USER)).principalGrants == []
    assert client.list_privileges("alice", hms.PrincipalType.USER, hms.HiveObjectRef()) == []
    with pytest.raises(hms.NoSuchObjectException):
        client.get_function("sales", "f")
    assert client.get_table_names_by_filter("sales", "hive_filter_field_owner__ = 'nobody'",
                                            -1) == []
    with pytest.raises(hms.InvalidOperationException):  # not the HMS filter language
        client.get_table_names_by_filter("sales", "owner is odd", -1)


def test_every_served_method_is_exercised_here() -> None:
    """Keeps this module honest: a newly served method needs a test above."""
    import inspect

    from api.thrift.handler import HmsHandler, served_methods

    source = inspect.getsource(inspect.getmodule(test_every_served_method_is_exercised_here))
    handler = HmsHandler.__new__(HmsHandler)
    untested = [m for m in served_methods(handler) if f".{m}(" not in source]
    assert untested == []


@pytest.mark.parametrize(("stored", "for_trino"), [
    ("file:/data/t", "local:///data/t"),
    ("file:///data/t/year=2020", "local:///data/t/year=2020"),
    ("s3://bucket/t", "s3://bucket/t"),
    ("/plain/path", "/plain/path"),
    (None, None),
])
def test_trino_location_view(stored: str | None, for_trino: str | None) -> None:
    from catalog.serving import ClientView

    assert ClientView.TRINO.present(stored) == for_trino
    assert ClientView.VERBATIM.present(stored) == stored


def test_trino_listener_presents_local_locations(tmp_path: Path) -> None:
    from catalog.serving import ClientView

    src = sample_source()
    src.databases["sales"] = src.databases["sales"].model_copy(update={"location": "file:/wh"})
    t = src.tables["sales"]["customers"]
    src.tables["sales"]["customers"] = t.model_copy(update={"sd": t.sd.model_copy(
        update={"location": "file:/wh/customers"})})
    service = CatalogService(Settings(data_dir=tmp_path), udb_factory=src.factory)
    service.attach_database("fake", "fake://", "sales")
    plain = ThriftServer(service, "127.0.0.1", 0).start()
    trino = ThriftServer(service, "127.0.0.1", 0, view=ClientView.TRINO).start()
    a, b = Client(plain.port), Client(trino.port)
    try:
        assert a.c.get_table("sales", "customers").sd.location == "file:/wh/customers"
        assert b.c.get_table("sales", "customers").sd.location == "local:///wh/customers"
        assert b.c.get_database("sales").locationUri == "local:///wh"
        assert a.c.get_table("sales", "customers").sd.location == "file:/wh/customers"
    finally:
        a.close()
        b.close()
        plain.stop()
        trino.stop()
        service.close()
