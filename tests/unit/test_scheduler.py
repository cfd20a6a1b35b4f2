"""Periodic sync: changes in the under-database show up without anyone asking."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from catalog.config import Settings
from catalog.scheduler import SyncScheduler
from catalog.service import CatalogService
from tests.support.fake_udb import sample_source


def _wait_for(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_periodic_sync_picks_up_changes_and_survives_outages(tmp_path: Path) -> None:
    source = sample_source()
    service = CatalogService(Settings(data_dir=tmp_path, sync_interval_s=0),
                             udb_factory=source.factory)
    service.attach_database("fake", "fake://", "sales", options={"sync.interval": "0.3"})
    service.attach_database("fake", "fake://", "sales", name="manual")  # interval 0: never
    scheduler = SyncScheduler(service, refresh_s=0.2)
    scheduler.start()
    try:
        source.add_table("sales", "late_arrival")
        assert _wait_for(lambda: "late_arrival" in service.list_tables("sales"))
        assert "late_arrival" not in service.list_tables("manual")

        source.unreachable = True
        assert _wait_for(lambda: bool((service.database_record("sales").last_sync or {})
                                      .get("errors")))
        assert "late_arrival" in service.list_tables("sales")  # last good state still served

        source.unreachable = False
        source.drop_table("sales", "late_arrival")
        assert _wait_for(lambda: "late_arrival" not in service.list_tables("sales"))
    finally:
        scheduler.stop()
        service.close()


def _job_ids(scheduler: SyncScheduler) -> list[str]:
    return [job.id for job in scheduler._scheduler.get_jobs()]


def _counting_syncs(service: CatalogService) -> list[str]:
    """Record the database of every ``service.sync`` call (the calls still go through)."""
    calls: list[str] = []
    real_sync = service.sync

    def sync(db: str, table: str | None = None):  # type: ignore[no-untyped-def]
        calls.append(db)
        return real_sync(db, table)

    service.sync = sync  # type: ignore[method-assign]
    return calls


def test_detached_database_is_not_retried(tmp_path: Path) -> None:
    source = sample_source()
    service = CatalogService(Settings(data_dir=tmp_path, sync_interval_s=0),
                             udb_factory=source.factory)
    service.attach_database("fake", "fake://", "sales", options={"sync.interval": "0.2"})
    service.attach_database("fake", "fake://", "sales", name="kept",
                            options={"sync.interval": "0.2"})
    source.unreachable = True  # every sync fails from now on
    calls = _counting_syncs(service)
    scheduler = SyncScheduler(service, refresh_s=3600)  # refresh() by hand below
    scheduler.start()
    try:
        assert _wait_for(lambda: "retry:sales" in _job_ids(scheduler))
        service.detach_database("sales")
        scheduler.refresh()
        assert not [j for j in _job_ids(scheduler) if "sales" in j], _job_ids(scheduler)
        attempts = calls.count("sales")
        time.sleep(1.5)  # several retry delays (the interval, 0.2 s)
        assert calls.count("sales") == attempts
        assert not [j for j in _job_ids(scheduler) if "sales" in j], _job_ids(scheduler)
        assert "sales" not in scheduler._failures
        assert "retry:kept" in _job_ids(scheduler)  # still attached: still retried
    finally:
        scheduler.stop()
        service.close()


def test_retry_dropped_when_periodic_sync_disabled(tmp_path: Path) -> None:
    source = sample_source()
    service = CatalogService(Settings(data_dir=tmp_path, sync_interval_s=0),
                             udb_factory=source.factory)
    service.attach_database("fake", "fake://", "sales", options={"sync.interval": "0.2"})
    source.unreachable = True
    scheduler = SyncScheduler(service, refresh_s=3600)
    scheduler.start()
    try:
        assert _wait_for(lambda: "retry:sales" in _job_ids(scheduler))
        source.unreachable = False
        service.detach_database("sales")  # re-attached under the same name, interval 0: never
        service.attach_database("fake", "fake://", "sales", options={"sync.interval": "0"})
        scheduler.refresh()
        assert not [j for j in _job_ids(scheduler) if "sales" in j], _job_ids(scheduler)
        assert "sales" not in scheduler._failures
    finally:
        scheduler.stop()
        service.close()


def test_sync_of_missing_database_does_nothing(tmp_path: Path) -> None:
    service = CatalogService(Settings(data_dir=tmp_path, sync_interval_s=0),
                             udb_factory=sample_source().factory)
    calls = _counting_syncs(service)
    scheduler = SyncScheduler(service, refresh_s=3600)
    scheduler.start()
    try:
        scheduler._sync("gone")  # a job that fired after its database was detached
        assert calls == []
        assert not [j for j in _job_ids(scheduler) if "gone" in j], _job_ids(scheduler)
    finally:
        scheduler.stop()
        service.close()


def test_unexpected_error_in_sync_is_a_failure_with_backoff(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    service = CatalogService(Settings(data_dir=tmp_path, sync_interval_s=0),
                             udb_factory=sample_source().factory)
    service.attach_database("fake", "fake://", "sales", options={"sync.interval": "600"})

    def broken_sync(db: str, table: str | None = None):  # type: ignore[no-untyped-def]
        raise RuntimeError("bug in sync")

    service.sync = broken_sync  # type: ignore[method-assign]
    scheduler = SyncScheduler(service, refresh_s=3600)
    scheduler.start()
    try:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="catalog.scheduler"):
            scheduler._sync("sales")  # must not raise
        records = [r for r in caplog.records if r.name == "catalog.scheduler"]
        assert len(records) == 1, [r.getMessage() for r in records]
        assert "sales" in records[0].getMessage() and "bug in sync" in records[0].getMessage()
        assert records[0].exc_info is not None  # the traceback of the bug
        assert scheduler._failures["sales"] == 1
        retry = scheduler._scheduler.get_job("retry:sales")
        assert retry is not None and "sync:sales" in _job_ids(scheduler)
        scheduler._sync("sales")
        assert scheduler._failures["sales"] == 2  # backing off
    finally:
        scheduler.stop()
        service.close()
