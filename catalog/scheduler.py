"""Periodic sync of every attached database (apscheduler, one job per database)."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler

from catalog.exceptions import CatalogError, NoSuchDatabaseError
from catalog.service import CatalogService

log = logging.getLogger(__name__)


class SyncScheduler:
    """Runs ``service.sync(db)`` every ``sync.interval`` seconds (or the settings' default).

    A sync that fails (UDB unreachable) leaves the last good state served and is retried sooner,
    backing off (job ``retry:<db>``), until it succeeds or the database is detached or its periodic
    sync disabled.
    """

    def __init__(self, service: CatalogService, refresh_s: float = 5.0) -> None:
        self.service = service
        self.refresh_s = refresh_s
        self._scheduler = BackgroundScheduler(daemon=True)
        self._jobs: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        # Jobs run on apscheduler's worker threads: refresh() and _sync() share the state above.
        self._lock = threading.Lock()

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
        with self._lock:
            self._apply(wanted)

    def _apply(self, wanted: dict[str, float]) -> None:
        for name in set(self._jobs) - set(wanted):
            self._scheduler.remove_job(f"sync:{name}")
            del self._jobs[name]
        # Detached, or periodic sync disabled: no more retries, forget the failures.
        for name in set(self._failures) - set(wanted):
            del self._failures[name]
        for job in self._scheduler.get_jobs():
            if job.id.startswith("retry:") and job.id[len("retry:"):] not in wanted:
                self._remove_job(job.id)
        for name, interval in wanted.items():
            if self._jobs.get(name) == interval:
                continue
            if name in self._jobs:
                self._scheduler.remove_job(f"sync:{name}")
            self._scheduler.add_job(self._sync, "interval", seconds=interval, args=[name],
                                    id=f"sync:{name}", coalesce=True, max_instances=1)
            self._jobs[name] = interval

    def _remove_job(self, job_id: str) -> None:
        try:
            self._scheduler.remove_job(job_id)
        except JobLookupError:
            pass  # already ran (one-shot) or never scheduled

    def _forget(self, db: str) -> None:
        with self._lock:
            self._failures.pop(db, None)
            self._remove_job(f"retry:{db}")

    def _sync(self, db: str) -> None:
        try:
            self.service.database_record(db)
        except NoSuchDatabaseError:
            self._forget(db)  # detached since this job was scheduled
            return
        exc: Exception | None = None
        try:
            errors = self.service.sync(db).errors
        except NoSuchDatabaseError:
            self._forget(db)  # detached while syncing
            return
        except CatalogError as e:
            errors = [str(e)]
        except Exception as e:  # noqa: BLE001 - a bug must not end the periodic sync of this db
            exc, errors = e, [f"internal error: {e!r}"]
        with self._lock:
            if not errors:
                self._failures.pop(db, None)
                return
            interval = self._jobs.get(db)
            if interval is None:
                # Detached (or its periodic sync disabled) meanwhile: refresh() dropped it.
                self._failures.pop(db, None)
                log.warning("sync of %s failed: %s", db, "; ".join(errors), exc_info=exc)
                return
            # Keep serving the last good state; retry sooner than the interval, backing off.
            failures = self._failures.get(db, 0) + 1
            self._failures[db] = failures
            delay = min(interval, 5.0 * 2 ** min(failures, 10))
            log.warning("sync of %s failed (%d in a row), retrying in %.1fs: %s", db, failures,
                        delay, "; ".join(errors), exc_info=exc)
            self._scheduler.add_job(self._sync, "date", args=[db], id=f"retry:{db}",
                                    replace_existing=True,
                                    run_date=datetime.now() + timedelta(seconds=delay))

    def state(self) -> dict[str, Any]:
        """What an operator needs to see: running, and per database its interval, next sync,
        failures in a row and the time of the pending retry (UTC)."""
        with self._lock:
            intervals = dict(self._jobs)
            failures = dict(self._failures)
        running = bool(self._scheduler.running)
        runs: dict[str, datetime | None] = {}
        if running:
            for job in self._scheduler.get_jobs():
                nxt = job.next_run_time
                runs[job.id] = nxt.astimezone(UTC) if nxt is not None else None
        return {"running": running,
                "syncs": [{"db": db, "interval_s": interval,
                           "next_sync_at": runs.get(f"sync:{db}"),
                           "failures": failures.get(db, 0),
                           "retry_at": runs.get(f"retry:{db}")}
                          for db, interval in sorted(intervals.items())]}

    def stop(self) -> None:
        self._scheduler.shutdown(wait=False)
