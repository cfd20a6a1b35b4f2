"""``serve.mode=cached``: a real Trino 476 reads a database through Strata's S3 gateway.

The lake is a local folder of CSV tables (one partitioned) that no mount covers: attaching with
``serve.mode=cached`` mounts it read-only automatically, and every table and partition location is
served as ``s3://<bucket>/<key>`` under the gateway. Trino (metadata from Strata's Thrift listener,
data through its native S3 file system pointed at the gateway, the shipped
``trino-plugin-config/hive-cached.properties``) must return the same rows as DuckDB reading the
files directly, before and after a transformation (whose Parquet copy is served as
``s3://catalog/...``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from api.s3.app import S3Gateway
from api.s3.auth import Credentials
from api.thrift.server import ThriftServer
from catalog.config import Settings
from catalog.exceptions import InvalidOptionError
from catalog.service import CatalogService
from catalog.serving import ClientView
from tests.support.ports import LOOPBACK
from tests.support.s3_gateway import GatewayServer
from tests.support.trino import TrinoServer, trino_test_marks

pytestmark = [*trino_test_marks(), pytest.mark.integration]
ACCESS, SECRET, REGION = "strata-test-key", "strata-test-secret-0123456789", "us-east-1"
REPO = Path(__file__).resolve().parents[2]


def _lake(root: Path) -> Path:
    sales = root / "sales"
    for region in ("east", "west"):
        d = sales / f"region={region}"
        d.mkdir(parents=True)
        for i in range(5):
            rows = "".join(f"{i * 100 + j},{(j % 9) * 1.25},2024-05-{1 + j % 28:02d}\n"
                           for j in range(100))
            (d / f"f{i}.csv").write_text("id,amount,day\n" + rows)
    items = root / "items"
    items.mkdir()
    for i in range(4):
        (items / f"i{i}.csv").write_text(
            "item,price\n" + "".join(f"{i * 10 + j},{j * 0.5}\n" for j in range(10)))
    return root


@dataclass
class Env:
    service: CatalogService
    trino: TrinoServer
    lake: Path


def _catalog_file() -> dict[str, str | None]:
    """The shipped cached-mode catalog file, with this test's endpoint and keys."""
    props: dict[str, str | None] = {}
    for line in (REPO / "trino-plugin-config" / "hive-cached.properties").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            props[key.strip()] = value.strip()
    return props


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    work = tmp_path_factory.mktemp("serve-cached")
    lake = _lake(work / "lake")
    service = CatalogService(Settings(data_dir=work / "state", sync_interval_s=0))
    gateway_app = S3Gateway(service.fs, credentials=Credentials(ACCESS, SECRET, REGION),
                            region=REGION, max_object_bytes=1 << 30, spool_dir=work / "spool")
    thrift = ThriftServer(service, LOOPBACK, 0, view=ClientView.TRINO).start()
    try:
        with GatewayServer(gateway_app) as gateway:
            shipped = _catalog_file()
            assert shipped["fs.native-s3.enabled"] == "true"
            overrides = {k: v for k, v in shipped.items() if k != "hive.metastore.uri"}
            overrides.update({"s3.endpoint": gateway.endpoint, "s3.aws-access-key": ACCESS,
                              "s3.aws-secret-key": SECRET,
                              "hive.metastore-cache-ttl": None,
                              "hive.metastore-refresh-interval": None})
            with TrinoServer(work / "trino", {"strata": f"thrift://{LOOPBACK}:{thrift.port}"},
                             catalog_overrides=overrides) as trino:
                service.attach_database("directory", lake.as_uri(), "lake",
                                        options={"serve.mode": "cached"})
                service.transforms.start()
                yield Env(service, trino, lake)
    finally:
        thrift.stop()
        service.close()


def _duck(lake: Path, table: str, sql: str) -> list[tuple[object, ...]]:
    con = duckdb.connect()
    con.execute(f"CREATE VIEW t AS SELECT * FROM read_csv('{lake}/{table}/**/*.csv', "
                "header=true, hive_partitioning=true)")
    return sorted(con.execute(sql).fetchall())


QUERIES = {
    "sales": ("SELECT region, count(*), sum(id), round(sum(amount), 2) FROM {t} GROUP BY region",
              "SELECT region, count(*), sum(id), round(sum(amount), 2) FROM t GROUP BY region"),
    "items": ("SELECT count(*), sum(item), sum(price) FROM {t}",
              "SELECT count(*), sum(item), sum(price) FROM t"),
}


def _check(env: Env, table: str) -> None:
    trino_sql, duck_sql = QUERIES[table]
    got = sorted(tuple(float(v) if isinstance(v, float) else v for v in r)
                 for r in env.trino.query(trino_sql.format(t=f"strata.lake.{table}")))
    assert got == _duck(env.lake, table, duck_sql)


def test_locations_are_served_under_the_gateway(env: Env) -> None:
    mounts = [m for m in env.service.fs.mounts() if not m.builtin]
    assert len(mounts) == 1 and mounts[0].readonly  # the lake, mounted automatically
    bucket = mounts[0].path.lstrip("/")
    table = env.service.served_table("lake", "items", ClientView.TRINO)
    assert table.sd.location == f"s3://{bucket}/items"
    parts = env.service.served_partitions("lake", "sales", ["region=east"])
    assert parts[0][1].sd.location == f"s3://{bucket}/sales/region=east"
    paths = env.trino.query('SELECT DISTINCT "$path" FROM strata.lake.items')
    assert paths and all(p[0].startswith(f"s3://{bucket}/items/") for p in paths)


@pytest.mark.parametrize("table", ["sales", "items"])
def test_trino_reads_the_source_through_the_gateway(env: Env, table: str) -> None:
    _check(env, table)


@pytest.mark.parametrize("table", ["sales", "items"])
def test_trino_reads_the_transformed_copy_through_the_gateway(env: Env, table: str) -> None:
    job = env.service.transforms.wait(
        env.service.transforms.submit("lake", table, "file.size.min=1KB").id, 120)
    assert job.state == "succeeded", job.error
    env.trino.execute("CALL strata.system.flush_metadata_cache()")
    _check(env, table)
    paths = env.trino.query(f'SELECT DISTINCT "$path" FROM strata.lake.{table}')
    assert paths and all(p[0].startswith(f"s3://catalog/lake/tables/{table}/_transformed/")
                         and p[0].endswith(".parquet") for p in paths), paths


def test_bad_serve_mode_is_refused(env: Env) -> None:
    with pytest.raises(InvalidOptionError, match="serve.mode"):
        env.service.attach_database("directory", env.lake.as_uri(), "lake", name="other",
                                    options={"serve.mode": "sometimes"})
