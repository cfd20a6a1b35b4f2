"""A real Hive Metastore attached to Strata, read by a real Spark through Strata's Thrift port.

Every query runs twice: by a Spark pointed at the original HMS and by a Spark pointed at Strata;
the answers must be equal (also for the database attached under another name).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hmsclient.genthrift.hive_metastore import ttypes

from api.thrift.server import ThriftServer
from catalog.config import Settings
from catalog.exceptions import AlreadyExistsError, NoSuchDatabaseError, UdbUnavailableError
from catalog.service import CatalogService
from tests.support.hms import HiveMetastore, open_client
from tests.support.ports import free_port
from tests.support.source_tables import SourceDatabase
from tests.support.spark import SparkSql, SparkSqlError

pytestmark = pytest.mark.integration

RENAMED = "sales_renamed"


@pytest.fixture(scope="module")
def strata(tmp_path_factory: pytest.TempPathFactory, hms: HiveMetastore,
           source_db: SourceDatabase) -> Iterator[ThriftServer]:
    service = CatalogService(Settings(data_dir=tmp_path_factory.mktemp("strata-state")))
    service.attach_database("hive", hms.uri, source_db.db)
    service.attach_database("hive", hms.uri, source_db.db, name=RENAMED)
    service.attach_database("hive", hms.uri, source_db.other_db)
    server = ThriftServer(service, "127.0.0.1", 0).start()
    yield server
    server.stop()
    service.close()


@pytest.fixture(scope="module")
def strata_spark(tmp_path_factory: pytest.TempPathFactory,
                 strata: ThriftServer) -> Iterator[SparkSql]:
    with SparkSql(f"thrift://127.0.0.1:{strata.port}",
                  tmp_path_factory.mktemp("spark-on-strata")) as spark:
        yield spark


QUERIES = [
    "SELECT * FROM {db}.orders_text ORDER BY order_id",
    "SELECT * FROM {db}.customers_csv ORDER BY customer_id",
    "SELECT * FROM {db}.items_parquet ORDER BY item_id",
    "SELECT * FROM {db}.sales_part ORDER BY sale_id",
    "SELECT sale_id, revenue FROM {db}.sales_part WHERE year = 2024 AND region = 'west' "
    "ORDER BY sale_id",
    "SELECT year, region, count(*), round(sum(revenue), 2) FROM {db}.sales_part "
    "WHERE year >= 2023 AND region <> 'north' GROUP BY year, region ORDER BY year, region",
    "SELECT * FROM {db}.big_orders ORDER BY order_id",
    "SELECT c.name, count(*), sum(o.amount) FROM {db}.orders_text o "
    "JOIN {db}.customers_csv c ON o.customer_id = CAST(c.customer_id AS INT) "
    "WHERE o.note IS NOT NULL GROUP BY c.name ORDER BY c.name",
    "SELECT count(*) FROM {db}.orders_text WHERE customer_id IS NULL OR amount IS NULL",
    "SELECT s.region, r.manager, sum(s.units) FROM {db}.sales_part s "
    "JOIN other.regions r ON s.region = r.region GROUP BY s.region, r.manager ORDER BY 1",
]


@pytest.mark.parametrize("query", QUERIES)
def test_spark_answers_equal_through_strata(query: str, source_spark: SparkSql,
                                            strata_spark: SparkSql,
                                            source_db: SourceDatabase) -> None:
    expected = source_spark.sql(query.format(db=source_db.db))
    assert expected, "the source query must return rows for the comparison to mean something"
    assert strata_spark.sql(query.format(db=source_db.db)) == expected
    assert strata_spark.sql(query.format(db=RENAMED)) == expected


def test_spark_metadata_statements(source_spark: SparkSql, strata_spark: SparkSql,
                                   source_db: SourceDatabase) -> None:
    db = source_db.db
    shown = {r[0] for r in strata_spark.sql("SHOW DATABASES")}
    assert {db, RENAMED, source_db.other_db} <= shown
    for stmt in (f"SHOW TABLES IN {db}", f"SHOW PARTITIONS {db}.sales_part",
                 f"DESCRIBE {db}.orders_text", f"DESCRIBE {db}.sales_part",
                 f"SHOW PARTITIONS {db}.sales_part PARTITION (year=2024)"):
        assert strata_spark.sql(stmt) == source_spark.sql(stmt), stmt
    renamed_tables = sorted(r[1] for r in strata_spark.sql(f"SHOW TABLES IN {RENAMED}"))
    assert renamed_tables == sorted(source_db.tables + source_db.views)


def test_missing_objects_are_spark_errors(strata_spark: SparkSql) -> None:
    with pytest.raises(SparkSqlError, match="(?i)not found|cannot be found"):
        strata_spark.sql("SELECT * FROM sales.no_such_table")
    with pytest.raises(SparkSqlError, match="(?i)not found|cannot be found"):
        strata_spark.sql("SHOW TABLES IN no_such_db")


def test_writes_through_strata_are_refused(strata_spark: SparkSql) -> None:
    with pytest.raises(SparkSqlError, match="read-only"):
        strata_spark.sql("CREATE DATABASE should_not_exist")


def test_thrift_objects_equal_the_metastores(hms: HiveMetastore, strata: ThriftServer,
                                             source_db: SourceDatabase) -> None:
    origin = hms.client()
    ours = open_client("127.0.0.1", strata.port)
    try:
        db = source_db.db
        for name in source_db.tables + source_db.views:
            assert ours.get_table(db, name) == origin.get_table(db, name), name
        assert ours.get_partitions(db, "sales_part", -1) == origin.get_partitions(
            db, "sales_part", -1)
        filt = "year = 2024 and region >= \"north\""
        assert ours.get_partitions_by_filter(db, "sales_part", filt, -1) == \
            origin.get_partitions_by_filter(db, "sales_part", filt, -1)
        names = origin.get_partition_names(db, "sales_part", -1)
        assert ours.get_partition_names(db, "sales_part", -1) == names
        cols = ["order_id", "amount", "order_date", "note"]
        req = ttypes.TableStatsRequest(dbName=db, tblName="orders_text", colNames=cols)
        ours_stats = ours.get_table_statistics_req(req).tableStats
        assert ours_stats and ours_stats == origin.get_table_statistics_req(req).tableStats
        preq = ttypes.PartitionsStatsRequest(dbName=db, tblName="sales_part",
                                          colNames=["sale_id", "revenue"], partNames=names)
        assert ours.get_partitions_statistics_req(preq) == \
            origin.get_partitions_statistics_req(preq)
        view = ours.get_table(RENAMED, "big_orders")
        assert f"`{RENAMED}`" in view.viewExpandedText and "`sales`" not in view.viewExpandedText
    finally:
        origin.close()
        ours.close()


def test_attach_errors_leave_nothing(tmp_path: Path, hms: HiveMetastore,
                                     source_db: SourceDatabase) -> None:
    service = CatalogService(Settings(data_dir=tmp_path, udb_retries=1, udb_timeout_s=5))
    with pytest.raises(NoSuchDatabaseError):
        service.attach_database("hive", hms.uri, "no_such_db")
    with pytest.raises(UdbUnavailableError, match="unreachable"):
        service.attach_database("hive", f"thrift://127.0.0.1:{free_port()}", source_db.db)
    service.attach_database("hive", hms.uri, source_db.other_db)
    with pytest.raises(AlreadyExistsError):
        service.attach_database("hive", hms.uri, source_db.other_db)
    assert service.list_databases() == [source_db.other_db]
    service.close()


def test_sync_sees_metadata_and_data_changes(tmp_path: Path, hms: HiveMetastore,
                                             source_spark: SparkSql,
                                             source_db: SourceDatabase) -> None:
    service = CatalogService(Settings(data_dir=tmp_path))
    service.attach_database("hive", hms.uri, source_db.other_db)
    assert service.sync(source_db.other_db).tables.unchanged == 1
    # data change only: a new file under the unchanged location
    regions_dir = source_db.data_dir / "regions"
    extra = regions_dir / "more.txt"
    extra.write_text("south,Barbara\n")
    try:
        report = service.sync(source_db.other_db)
        assert report.tables.updated == 1, report
        # metadata change: a new table in the source
        source_spark.sql(f"CREATE TABLE {source_db.other_db}.added_later (x INT) STORED AS PARQUET")
        report = service.sync(source_db.other_db)
        assert report.tables.added == 1 and report.tables.unchanged == 1, report
        source_spark.sql(f"DROP TABLE {source_db.other_db}.added_later")
        assert service.sync(source_db.other_db).tables.removed == 1
    finally:
        extra.unlink()
        service.close()
