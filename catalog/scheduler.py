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

    def __init__(self, service: CatalogService, refresh_s: float = 5.0) -> None:
        self.service = service
        self.refresh_s = refresh_s
        self._scheduler = BackgroundScheduler(daemon=True)
        self._jobs: dict[str, float] = {}
        self._failures: dict[str, int] = {}

    def start(self) -> None:
        self._scheduler.start()
        self.refresh()
        # Pick up databases attached or detached since the last look.
        self._scheduler.add_job(self.refresh, "interval", seconds=self.refresh_s, id="__refresh__",
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
            errors = self.service.sync(db).errors
        except CatalogError as e:
            errors = [str(e)]
        if not errors:
            self._failures.pop(db, None)
            return
        # Keep serving the last good state; retry sooner than the interval, backing off.
        failures = self._failures.get(db, 0) + 1
        self._failures[db] = failures
        delay = min(self._jobs.get(db, 300.0), 5.0 * 2 ** min(failures, 10))
        log.warning("sync of %s failed (%d in a row), retrying in %.0fs: %s", db, failures,
                    delay, "; ".join(errors))
        from datetime import datetime, timedelta

        self._scheduler.add_job(self._sync, "date", args=[db], id=f"retry:{db}",
                                replace_existing=True,
                                run_date=datetime.now() + timedelta(seconds=delay))

    def stop(self) -> None:
        self._scheduler.shutdown(wait=False)
