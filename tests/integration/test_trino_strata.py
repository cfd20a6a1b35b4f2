"""A real Trino 476 reads databases that Strata attached from a real Hive Metastore.

One Trino serves the module with three catalogs, all generated from the shipped
``trino-plugin-config/hive.properties`` (only ``hive.metastore.uri`` differs):

* ``strata``: Strata's Trino listener (``ClientView.TRINO``: ``file:`` shown as ``local:///``),
  with ``sales``, ``sales`` again as ``sales_renamed``, and ``other`` attached from the ``hms``
  fixture (and, for the Hive 4 tests, a Hive 4.0.1 ``sales`` as ``sales_hive4``);
* ``strata_tapped``: the same listener behind a :class:`ThriftTap`, to see which partitions
  Trino asks for;
* ``hms``: the original HMS 2.3 directly, for metadata comparisons only: Trino 476 reads its
  ``file:`` tables as empty (see test_trino_smoke.py).

Rows read through ``strata`` must equal what Spark reads through the original HMS.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from catalog.serving import ClientView
from api.thrift.server import ThriftServer
from catalog.config import Settings
from catalog.service import CatalogService
from tests.support.hms import HiveMetastore
from tests.support.hms4 import Hive4Metastore, hive4_unavailable_reason
from tests.support.hms_populate import (
    CUSTOMERS_ROWS,
    EVENTS_ROWS,
    ORDERS_ROWS,
    PARTITIONS,
    TABLES,
    populate_via_thrift,
    pyarrow_available,
)
from tests.support.source_tables import SALES, SourceDatabase
from tests.support.spark import SparkSql
from tests.support.thrift_tap import ThriftTap, named_args
from tests.support.trino import (
    TrinoQueryError,
    TrinoServer,
    trino_test_marks,
)

pytestmark = trino_test_marks()

RENAMED = "sales_renamed"
HIVE4_DB = "sales_hive4"
PRUNED = (2024, "west")  # the partition the pruning test selects


@dataclass
class Env:
    trino: TrinoServer
    strata: ThriftServer
    service: CatalogService
    tap: ThriftTap
    source: SourceDatabase


@pytest.fixture(scope="module")
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
        hms: HiveMetastore) -> Iterator[Env]:
    work = tmp_path_factory.mktemp("trino-strata")
    service = CatalogService(Settings(data_dir=work / "strata"))
    strata = ThriftServer(service, "127.0.0.1", 0, view=ClientView.TRINO).start()
    tap = ThriftTap("127.0.0.1", strata.port).start()
    trino = TrinoServer(work / "trino", {
        "strata": f"thrift://127.0.0.1:{strata.port}",
        "strata_tapped": f"thrift://127.0.0.1:{tap.port}",
        "hms": hms.uri,
    })
    try:
        # Trino boots (~30 s) while Spark builds the source tables, if they are not built yet.
        with ThreadPoolExecutor(1) as pool:
            booting = pool.submit(trino.start)
            source: SourceDatabase = request.getfixturevalue("source_db")
            service.attach_database("hive", hms.uri, source.db)
            service.attach_database("hive", hms.uri, source.db, name=RENAMED)
            service.attach_database("hive", hms.uri, source.other_db)
            booting.result()
        print(f"\nTrino {trino.url} up in {trino.startup_seconds:.1f}s; Strata on {strata.port}")
        yield Env(trino, strata, service, tap, source)
    finally:
        print(f"\nStrata unknown_methods (Invalid method name answers): "
              f"{dict(strata.unknown_methods)}\nStrata calls: {dict(strata.calls)}")
        trino.stop()
        tap.stop()
        strata.stop()
        service.close()


def _norm(rows: list[tuple[Any, ...]] | list[list[Any]]) -> list[tuple[Any, ...]]:
    """Rows as tuples, DOUBLEs rounded to 9 places.

    Trino's JSON protocol and the Spark worker agree on every other type (DECIMAL and DATE as
    strings, integers as ints, NULL as None); only DOUBLE sums may differ in the last bits
    because the engines add in different orders.
    """
    return [tuple(round(v, 9) if isinstance(v, float) else v for v in row) for row in rows]


# {s} is the sales schema, {o} the other one: "strata.sales" for Trino, "sales" for Spark.
# Spark ignores skip.header.line.count (orders_text's header lines are rows of NULLs with
# note='note' there), so queries on orders_text exclude rows without an order_id.
QUERIES = [
    "SELECT * FROM {s}.orders_text WHERE order_id IS NOT NULL ORDER BY order_id",
    "SELECT * FROM {s}.customers_csv ORDER BY customer_id",
    "SELECT * FROM {s}.items_parquet ORDER BY item_id",
    "SELECT * FROM {s}.sales_part ORDER BY sale_id",
    "SELECT order_date, amount * 2, note FROM {s}.orders_text "
    "WHERE order_date BETWEEN DATE '2024-01-05' AND DATE '2024-02-03' ORDER BY order_id",
    "SELECT sale_id, revenue, year, region FROM {s}.sales_part "
    "WHERE year = 2024 AND region = 'west' ORDER BY sale_id",
    "SELECT year, region, count(*), round(sum(revenue), 2), avg(units) FROM {s}.sales_part "
    "WHERE year >= 2023 AND region <> 'north' GROUP BY year, region ORDER BY year, region",
    "SELECT * FROM {s}.big_orders ORDER BY order_id",
    "SELECT c.name, count(*), sum(o.amount) FROM {s}.orders_text o "
    "JOIN {s}.customers_csv c ON o.customer_id = CAST(c.customer_id AS INT) "
    "WHERE o.note IS NOT NULL GROUP BY c.name ORDER BY c.name",
    "SELECT count(*) FROM {s}.orders_text "
    "WHERE order_id IS NOT NULL AND (customer_id IS NULL OR amount IS NULL)",
    "SELECT s.region, r.manager, sum(s.units) FROM {s}.sales_part s "
    "JOIN {o}.regions r ON s.region = r.region GROUP BY s.region, r.manager ORDER BY 1",
    "SELECT i.sku, sum(i.qty * i.price), max(o.order_date) FROM {s}.items_parquet i "
    "JOIN {s}.orders_text o ON i.order_id = o.order_id GROUP BY i.sku ORDER BY i.sku",
    "SELECT b.order_id, b.amount, c.city FROM {s}.big_orders b "
    "LEFT JOIN {s}.customers_csv c ON b.customer_id = CAST(c.customer_id AS INT) "
    "ORDER BY b.order_id",
]


def _spark(spark: SparkSql, query: str, source: SourceDatabase) -> list[tuple[Any, ...]]:
    return _norm(spark.sql(query.format(s=source.db, o=source.other_db)))


def _trino(env: Env, query: str, db: str) -> list[tuple[Any, ...]]:
    return _norm(env.trino.query(query.format(s=f"strata.{db}",
                                              o=f"strata.{env.source.other_db}")))


# -- metadata ------------------------------------------------------------------------------------


def test_show_schemas_lists_the_attached_databases(env: Env) -> None:
    shown = {r[0] for r in env.trino.query("SHOW SCHEMAS FROM strata")}
    in_hms = {r[0] for r in env.trino.query("SHOW SCHEMAS FROM hms")}
    attached = {env.source.db, RENAMED, env.source.other_db}
    assert shown - {HIVE4_DB} == attached | {"default", "information_schema"}
    assert attached - {RENAMED} <= in_hms and RENAMED not in in_hms


def test_show_tables_equals_the_metastores(env: Env) -> None:
    src = env.source
    in_hms = sorted(r[0] for r in env.trino.query(f"SHOW TABLES FROM hms.{src.db}"))
    assert in_hms == sorted(src.tables + src.views)
    for db in (src.db, RENAMED):
        assert sorted(r[0] for r in env.trino.query(f"SHOW TABLES FROM strata.{db}")) == in_hms
    assert env.trino.query(f"SHOW TABLES FROM strata.{src.other_db}") == \
        env.trino.query(f"SHOW TABLES FROM hms.{src.other_db}") == [(t,) for t in src.other_tables]


def test_describe_equals_the_metastore(env: Env) -> None:
    src = env.source
    for table in src.tables + src.views:
        expected = env.trino.query(f"DESCRIBE hms.{src.db}.{table}")
        assert expected, table
        assert env.trino.query(f"DESCRIBE strata.{src.db}.{table}") == expected, table
        assert env.trino.query(f"DESCRIBE strata.{RENAMED}.{table}") == expected, table
    for table in src.other_tables:
        assert env.trino.query(f"DESCRIBE strata.{src.other_db}.{table}") == \
            env.trino.query(f"DESCRIBE hms.{src.other_db}.{table}")


def _ddl(env: Env, statement: str, catalog: str, db: str, name: str) -> str:
    """The DDL with the catalog/schema prefix and Strata's ``local:///`` location normalised."""
    text = env.trino.query(f"{statement} {catalog}.{db}.{name}")[0][0]
    text = text.replace(f" {catalog}.{db}.{name} ", f" {name} ", 1)
    text = text.replace(f'"{db}".', '"<db>".')  # view bodies name the schema
    return text.replace("external_location = 'local:///", "external_location = 'file:/")


