"""Periodic sync: changes in the under-database show up without anyone asking."""

from __future__ import annotations

import time
from pathlib import Path

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
