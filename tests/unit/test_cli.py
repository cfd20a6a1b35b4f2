"""``catalogctl`` against a real REST server (uvicorn in a thread) over the fake under-database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from api.rest.app import create_app
from api.cli import main
from api.client import CatalogClient, error_from_response
from catalog.config import Settings
from catalog.exceptions import (
    CatalogError,
    InvalidFilterError,
    NoSuchTableError,
    NotFoundError,
    UdbError,
)
from catalog.service import CatalogService
from tests.support.fake_udb import FakeSource, sample_source
from tests.support.ports import LOOPBACK, free_port

REPO = Path(__file__).resolve().parents[2]
TOKEN = "cli-test-token-0123456789"


class Server:
    def __init__(self, url: str, source: FakeSource, service: CatalogService) -> None:
        self.url = url
        self.source = source
        self.service = service


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    source = sample_source()
    service = CatalogService(Settings(data_dir=tmp_path_factory.mktemp("state")),
                             udb_factory=source.factory)
    port = free_port()
    rest = uvicorn.Server(uvicorn.Config(create_app(service, token=TOKEN), host=LOOPBACK, port=port,
                                         log_level="warning", access_log=False))
    thread = threading.Thread(target=rest.run, name="test-rest", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not rest.started:
        assert thread.is_alive() and time.monotonic() < deadline, "REST server did not start"
        time.sleep(0.02)
    try:
        yield Server(f"http://{LOOPBACK}:{port}", source, service)
    finally:
        rest.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive()
        service.close()


@pytest.fixture
def srv(server: Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """The shared server, reset: nothing attached, a fresh fake source, CATALOG_SERVER set."""
    monkeypatch.setenv("CATALOG_SERVER", server.url)
    monkeypatch.setenv("CATALOG_API_TOKEN", TOKEN)
    fresh = sample_source()
    server.source.__dict__.update(fresh.__dict__)
    yield server
    for db in server.service.list_databases():
        server.service.detach_database(db)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def attach(capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    code, out, err = run(capsys, "attach-db", "hive", "thrift://h:9083", "sales", *extra)
    assert code == 0, err
    return out


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("catalogctl: error: ")
    assert "Traceback" not in err
    return lines[0]


# -- attach / ls ---------------------------------------------------------------------------------


def test_attach_and_ls(srv: Server, capsys: pytest.CaptureFixture[str]) -> None:
    out = attach(capsys)
    assert "attached 'sales'" in out and "3 tables, 6 partitions" in out
    code, out, err = run(capsys, "ls")
    assert code == 0 and err == ""
    header, row = out.splitlines()
    assert header.split()[:4] == ["NAME", "TYPE", "URI", "SOURCE"]
    assert row.split()[:5] == ["sales", "hive", "thrift://h:9083", "sales", "3"]
    assert row.split()[-1] == "ok"
    # aligned: every column starts at the same offset in header and row
    assert header.index("TABLES") == row.index(" 3 ") + 1


def test_attach_with_name_and_options(srv: Server, capsys: pytest.CaptureFixture[str]) -> None:
    out = attach(capsys, "--db", "sales2", "-o", "ignore.tables=customers",
                 "--option", "fake.flag=a=b")
    assert "attached 'sales2'" in out and "2 tables" in out
    assert srv.source.opened[-1][3] == {"fake.flag": "a=b"}
    assert srv.service.database_record("sales2").options == {
        "ignore.tables": "customers", "fake.flag": "a=b"}


def test_ls_json(srv: Server, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--json", "ls")
    assert code == 0 and json.loads(out) == []
    code, out, _ = run(capsys, "--json", "attach-db", "hive", "thrift://h:9083", "sales")
    assert code == 0 and json.loads(out)["tables"]["added"] == 3
    code, out, _ = run(capsys, "ls", "--json")  # also accepted after the command
    (db,) = json.loads(out)
    assert db["name"] == "sales" and db["table_count"] == 3
    code, out, _ = run(capsys, "--json", "ls", "sales")
    assert [t["name"] for t in json.loads(out)] == ["customers", "events", "recent_events"]
    code, out, _ = run(capsys, "--json", "ls", "sales", "events")
    shown = json.loads(out)
    assert shown["table"]["name"] == "events" and shown["table"]["partition_count"] == 6
    assert shown["partitions"]["total"] == 6 and len(shown["partitions"]["partitions"]) == 6


def test_ls_empty(srv: Server, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "ls") == (0, "no databases attached\n", "")


def test_ls_tables(srv: Server, capsys: pytest.CaptureFixture[str]) -> None:
    attach(capsys)
    code, out, _ = run(capsys, "ls", "sales")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["NAME", "TYPE", "PARTITIONS", "VERSION", "BYPASS",
                                              "LOCATION"]
    assert lines[2].split() == ["events", "EXTERNAL_TABLE", "6", "1", "no",
                                "/warehouse/sales.db/events"]
    assert lines[3].split() == ["recent_events", "VIRTUAL_VIEW", "0", "1", "no", "-"]


def test_ls_table_shows_detail_and_partitions(srv: Server,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(150):
        srv.source.add_partition("sales", "events", [f"2025-01-{i:03d}", "0"])
    attach(capsys)
    code, out, _ = run(capsys, "ls", "sales", "events")
    assert code == 0
    assert "sales.events" in out and "EXTERNAL_TABLE" in out
    assert "partition keys:" in out and "dt" in out
    assert "partitions (100 of 156, first shown):" in out
    assert "dt=2024-01-01/h=0" in out and "/warehouse/sales.db/events/dt=2024-01-01/h=0" in out
    assert "dt=2025-01-149/h=0" not in out
    code, out, _ = run(capsys, "ls", "sales", "recent_events")
    assert code == 0 and "VIRTUAL_VIEW" in out and "SELECT id FROM sales.events" in out
    assert "partitions (" not in out


# -- sync / detach -------------------------------------------------------------------------------


def test_sync(srv: Server, capsys: pytest.CaptureFixture[str]) -> None:
    attach(capsys)
    srv.source.add_partition("sales", "events", ["2024-01-04", "0"])
    code, out, _ = run(capsys, "sync", "sales")
    assert code == 0
    assert out.startswith("synced 'sales'")
    assert "tables 0 added, 1 updated, 0 removed, 2 unchanged" in out
    assert "partitions 1 added, 0 updated, 0 removed, 6 unchanged" in out
    srv.source.touch("/warehouse/sales.db/customers", "fp2")
    code, out, _ = run(capsys, "--json", "sync", "sales", "customers")
    assert code == 0 and json.loads(out)["tables"]["updated"] == 1


def test_sync_of_unreachable_udb_fails(srv: Server, capsys: pytest.CaptureFixture[str]) -> None:
    attach(capsys)
    srv.source.unreachable = True
    code, _, err = run(capsys, "sync", "sales")
    assert code == 1
    assert "cannot reach under-database" in one_error_line(err)


def test_detach(srv: Server, capsys: pytest.CaptureFixture[str]) -> None:
    attach(capsys)
    assert run(capsys, "detach-db", "sales") == (0, "detached 'sales'\n", "")
    assert run(capsys, "ls")[1] == "no databases attached\n"


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["ls", "nope"], "database 'nope' does not exist"),
    (["ls", "nope", "t"], "database 'nope' does not exist"),
    (["sync", "nope"], "database 'nope' does not exist"),
    (["detach-db", "nope"], "database 'nope' does not exist"),
])
def test_unknown_database_exits_1(srv: Server, capsys: pytest.CaptureFixture[str],
                                  argv: list[str], message: str) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 1 and out == ""
    assert one_error_line(err) == f"catalogctl: error: {message}"


def test_attach_twice_exits_1(srv: Server, capsys: pytest.CaptureFixture[str]) -> None:
    attach(capsys)
    code, _, err = run(capsys, "attach-db", "hive", "thrift://h:9083", "sales")
    assert code == 1 and "already attached" in one_error_line(err)


@pytest.mark.parametrize("argv, fragment", [
    (["attach-db", "hive", "thrift://h:9083", "sales", "-o", "novalue"], "'novalue'"),
    (["attach-db", "hive", "thrift://h:9083", "sales", "-o", "=x"], "'=x'"),
    (["attach-db", "hive", "thrift://h:9083"], "SOURCE_DB"),
    (["attach-db", "hive", "thrift://h:9083", "sales", "-o", "no.such=1"], "no.such"),
    (["attach-db", "oracle", "x", "sales"], "oracle"),
    ([], "required"),
    (["frobnicate"], "frobnicate"),
    (["ls", "a", "b", "c"], "unrecognized"),
    (["serve", "--rest-port", "70000"], "rest_port"),
    (["serve", "--thrift-port", "x"], "--thrift-port"),
])
def test_invalid_input_exits_2(srv: Server, capsys: pytest.CaptureFixture[str],
                               argv: list[str], fragment: str) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert fragment in one_error_line(err)
    assert srv.service.list_databases() == []


def test_server_down(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://{LOOPBACK}:{free_port()}"
    for argv in (["--server", url, "ls"], ["--server", url, "attach-db", "hive", "u", "db"]):
        code, out, err = run(capsys, *argv)
        assert code == 1 and out == ""
        assert one_error_line(err).startswith(f"catalogctl: error: cannot reach Strata at {url}")


def test_server_from_environment(server: Server, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATALOG_SERVER", f"http://{LOOPBACK}:{free_port()}")
    assert run(capsys, "ls")[0] == 1
    assert run(capsys, "--server", server.url, "ls")[0] == 0  # the flag wins
    monkeypatch.setenv("CATALOG_SERVER", server.url)
    assert run(capsys, "ls")[0] == 0


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "attach-db" in out


# -- the client ----------------------------------------------------------------------------------


def test_client_raises_the_server_error_classes(srv: Server) -> None:
    with CatalogClient(srv.url, timeout=10, token=TOKEN) as client:
        client.attach_database("hive", "thrift://h:9083", "sales")
        with pytest.raises(NoSuchTableError, match=r"^table 'sales.nope' does not exist$"):
            client.get_table("sales", "nope")
        with pytest.raises(InvalidFilterError):
            client.partitions("sales", "events", filter="dt = ")
        assert client.partitions("sales", "events", offset=5, limit=10)["total"] == 6
        srv.source.unreachable = True
        with pytest.raises(UdbError):
            client.sync("sales", "events")
        assert client.health() == {"status": "ok", "databases": 1}


def test_error_from_response_fallbacks() -> None:
    err = error_from_response(404, {"error": {"type": "SomethingNew", "message": "gone"}})
    assert type(err) is NotFoundError and str(err) == "gone"
    err = error_from_response(500, {"error": {"type": "ValueError", "message": "x"}})
    assert type(err) is CatalogError
    err = error_from_response(503, "<html>bad gateway</html>")
    assert type(err) is CatalogError and "503" in str(err)


# -- serve ---------------------------------------------------------------------------------------


def test_serve_runs_until_sigterm(tmp_path: Path) -> None:
    thrift_port, trino_port, rest_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CATALOG_")}
    env.update(CATALOG_DATA_DIR=str(tmp_path / "from-env"), CATALOG_REST_PORT="1",
               PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--host", LOOPBACK,
         "--thrift-port", str(thrift_port), "--trino-thrift-port", str(trino_port),
         "--rest-port", str(rest_port), "--sync-interval", "0"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://{LOOPBACK}:{rest_port}"
        deadline = time.monotonic() + 60
        with CatalogClient(url, timeout=5) as client:
            while True:
                assert proc.poll() is None, proc.communicate()[1]
                try:
                    assert client.health() == {"status": "ok", "databases": 0}
                    break
                except CatalogError:
                    assert time.monotonic() < deadline, "serve did not come up"
                    time.sleep(0.1)
        assert (tmp_path / "from-env" / "catalog.db").exists()  # env used where no flag given
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert f"thrift://{LOOPBACK}:{thrift_port}" in err and url in err
        assert f"thrift://{LOOPBACK}:{trino_port}" in err
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


# -- fs ------------------------------------------------------------------------------------------


def test_fs_mount_ls_stat_cat_unmount(srv: Server, capsys: pytest.CaptureFixture[str],
                                      tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    (lake / "t").mkdir(parents=True)
    (lake / "t" / "a.csv").write_bytes(b"id\n1\n")
    code, out, err = run(capsys, "fs", "mount", "/clilake", str(lake), "-o", "readonly=true")
    assert (code, err) == (0, "") and "mounted file://" in out and "(read-only)" in out
    try:
        code, out, _ = run(capsys, "fs", "mounts")
        assert code == 0 and "/clilake" in out and "readonly=true" in out and "/catalog" in out
        code, out, _ = run(capsys, "fs", "ls", "/clilake/t")
        assert code == 0 and "a.csv" in out and "file" in out
        code, out, _ = run(capsys, "--json", "fs", "stat", "/clilake/t/a.csv")
        assert code == 0 and json.loads(out)["size"] == 5
        code, out, err = run(capsys, "fs", "ls", "/clilake/nope")
        assert code == 1 and "no such directory '/clilake/nope'" in err
        code, _, err = run(capsys, "fs", "mount", "/clilake", str(lake))
        assert code == 1 and "mount point already" in err
        code, _, err = run(capsys, "fs", "mount", "/x", str(tmp_path / "missing"))
        assert code == 1 and "no such directory" in err
        cat = subprocess.run([sys.executable, "-m", "api.cli", "--server", srv.url, "fs", "cat",
                              "/clilake/t/a.csv"], capture_output=True, timeout=60, cwd=REPO)
        assert (cat.returncode, cat.stdout) == (0, b"id\n1\n")
    finally:
        capsys.readouterr()
        code, out, _ = run(capsys, "fs", "unmount", "/clilake")
    assert code == 0 and "unmounted /clilake" in out
    code, _, err = run(capsys, "fs", "unmount", "/catalog")
    assert code == 1 and "own root" in err


def test_fs_cat_streams_bytes(srv: Server, tmp_path: Path) -> None:
    lake = tmp_path / "lake2"
    lake.mkdir()
    payload = bytes(range(256)) * 5000
    (lake / "blob.bin").write_bytes(payload)
    srv.service.mount("/catlake", str(lake))
    try:
        with CatalogClient(srv.url) as client:
            assert b"".join(client.fs_cat("/catlake/blob.bin")) == payload
            with pytest.raises(NotFoundError, match="no such file"):
                b"".join(client.fs_cat("/catlake/none.bin"))
    finally:
        srv.service.unmount("/catlake")


def test_fs_mount_hides_secrets(srv: Server, capsys: pytest.CaptureFixture[str],
                                tmp_path: Path) -> None:
    code, _, err = run(capsys, "fs", "mount", "/s3x", "s3://bucket/p", "-o",
                       "s3.aws-access-key=AK", "-o", "s3.aws-secret-key=TOPSECRET-123",
                       "-o", "s3.endpoint=ftp://nowhere")
    assert code == 2 and "s3.endpoint must be http(s)" in err
    assert "TOPSECRET" not in err


# -- the token and status ------------------------------------------------------------------------


def test_token_from_flag_env_or_data_dir(srv: Server, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    monkeypatch.delenv("CATALOG_API_TOKEN")
    monkeypatch.setenv("CATALOG_DATA_DIR", str(tmp_path / "none"))
    code, out, err = run(capsys, "attach-db", "hive", "thrift://h:9083", "sales")
    assert code == 1 and out == "" and "authentication required" in err
    code, _, err = run(capsys, "--token", "wrong-token", "attach-db", "hive", "thrift://h:9083",
                       "sales")
    assert code == 1 and "invalid API token" in err and "wrong-token" not in err
    (tmp_path / "dd").mkdir()
    (tmp_path / "dd" / "api-token").write_text(TOKEN + "\n")
    code, out, err = run(capsys, "attach-db", "--data-dir", str(tmp_path / "dd"), "hive",
                         "thrift://h:9083", "sales")
    assert (code, err) == (0, "") and "attached 'sales'" in out
    code, _, err = run(capsys, "detach-db", "sales", "--token", TOKEN)
    assert (code, err) == (0, "")
    assert run(capsys, "ls")[0] == 0  # reads need no token


def test_status_text_and_json(srv: Server, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "attach-db", "hive", "thrift://h:9083", "sales")[0] == 0
    srv.source.unreachable = True
    assert run(capsys, "sync", "sales")[0] == 1
    code, out, err = run(capsys, "status")
    assert (code, err) == (0, "")
    assert "listeners:" in out and "(not known)" in out and "scheduler: not running" in out
    line = next(li for li in out.splitlines() if li.strip().startswith("sales"))
    assert "1 error(s)" in line and "off" in line
    assert "last sync errors:" in out and "sales: " in out
    code, out, _ = run(capsys, "--json", "status")
    st = json.loads(out)
    assert code == 0 and st["listeners"] == [] and st["scheduler"] is None
    assert [d["name"] for d in st["databases"] if d["name"] == "sales"] == ["sales"]