def test_show_create_table_equals_the_metastore(env: Env) -> None:
    src = env.source
    for table in src.tables:
        expected = _ddl(env, "SHOW CREATE TABLE", "hms", src.db, table)
        assert "external_location = 'file:/" in expected, expected
        served = env.trino.query(f"SHOW CREATE TABLE strata.{src.db}.{table}")[0][0]
        assert f"external_location = 'local://{src.data_dir}/{table}'" in served
        assert _ddl(env, "SHOW CREATE TABLE", "strata", src.db, table) == expected
        assert _ddl(env, "SHOW CREATE TABLE", "strata", RENAMED, table) == expected
    for view in src.views:
        expected = _ddl(env, "SHOW CREATE VIEW", "hms", src.db, view)
        assert _ddl(env, "SHOW CREATE VIEW", "strata", src.db, view) == expected
        assert _ddl(env, "SHOW CREATE VIEW", "strata", RENAMED, view) == expected


def test_show_stats_equal_the_metastore_and_come_from_its_column_statistics(env: Env) -> None:
    src = env.source
    for name in src.tables + src.views:
        expected = env.trino.query(f"SHOW STATS FOR hms.{src.db}.{name}")
        assert env.trino.query(f"SHOW STATS FOR strata.{src.db}.{name}") == expected, name
        assert env.trino.query(f"SHOW STATS FOR strata.{RENAMED}.{name}") == expected, name
    # column_name, data_size, distinct_values_count, nulls_fraction, row_count, low, high
    stats = {r[0]: r for r in env.trino.query(f"SHOW STATS FOR strata.{src.db}.orders_text")}
    assert stats[None][4] == src.row_counts["orders_text"]
    assert stats["order_id"][2:4] == (20.0, 0.0)
    assert stats["order_id"][5:7] == ("1", "20")
    assert stats["customer_id"][3] == pytest.approx(1 / 20)  # one NULL customer in 20 orders
    assert stats["note"][1] is not None and stats["note"][3] > 0
    part = {r[0]: r for r in env.trino.query(f"SHOW STATS FOR strata.{src.db}.sales_part")}
    assert part[None][4] == len(SALES)
    assert part["revenue"][2] is not None  # from the year=2023/region=east partition's stats


