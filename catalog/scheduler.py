"""Periodic sync of every attached database (apscheduler, one job per database)."""

from __future__ import annotations

import logging

from apscheduler.schedulers.background import BackgroundScheduler

from catalog.exceptions import CatalogError
from catalog.service import CatalogService

log = logging.getLogger(__name__)


class SyncScheduler:
    """Runs ``service.sync(db)`` every ``sync.interval`` seconds (or the settings' default).

    A sync that fails (UDB unreachable) leaves the last good state served; the next run retries.
    """

    def __init__(self, service: CatalogService) -> None:
        self.service = service
        self._scheduler = BackgroundScheduler(daemon=True)
        self._jobs: dict[str, float] = {}

    def start(self) -> None:
        self._scheduler.start()
        self.refresh()
        # Pick up databases attached or detached since the last look.
        self._scheduler.add_job(self.refresh, "interval", seconds=5, id="__refresh__",
                                coalesce=True, max_instances=1)

    def refresh(self) -> None:
        wanted: dict[str, float] = {}
        for name in self.service.list_databases():
            try:
                rec = self.service.database_record(name)
            except CatalogError:
                continue
            interval = (rec.sync_interval_s if rec.sync_interval_s is not None
                        else self.service.settings.sync_interval_s)
            if interval > 0:
                wanted[name] = interval
        for name in set(self._jobs) - set(wanted):
            self._scheduler.remove_job(f"sync:{name}")
            del self._jobs[name]
        for name, interval in wanted.items():
            if self._jobs.get(name) == interval:
                continue
            if name in self._jobs:
                self._scheduler.remove_job(f"sync:{name}")
            self._scheduler.add_job(self._sync, "interval", seconds=interval, args=[name],
                                    id=f"sync:{name}", coalesce=True, max_instances=1)
            self._jobs[name] = interval

    def _sync(self, db: str) -> None:
        try:
            report = self.service.sync(db)
        except CatalogError as e:
            log.warning("periodic sync of %s failed: %s", db, e)
            return
        if report.errors:
            log.warning("periodic sync of %s: %s", db, "; ".join(report.errors))

    def stop(self) -> None:
        self._scheduler.shutdown(wait=False)
