"""The REST API over a CatalogService backed by the in-memory fake under-database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.rest.app import create_app
from catalog.config import Settings
from catalog.service import CatalogService
from tests.support.fake_udb import FakeSource, sample_source

API = "/api/v1"
ATTACH = {"udb_type": "hive", "uri": "thrift://h:9083", "source_db": "sales"}


@pytest.fixture
def source() -> FakeSource:
    return sample_source()


@pytest.fixture
def service(tmp_path: Path, source: FakeSource) -> Iterator[CatalogService]:
    svc = CatalogService(Settings(data_dir=tmp_path, sync_interval_s=120),
                         udb_factory=source.factory)
    yield svc
    svc.close()


TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(service: CatalogService) -> Iterator[TestClient]:
    with TestClient(create_app(service, token=TOKEN), headers=AUTH) as c:
        yield c


@pytest.fixture
def attached(client: TestClient) -> TestClient:
    assert client.post(f"{API}/databases", json=ATTACH).status_code == 201
    return client


def assert_error(resp: Any, status: int, type_name: str, *fragments: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body: dict[str, Any] = resp.json()
    assert set(body) == {"error"}
    assert body["error"]["type"] == type_name
    for fragment in fragments:
        assert fragment in body["error"]["message"]
    assert "Traceback" not in resp.text
    return body


# -- service -------------------------------------------------------------------------------------


def test_health_counts_databases(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok", "databases": 0}
    client.post(f"{API}/databases", json=ATTACH)
    assert client.get("/health").json() == {"status": "ok", "databases": 1}


def test_openapi_and_docs_are_served(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path in ("/health", f"{API}/databases", f"{API}/databases/{{db}}",
                 f"{API}/databases/{{db}}/sync", f"{API}/databases/{{db}}/tables",
                 f"{API}/databases/{{db}}/tables/{{table}}",
                 f"{API}/databases/{{db}}/tables/{{table}}/sync",
                 f"{API}/databases/{{db}}/tables/{{table}}/partitions"):
        assert path in paths, path
    assert set(paths[f"{API}/databases"]) == {"get", "post"}
    assert "delete" in paths[f"{API}/databases/{{db}}"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_unknown_route_has_the_error_shape(client: TestClient) -> None:
    assert_error(client.get(f"{API}/nothing-here"), 404, "NotFoundError", "/api/v1/nothing-here")


def test_unexpected_exception_is_500_without_traceback(
        service: CatalogService, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom() -> list[str]:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(service, "list_databases", boom)
    with TestClient(create_app(service), raise_server_exceptions=False) as c:
        body = assert_error(c.get(f"{API}/databases"), 500, "CatalogError", "internal error")
    assert "secret internals" not in body["error"]["message"]


# -- attach --------------------------------------------------------------------------------------


def test_attach_answers_201_with_the_report(client: TestClient, source: FakeSource) -> None:
    resp = client.post(f"{API}/databases", json=ATTACH)
    assert resp.status_code == 201
    report = resp.json()
    assert report["db"] == "sales"
    assert report["tables"] == {"unchanged": 0, "updated": 0, "added": 3, "removed": 0}
    assert report["partitions"]["added"] == 6
    assert report["errors"] == []
    assert source.opened[-1][:3] == ("hive", "thrift://h:9083", "sales")


def test_attach_with_name_and_options(client: TestClient, source: FakeSource) -> None:
    body = {**ATTACH, "name": "sales_copy",
            "options": {"ignore.tables": "customers", "bypass.tables": "events",
                        "sync.interval": "30", "fake.flag": "on"}}
    resp = client.post(f"{API}/databases", json=body)
    assert resp.status_code == 201, resp.text
    assert resp.json()["tables"]["added"] == 2
    assert source.opened[-1][3] == {"fake.flag": "on"}
    detail = client.get(f"{API}/databases/sales_copy").json()
    assert detail["options"] == body["options"]
    assert detail["sync_interval_s"] == 30
    tables = {t["name"]: t for t in client.get(f"{API}/databases/sales_copy/tables").json()}
    assert set(tables) == {"events", "recent_events"}
    assert tables["events"]["bypass"] is True


def test_attach_twice_is_409(attached: TestClient) -> None:
    assert_error(attached.post(f"{API}/databases", json=ATTACH), 409, "AlreadyExistsError",
                 "already attached")


@pytest.mark.parametrize("body, type_name, fragment", [
    ({"udb_type": "hive", "uri": "thrift://h:9083"}, "InvalidInputError", "source_db"),
    ({**ATTACH, "options": {"no.such": "x"}}, "InvalidOptionError", "no.such"),
    ({**ATTACH, "options": {"sync.interval": "soon"}}, "InvalidOptionError", "sync.interval"),
    ({**ATTACH, "name": "bad name!"}, "InvalidInputError", "bad name!"),
    ({**ATTACH, "udb_type": "oracle"}, "InvalidInputError", "oracle"),
])
def test_attach_bad_input_is_422(client: TestClient, body: dict[str, Any], type_name: str,
                                 fragment: str) -> None:
    assert_error(client.post(f"{API}/databases", json=body), 422, type_name, fragment)
    assert client.get(f"{API}/databases").json() == []


def test_attach_of_missing_source_db_is_404(client: TestClient) -> None:
    assert_error(client.post(f"{API}/databases", json={**ATTACH, "source_db": "nope"}), 404,
                 "NoSuchDatabaseError", "nope")


def test_attach_of_unreachable_udb_is_502(client: TestClient, source: FakeSource) -> None:
    source.unreachable = True
    assert_error(client.post(f"{API}/databases", json=ATTACH), 502, "UdbUnavailableError",
                 "cannot reach")
    assert client.get(f"{API}/databases").json() == []


# -- databases -----------------------------------------------------------------------------------


def test_list_databases(attached: TestClient) -> None:
    (db,) = attached.get(f"{API}/databases").json()
    assert db["name"] == "sales"
    assert (db["udb_type"], db["uri"], db["source_db"]) == ("hive", "thrift://h:9083", "sales")
    assert db["table_count"] == 3
    assert db["attached_at"] and db["last_sync_at"]
    assert db["last_sync"]["tables"]["added"] == 3


def test_get_database(attached: TestClient) -> None:
    d = attached.get(f"{API}/databases/sales").json()
    assert d["name"] == "sales"
    assert d["database"]["name"] == "sales"
    assert d["database"]["location"] == "/warehouse/sales.db"
    assert d["options"] == {}
    assert d["sync_interval_s"] == 120  # the settings' default
    assert d["last_sync"]["errors"] == []


def test_unknown_database_is_404(client: TestClient) -> None:
    for path in ("", "/tables", "/tables/t", "/tables/t/partitions"):
        assert_error(client.get(f"{API}/databases/nope{path}"), 404, "NoSuchDatabaseError",
                     "'nope'")
    assert_error(client.post(f"{API}/databases/nope/sync"), 404, "NoSuchDatabaseError")
    assert_error(client.delete(f"{API}/databases/nope"), 404, "NoSuchDatabaseError")


def test_detach_is_204(attached: TestClient) -> None:
    resp = attached.delete(f"{API}/databases/sales")
    assert resp.status_code == 204 and resp.content == b""
    assert_error(attached.get(f"{API}/databases/sales"), 404, "NoSuchDatabaseError")
    assert attached.get(f"{API}/databases").json() == []
    assert attached.post(f"{API}/databases", json=ATTACH).status_code == 201


# -- tables --------------------------------------------------------------------------------------


def test_list_tables(attached: TestClient) -> None:
    tables = attached.get(f"{API}/databases/sales/tables").json()
    assert [t["name"] for t in tables] == ["customers", "events", "recent_events"]
    events = tables[1]
    assert events == {"name": "events", "type": "EXTERNAL_TABLE",
                      "location": "/warehouse/sales.db/events", "version": 1,
                      "partition_count": 6, "bypass": False, "layout": "source"}
    assert tables[2]["type"] == "VIRTUAL_VIEW" and tables[2]["location"] is None


def test_get_table(attached: TestClient) -> None:
    t = attached.get(f"{API}/databases/sales/tables/EVENTS").json()
    assert (t["db_name"], t["name"], t["table_type"]) == ("sales", "events", "EXTERNAL_TABLE")
    assert [c["name"] for c in t["sd"]["columns"]] == ["id", "payload"]
    assert [k["name"] for k in t["partition_keys"]] == ["dt", "h"]
    assert isinstance(t["id"], int)
    assert t["version"] == 1 and t["partition_count"] == 6
    assert t["layout"] == {"kind": "source", "transformed_partitions": 0, "version": None}
    assert t["location"] == "/warehouse/sales.db/events"
    assert t["bypass"] is False
    assert "fingerprint" in t
    plain = attached.get(f"{API}/databases/sales/tables/customers").json()
    assert plain["fingerprint"] == "fp0"
    view = attached.get(f"{API}/databases/sales/tables/recent_events").json()
    assert view["table_type"] == "VIRTUAL_VIEW" and "sales.events" in view["view_original_text"]


def test_unknown_table_is_404(attached: TestClient) -> None:
    assert_error(attached.get(f"{API}/databases/sales/tables/nope"), 404, "NoSuchTableError",
                 "sales.nope")
    assert_error(attached.get(f"{API}/databases/sales/tables/nope/partitions"), 404,
                 "NoSuchTableError")


# -- partitions ----------------------------------------------------------------------------------


def test_partitions_first_page(attached: TestClient) -> None:
    page = attached.get(f"{API}/databases/sales/tables/events/partitions").json()
    assert (page["total"], page["offset"], page["limit"]) == (6, 0, 100)
    names = [p["name"] for p in page["partitions"]]
    assert names == sorted(names) and names[0] == "dt=2024-01-01/h=0"
    first = page["partitions"][0]
    assert first["values"] == ["2024-01-01", "0"]
    assert (first["db_name"], first["table_name"]) == ("sales", "events")
    assert first["sd"]["location"] == "/warehouse/sales.db/events/dt=2024-01-01/h=0"


def test_partitions_paging(attached: TestClient) -> None:
    url = f"{API}/databases/sales/tables/events/partitions"
    seen = []
    for offset in (0, 4, 8):
        page = attached.get(url, params={"offset": offset, "limit": 4}).json()
        assert page["total"] == 6 and page["offset"] == offset and page["limit"] == 4
        seen += [p["name"] for p in page["partitions"]]
    assert len(seen) == 6 == len(set(seen))


def test_partitions_filter(attached: TestClient) -> None:
    url = f"{API}/databases/sales/tables/events/partitions"
    page = attached.get(url, params={"filter": "dt = '2024-01-02'"}).json()
    assert page["total"] == 2
    assert [p["name"] for p in page["partitions"]] == ["dt=2024-01-02/h=0", "dt=2024-01-02/h=1"]
    page = attached.get(url, params={"filter": "dt >= '2024-01-02' and h = 1",
                                     "limit": 1, "offset": 1}).json()
    assert page["total"] == 2
    assert [p["name"] for p in page["partitions"]] == ["dt=2024-01-03/h=1"]


def test_partitions_of_unpartitioned_table(attached: TestClient) -> None:
    page = attached.get(f"{API}/databases/sales/tables/customers/partitions").json()
    assert page == {"total": 0, "offset": 0, "limit": 100, "partitions": []}


@pytest.mark.parametrize("params, type_name, fragment", [
    ({"limit": 0}, "InvalidInputError", "limit"),
    ({"limit": 1001}, "InvalidInputError", "limit"),
    ({"offset": -1}, "InvalidInputError", "offset"),
    ({"limit": "many"}, "InvalidInputError", "limit"),
    ({"filter": "dt = "}, "InvalidFilterError", "filter"),
    ({"filter": "nope = 1"}, "InvalidFilterError", "nope"),
])
def test_partitions_bad_query_is_422(attached: TestClient, params: dict[str, Any],
                                     type_name: str, fragment: str) -> None:
    assert_error(attached.get(f"{API}/databases/sales/tables/events/partitions", params=params),
                 422, type_name, fragment)


def test_partitions_limit_bounds_are_accepted(attached: TestClient) -> None:
    url = f"{API}/databases/sales/tables/events/partitions"
    assert len(attached.get(url, params={"limit": 1}).json()["partitions"]) == 1
    assert attached.get(url, params={"limit": 1000}).json()["limit"] == 1000


# -- sync ----------------------------------------------------------------------------------------


def test_sync_without_changes(attached: TestClient) -> None:
    resp = attached.post(f"{API}/databases/sales/sync")
    assert resp.status_code == 200
    report = resp.json()
    assert report["tables"] == {"unchanged": 3, "updated": 0, "added": 0, "removed": 0}
    assert report["partitions"]["unchanged"] == 6 and report["errors"] == []


def test_sync_picks_up_changes(attached: TestClient, source: FakeSource) -> None:
    source.add_partition("sales", "events", ["2024-01-04", "0"])
    source.drop_partition("sales", "events", ["2024-01-01", "0"])
    source.drop_table("sales", "recent_events")
    source.add_table("sales", "refunds")
    source.touch("/warehouse/sales.db/customers", "fp1")
    report = attached.post(f"{API}/databases/sales/sync").json()
    assert report["tables"] == {"unchanged": 0, "updated": 2, "added": 1, "removed": 1}
    assert report["partitions"] == {"unchanged": 5, "updated": 0, "added": 1, "removed": 1}
    names = [t["name"] for t in attached.get(f"{API}/databases/sales/tables").json()]
    assert names == ["customers", "events", "refunds"]
    t = attached.get(f"{API}/databases/sales/tables/customers").json()
    assert (t["version"], t["fingerprint"]) == (2, "fp1")
    db = attached.get(f"{API}/databases/sales").json()
    assert db["last_sync"] == report


def test_sync_one_table(attached: TestClient, source: FakeSource) -> None:
    source.add_partition("sales", "events", ["2024-01-04", "0"])
    source.touch("/warehouse/sales.db/customers", "fp1")
    resp = attached.post(f"{API}/databases/sales/tables/events/sync")
    assert resp.status_code == 200
    report = resp.json()
    assert report["tables"] == {"unchanged": 0, "updated": 1, "added": 0, "removed": 0}
    assert report["partitions"]["added"] == 1
    customers = attached.get(f"{API}/databases/sales/tables/customers").json()
    assert customers["fingerprint"] == "fp0"  # not synced


def test_sync_of_unknown_table_is_404(attached: TestClient) -> None:
    assert_error(attached.post(f"{API}/databases/sales/tables/nope/sync"), 404,
                 "NoSuchTableError", "nope")


def test_sync_of_unreachable_udb_is_502_with_report(attached: TestClient,
                                                     source: FakeSource) -> None:
    source.unreachable = True
    for path in ("/sync", "/tables/events/sync"):
        body = assert_error(attached.post(f"{API}/databases/sales{path}"), 502, "UdbError",
                            "cannot reach")
        report = body["error"]["report"]
        assert report["db"] == "sales" and report["errors"]
    # the last good state is still served, and the failure is recorded
    assert len(attached.get(f"{API}/databases/sales/tables").json()) == 3
    assert attached.get(f"{API}/databases/sales").json()["last_sync"]["errors"]
    source.unreachable = False
    assert attached.post(f"{API}/databases/sales/sync").status_code == 200
