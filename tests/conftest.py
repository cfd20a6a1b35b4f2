"""Shared pytest fixtures: a real Hive Metastore 2.3, a Spark SQL worker, source tables."""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hms import HiveMetastore
from tests.support.source_tables import SourceDatabase, build_source_database
from tests.support.spark import SparkSql

log = logging.getLogger("tests.harness")


@pytest.fixture(scope="session")
def hms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HiveMetastore]:
    """A started HMS 2.3.10 (embedded Derby) on 127.0.0.1, stopped at session end."""
    server = HiveMetastore(tmp_path_factory.mktemp("hms"))
    started = time.monotonic()
    server.start()
    log.info("HMS started on %s in %.1fs", server.uri, time.monotonic() - started)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def source_spark(
    hms: HiveMetastore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SparkSql]:
    """A Spark SQL worker whose catalog is the ``hms`` fixture."""
    started = time.monotonic()
    spark = SparkSql(hms.uri, tmp_path_factory.mktemp("spark-source"))
    log.info("Spark worker ready in %.1fs", time.monotonic() - started)
    try:
        yield spark
    finally:
        spark.close()


@pytest.fixture(scope="session")
def source_db(source_spark: SparkSql, tmp_path_factory: pytest.TempPathFactory) -> SourceDatabase:
    """The ``sales`` and ``other`` source databases built in ``hms`` through Spark."""
    started = time.monotonic()
    data_dir: Path = tmp_path_factory.mktemp("source-data")
    built = build_source_database(source_spark, data_dir)
    log.info("source tables built in %.1fs", time.monotonic() - started)
    return built
pytest_plugins = ["tests.support.s3_fixtures"]