# -- data ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("query", QUERIES)
def test_rows_equal_spark_through_the_original_hms(query: str, env: Env,
                                                   source_spark: SparkSql) -> None:
    expected = _spark(source_spark, query, env.source)
    assert expected, "the source query must return rows for the comparison to mean something"
    assert _trino(env, query, env.source.db) == expected
    assert _trino(env, query, RENAMED) == expected


def test_partition_filter_reads_only_the_matching_partition(env: Env) -> None:
    db = env.source.db
    year, region = PRUNED
    where = f"year = {year} AND region = '{region}'"
    wanted = [r for r in SALES if (r[4], r[5]) == PRUNED]
    assert 0 < len(wanted) < len(SALES)

    env.trino.query("CALL strata_tapped.system.flush_metadata_cache()")
    mark = env.tap.mark()
    plan = env.trino.query(
        f"EXPLAIN ANALYZE SELECT sale_id FROM strata_tapped.{db}.sales_part WHERE {where}")[0][0]
    scanned = re.findall(r"Input: (\d+) rows \([^)]*\), Physical input", plan)
    assert scanned == [str(len(wanted))], plan

    fetched = [named_args(r).names for r in env.tap.records_since(mark)
               if r.name == "get_partitions_by_names"]
    assert fetched and all(names == [f"year={year}/region={region}"] for names in fetched), fetched

    paths = env.trino.query(f'SELECT "$path" FROM strata.{db}.sales_part WHERE {where}')
    partition_dir = f"local://{env.source.data_dir}/sales_part/year={year}/region={region}/"
    assert len(paths) == len(wanted)
    assert all(p.startswith(partition_dir) for (p,) in paths), paths


def test_missing_schema_and_table_are_trinos_usual_errors(env: Env) -> None:
    for sql, error in [
        ("SHOW TABLES FROM strata.no_such_schema", "SCHEMA_NOT_FOUND"),
        ("SELECT * FROM strata.no_such_schema.orders_text", "SCHEMA_NOT_FOUND"),
        (f"SELECT * FROM strata.{env.source.db}.no_such_table", "TABLE_NOT_FOUND"),
        (f"DESCRIBE strata.{RENAMED}.no_such_table", "TABLE_NOT_FOUND"),
    ]:
        with pytest.raises(TrinoQueryError) as info:
            env.trino.query(sql)
        assert info.value.error_name == error, (sql, info.value)
        assert "no_such" in info.value.message


