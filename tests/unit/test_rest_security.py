"""REST security: the bearer token, attach limits (allowed roots / metastores), body and option
limits, 405 ``Allow`` headers, the name rules in the OpenAPI schema, and ``GET /api/v1/status``."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.routing import Route

from api.client import find_token
from api.rest.app import MAX_OPTIONS, create_app, resolve_api_token
from catalog.config import Settings
from catalog.exceptions import InvalidOptionError, PermissionDeniedError
from catalog.service import CatalogService
from tests.support.fake_udb import FakeSource, sample_source

API = "/api/v1"
TOKEN = "sec-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ATTACH = {"udb_type": "hive", "uri": "thrift://h:9083", "source_db": "sales"}


def make_service(tmp_path: Path, source: FakeSource | None = None,
                 **settings: Any) -> CatalogService:
    settings.setdefault("sync_interval_s", 0)
    return CatalogService(Settings(data_dir=tmp_path / "state", **settings),
                          udb_factory=source.factory if source is not None else None)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[CatalogService]:
    svc = make_service(tmp_path, sample_source())
    yield svc
    svc.close()


@pytest.fixture
def anon(service: CatalogService) -> Iterator[TestClient]:
    """A client without the token."""
    with TestClient(create_app(service, token=TOKEN)) as c:
        yield c


def error_of(resp: Any, status: int, type_name: str) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and body["error"]["type"] == type_name, body
    message: str = body["error"]["message"]
    return message


# -- authentication ------------------------------------------------------------------------------


def test_mutations_need_the_token(anon: TestClient, service: CatalogService) -> None:
    resp = anon.post(f"{API}/databases", json=ATTACH)
    assert "Authorization: Bearer" in error_of(resp, 401, "PermissionDeniedError")
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert service.list_databases() == ["default"] or "sales" not in service.list_databases()
    assert anon.post(f"{API}/databases", json=ATTACH, headers=AUTH).status_code == 201
    for headers in ({"Authorization": "Bearer wrong-token"},
                    {"Authorization": f"bearer {TOKEN}x"}):
        resp = anon.delete(f"{API}/databases/sales", headers=headers)
        message = error_of(resp, 403, "PermissionDeniedError")
        assert message == "invalid API token" and "wrong-token" not in resp.text
    for headers in ({}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer "}):
        error_of(anon.delete(f"{API}/databases/sales", headers=headers), 401,
                 "PermissionDeniedError")
    assert "sales" in service.list_databases()  # nothing detached
    assert anon.delete(f"{API}/databases/sales", headers={
        "Authorization": f"BEARER {TOKEN}"}).status_code == 204


def test_every_mutating_route_is_guarded(anon: TestClient) -> None:
    seen = 0
    for route in anon.app.routes:  # type: ignore[attr-defined]
        if not isinstance(route, Route):
            continue
        path = route.path.replace("{db}", "sales").replace("{table}", "events")
        for method in sorted((route.methods or set()) - {"GET", "HEAD"}):
            resp = anon.request(method, path, json={})
            assert resp.status_code == 401, (method, path, resp.text)
            seen += 1
    assert seen >= 6  # attach, detach, 2 syncs, mount, unmount
    assert anon.put(f"{API}/databases").status_code == 401  # any method but GET/HEAD


def test_reads_are_open_unless_read_auth(tmp_path: Path, anon: TestClient) -> None:
    assert anon.get(f"{API}/databases").status_code == 200
    assert anon.get("/health").status_code == 200
    svc = make_service(tmp_path, sample_source(), api_read_auth=True)
    try:
        with TestClient(create_app(svc, token=TOKEN)) as c:
            error_of(c.get(f"{API}/databases"), 401, "PermissionDeniedError")
            error_of(c.get(f"{API}/status"), 401, "PermissionDeniedError")
            assert c.get(f"{API}/databases", headers=AUTH).status_code == 200
            assert c.get("/health").status_code == 200
            assert c.get("/openapi.json").status_code == 200
    finally:
        svc.close()


def test_token_generated_once_into_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d")
    token = resolve_api_token(settings)
    path = tmp_path / "d" / "api-token"
    assert len(token) >= 40 and path.read_text().strip() == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert resolve_api_token(settings) == token  # read back, not regenerated
    os.chmod(path, 0o644)
    assert resolve_api_token(settings) == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p for p in path.parent.iterdir() if p.name != "api-token"]  # no temp left


def test_token_from_settings_wins_and_writes_nothing(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATALOG_API_TOKEN", "from-env-token")
    settings = Settings(data_dir=tmp_path / "d")
    assert resolve_api_token(settings) == "from-env-token"
    assert "from-env-token" not in repr(settings)
    assert not (tmp_path / "d" / "api-token").exists()


def test_create_app_without_token_uses_the_data_dir_token(service: CatalogService) -> None:
    with TestClient(create_app(service)) as c:
        token = (service.settings.data_dir / "api-token").read_text().strip()
        assert c.post(f"{API}/databases", json=ATTACH).status_code == 401
        assert c.post(f"{API}/databases", json=ATTACH,
                      headers={"Authorization": f"Bearer {token}"}).status_code == 201


def test_find_token_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CATALOG_API_TOKEN", raising=False)
    monkeypatch.delenv("CATALOG_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert find_token() is None
    (tmp_path / "strata-data").mkdir()
    (tmp_path / "strata-data" / "api-token").write_text("default-dir\n")
    assert find_token() == "default-dir"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "api-token").write_text("env-dir\n")
    monkeypatch.setenv("CATALOG_DATA_DIR", str(tmp_path / "other"))
    assert find_token() == "env-dir"
    assert find_token(data_dir=tmp_path / "strata-data") == "default-dir"
    monkeypatch.setenv("CATALOG_API_TOKEN", "env-token")
    assert find_token() == "env-token"
    assert find_token("flag-token") == "flag-token"


# -- attach limits -------------------------------------------------------------------------------


def _lake(root: Path) -> Path:
    (root / "db" / "t").mkdir(parents=True)
    (root / "db" / "t" / "a.csv").write_text("id,name\n1,x\n")
    return root


def test_directory_attach_outside_allowed_roots_is_403(tmp_path: Path) -> None:
    allowed = _lake(tmp_path / "allowed")
    secret = tmp_path / "secret"
    (secret / "t").mkdir(parents=True)
    (secret / "t" / "pw.csv").write_text("root-password-line\n")
    os.symlink(secret, allowed / "link")
    svc = make_service(tmp_path, allowed_roots=[str(allowed)])
    try:
        with TestClient(create_app(svc, token=TOKEN), headers=AUTH) as c:
            for uri, source_db in ((str(tmp_path), "secret"), (str(secret), "."),
                                   (f"{allowed}/../secret", "."), (str(allowed), "link"),
                                   (f"{allowed}/link", "."), (f"file://{secret}", "."),
                                   ("s3://bucket/lake", "db")):
                resp = c.post(f"{API}/databases", json={
                    "udb_type": "directory", "uri": uri, "source_db": source_db, "name": "x"})
                message = error_of(resp, 403, "PermissionDeniedError")
                assert "root-password-line" not in resp.text and "CATALOG_ALLOWED_ROOTS" in message
            assert svc.list_databases() == ["default"] or "x" not in svc.list_databases()
        report = svc.attach_database("directory", str(allowed), "db", name="ok")
        assert report.tables.added == 1
    finally:
        svc.close()


def test_mounted_storages_are_allowed(tmp_path: Path) -> None:
    _lake(tmp_path / "allowed")
    mounted = _lake(tmp_path / "mounted")
    svc = make_service(tmp_path, allowed_roots=[str(tmp_path / "allowed")])
    try:
        svc.mount("/lake", str(mounted))
        assert svc.attach_database("directory", "strata:///lake", "db", name="a").tables.added
        assert svc.attach_database("directory", str(mounted), "db", name="b").tables.added
    finally:
        svc.close()


def test_no_allowed_roots_means_no_limit(tmp_path: Path) -> None:
    lake = _lake(tmp_path / "anywhere")
    svc = make_service(tmp_path)
    try:
        assert svc.attach_database("directory", str(lake), "db").tables.added == 1
    finally:
        svc.close()


def test_allowed_roots_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATALOG_ALLOWED_ROOTS", "/data/a, /data/b")
    monkeypatch.setenv("CATALOG_ALLOWED_METASTORES", "*.corp:9083,hms")
    s = Settings()
    assert s.allowed_roots == ["/data/a", "/data/b"]
    assert s.allowed_metastores == ["*.corp:9083", "hms"]


def test_hive_attach_only_to_allowed_metastores(tmp_path: Path) -> None:
    source = sample_source()
    svc = make_service(tmp_path, source, allowed_metastores=["*.corp:9083", "hms2"])
    try:
        for uri in ("thrift://evil:9083", "thrift://hms.corp:9999", "thrift://hms.corp.evil:9083",
                    "thrift://10.0.0.1"):
            with pytest.raises(PermissionDeniedError, match="CATALOG_ALLOWED_METASTORES"):
                svc.attach_database("hive", uri, "sales")
        assert source.opened == []  # refused before anything was opened
        assert svc.attach_database("hive", "thrift://HMS.corp:9083", "sales").tables.added
        assert svc.attach_database("hive", "thrift://hms2:1234", "sales", name="s2").tables.added
        with TestClient(create_app(svc, token=TOKEN), headers=AUTH) as c:
            error_of(c.post(f"{API}/databases", json={**ATTACH, "uri": "thrift://evil:9083",
                                                       "name": "s3"}),
                     403, "PermissionDeniedError")
    finally:
        svc.close()


# -- bodies and options --------------------------------------------------------------------------


def test_body_over_the_limit_is_413(tmp_path: Path) -> None:
    svc = make_service(tmp_path, sample_source(), rest_max_body_bytes=1000)
    try:
        with TestClient(create_app(svc, token=TOKEN), headers=AUTH) as c:
            big = {**ATTACH, "options": {"x": "y" * 2000}}
            message = error_of(c.post(f"{API}/databases", json=big), 413, "InvalidInputError")
            assert "1000 bytes" in message

            def chunks() -> Iterator[bytes]:
                yield b'{"udb_type": "hive", "uri": "thrift://h:9083", "source_db": "sales", '
                for _ in range(100):
                    yield b" " * 100
                yield b"}"

            resp = c.post(f"{API}/databases", content=chunks(),
                          headers={"Content-Type": "application/json"})
            error_of(resp, 413, "InvalidInputError")
            assert svc.list_databases() == ["default"] or "sales" not in svc.list_databases()
            assert c.post(f"{API}/databases", json=ATTACH).status_code == 201
    finally:
        svc.close()


def test_default_body_limit_is_1mb(service: CatalogService) -> None:
    with TestClient(create_app(service, token=TOKEN), headers=AUTH) as c:
        body = b'{"udb_type": "hive", "uri": "u", "source_db": "s", "options": {"k": "' + (
            b"v" * (1 << 20)) + b'"}}'
        error_of(c.post(f"{API}/databases", content=body,
                        headers={"Content-Type": "application/json"}), 413, "InvalidInputError")


def test_streamed_body_is_cut_without_reading_it_all(service: CatalogService) -> None:
    """Chunked body, no Content-Length: reading stops right after the limit."""
    app = create_app(service, token=TOKEN)
    limit = service.settings.rest_max_body_bytes
    reads = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b" " * 65536, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": f"{API}/databases", "raw_path": b"",
             "root_path": "", "query_string": b"", "server": ("test", 80),
             "client": ("test", 1),
             "headers": [(b"authorization", f"Bearer {TOKEN}".encode()),
                         (b"content-type", b"application/json"),
                         (b"transfer-encoding", b"chunked")]}
    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413
    assert reads <= limit // 65536 + 2
    assert sum(m["type"] == "http.response.start" for m in sent) == 1


def test_too_many_options_is_422(anon: TestClient) -> None:
    options = {f"k{i}": "v" for i in range(MAX_OPTIONS + 1)}
    resp = anon.post(f"{API}/databases", json={**ATTACH, "options": options}, headers=AUTH)
    message = error_of(resp, 422, "InvalidInputError")
    assert f"at most {MAX_OPTIONS} options" in message and "k57" not in message


def test_unknown_options_message_names_five(anon: TestClient, service: CatalogService) -> None:
    options = {f"bad.{i:02d}": "v" for i in range(40)}
    message = error_of(anon.post(f"{API}/databases", json={**ATTACH, "options": options},
                                 headers=AUTH), 422, "InvalidOptionError")
    assert "bad.00, bad.01, bad.02, bad.03, bad.04 and 35 more" in message
    assert "bad.05" not in message
    started = time.monotonic()
    with pytest.raises(InvalidOptionError) as e:
        service.attach_database("hive", "thrift://h:9083", "sales",
                                options={f"o{i}": "" for i in range(200_000)})
    assert time.monotonic() - started < 3
    assert "and 199995 more" in str(e.value) and len(str(e.value)) < 1000


# -- 405 and the schema --------------------------------------------------------------------------


def test_405_lists_the_methods_of_the_path(anon: TestClient) -> None:
    resp = anon.put(f"{API}/databases", headers=AUTH)
    assert resp.status_code == 405 and resp.headers["Allow"] == "GET, POST"
    resp = anon.patch(f"{API}/databases/sales", headers=AUTH)
    assert resp.status_code == 405 and resp.headers["Allow"] == "DELETE, GET"
    resp = anon.post(f"{API}/databases/sales/tables", headers=AUTH)
    assert resp.status_code == 405 and resp.headers["Allow"] == "GET"
    resp = anon.put(f"{API}/fs/mounts", headers=AUTH)
    assert resp.headers["Allow"] == "DELETE, GET, POST"
    assert resp.json()["error"]["type"] == "HTTPError"


def test_openapi_states_names_filter_and_security(anon: TestClient) -> None:
    schema = anon.get("/openapi.json").json()
    op = schema["paths"][f"{API}/databases/{{db}}/tables/{{table}}/partitions"]["get"]
    params = {p["name"]: p for p in op["parameters"]}
    for name in ("db", "table"):
        s = params[name]["schema"]
        assert s["pattern"] == "^[A-Za-z0-9_][A-Za-z0-9_-]*$" and s["maxLength"] == 128
    flt = params["filter"]
    assert "maxLength" in str(flt["schema"]) and "LIKE" in flt["description"]
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert schema["paths"][f"{API}/databases"]["post"]["security"] == [{"bearer": []}]
    assert "security" not in schema["paths"][f"{API}/databases"]["get"]
    for code in ("401", "403", "413"):
        assert code in schema["paths"][f"{API}/databases"]["post"]["responses"]


def test_names_and_filter_are_checked(anon: TestClient) -> None:
    error_of(anon.get(f"{API}/databases/bad!name"), 422, "InvalidInputError")
    error_of(anon.get(f"{API}/databases/{'a' * 129}"), 422, "InvalidInputError")
    error_of(anon.get(f"{API}/databases/sales/tables/events/partitions",
                      params={"filter": "a" * 10000}), 422, "InvalidInputError")


# -- status --------------------------------------------------------------------------------------


def test_status_of_an_embedded_app(anon: TestClient) -> None:
    anon.post(f"{API}/databases", json=ATTACH, headers=AUTH)
    st = anon.get(f"{API}/status").json()
    assert st["status"] == "ok" and st["listeners"] == [] and st["scheduler"] is None
    sales = {d["name"]: d for d in st["databases"]}["sales"]
    assert sales["last_sync"]["errors"] == [] and sales["table_count"] >= 1


def test_status_with_server_info(service: CatalogService) -> None:
    def status() -> dict[str, Any]:
        return {"listeners": [{"name": "rest", "protocol": "http", "host": "h", "port": 1}],
                "scheduler": {"running": True, "syncs": [
                    {"db": "sales", "interval_s": 60.0, "next_sync_at": None, "failures": 2,
                     "retry_at": None}]}}

    with TestClient(create_app(service, token=TOKEN, status=status)) as c:
        st = c.get(f"{API}/status").json()
    assert st["listeners"][0]["port"] == 1 and st["scheduler"]["syncs"][0]["failures"] == 2


def test_strata_server_reports_its_listeners(tmp_path: Path) -> None:
    from api.client import CatalogClient
    from api.server import StrataServer

    lake = _lake(tmp_path / "lake")
    server = StrataServer(Settings(data_dir=tmp_path / "state", host="127.0.0.1",
                                   thrift_port=0, trino_thrift_port=0, rest_port=0,
                                   sync_interval_s=600))
    try:
        server.start()
        server.wait_started()
        token = (tmp_path / "state" / "api-token").read_text().strip()
        with CatalogClient(f"http://127.0.0.1:{server.rest_port}", timeout=30,
                           token=token) as client:
            client.attach_database("directory", str(lake), "db")
            server.scheduler.refresh()
            st = client.status()
        listeners = {li["name"]: li for li in st["listeners"]}
        assert listeners["rest"]["port"] == server.rest_port
        assert listeners["thrift"]["port"] == server.thrift.port
        assert "thrift-trino" not in listeners
        assert st["scheduler"]["running"] is True
        (sync,) = st["scheduler"]["syncs"]
        assert sync["db"] == "db" and sync["interval_s"] == 600 and sync["next_sync_at"]
        assert token not in str(st)
    finally:
        server.stop()