def test_eight_concurrent_queries_all_answer_right(env: Env, source_spark: SparkSql) -> None:
    jobs = [(q, (env.source.db, RENAMED)[i % 2]) for i, q in enumerate(QUERIES[:8])]
    expected = [_spark(source_spark, q, env.source) for q, _ in jobs]
    env.trino.query("CALL strata.system.flush_metadata_cache()")  # every query asks Strata
    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(lambda job: _trino(env, *job), jobs))
    for (query, db), got, want in zip(jobs, answers, expected, strict=True):
        assert got == want, (db, query)


def test_writes_through_trino_are_refused_as_read_only(env: Env) -> None:
    db = env.source.db
    for sql in ("CREATE SCHEMA strata.should_not_exist",
                f"CREATE TABLE strata.{db}.should_not_exist (x integer)"):
        with pytest.raises(TrinoQueryError, match="read-only") as info:
            env.trino.query(sql)
        assert info.value.error_name == "HIVE_METASTORE_ERROR"
    # Trino reports a failed drop without the metastore's message; the table stays.
    with pytest.raises(TrinoQueryError, match="drop table"):
        env.trino.query(f"DROP TABLE strata.{db}.orders_text")
    assert "should_not_exist" not in {r[0] for r in env.trino.query("SHOW SCHEMAS FROM strata")}
    assert env.trino.query(f"SELECT count(*) FROM strata.{db}.orders_text") == \
        [(env.source.row_counts["orders_text"],)]


# -- Hive 4 as the source ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hive4_attached(env: Env, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A Hive 4.0.1 metastore filled by populate_via_thrift, attached as ``sales_hive4``."""
    reason = hive4_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("hive4")
    with Hive4Metastore(work / "hms4") as hive4:
        populate_via_thrift(hive4.uri, work / "data", db="sales")
        env.service.attach_database("hive", hive4.uri, "sales", name=HIVE4_DB)
        # Trino caches the schema list (hive.metastore-cache-ttl=30s in the shipped config).
        env.trino.query("CALL strata.system.flush_metadata_cache()")
        yield work / "data"


def _hive4_tables() -> list[str]:
    return sorted(n for n, spec in TABLES.items() if pyarrow_available() or not spec.needs_pyarrow)


def test_hive4_tables_are_listed(env: Env, hive4_attached: Path) -> None:
    assert HIVE4_DB in {r[0] for r in env.trino.query("SHOW SCHEMAS FROM strata")}
    assert sorted(r[0] for r in env.trino.query(f"SHOW TABLES FROM strata.{HIVE4_DB}")) == \
        _hive4_tables()


def test_hive4_text_csv_and_parquet_tables(env: Env, hive4_attached: Path) -> None:
    q = env.trino.query
    # header line skipped, \N read as NULL, DECIMAL and DATE as strings
    assert q(f"SELECT * FROM strata.{HIVE4_DB}.orders_text ORDER BY order_id") == ORDERS_ROWS
    assert q(f"SELECT * FROM strata.{HIVE4_DB}.customers_csv ORDER BY id") == CUSTOMERS_ROWS
    if "events_parquet" in _hive4_tables():
        assert q(f"SELECT * FROM strata.{HIVE4_DB}.events_parquet ORDER BY event_id") == \
            EVENTS_ROWS


def test_hive4_partitioned_table_with_a_filter(env: Env, hive4_attached: Path) -> None:
    rows = env.trino.query(f"SELECT *, \"$path\" FROM strata.{HIVE4_DB}.sales_part "
                           "WHERE year = 2024 AND region = 'eu' ORDER BY id")
    assert [r[:-1] for r in rows] == [(*r, 2024, "eu") for r in PARTITIONS[(2024, "eu")]]
    assert all(r[-1].startswith(f"local://{hive4_attached}/sales_part/year=2024/region=eu/")
               for r in rows)
    total = sum(len(rows) for rows in PARTITIONS.values())
    assert env.trino.query(f"SELECT count(*) FROM strata.{HIVE4_DB}.sales_part") == [(total,)]


def test_hive4_view(env: Env, hive4_attached: Path) -> None:
    expected = [r[:3] for r in ORDERS_ROWS if Decimal(str(r[2])) > 100]
    assert expected
    assert env.trino.query(f"SELECT * FROM strata.{HIVE4_DB}.big_orders ORDER BY order_id") == \
        expected


# -- last: what Trino needed from Strata ---------------------------------------------------------


def test_trino_called_no_method_strata_lacks(env: Env) -> None:
    """Every Thrift call Trino made in this module was one Strata serves (none fell back)."""
    assert sum(env.strata.calls.values()) > 0
    assert dict(env.strata.unknown_methods) == {}
