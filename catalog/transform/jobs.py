"""Transformation jobs: submit, run partition by partition, switch, cancel, resume, collect.

A job transforms some partitions of one table (all of them by default; ``''`` is the one unit
of an unpartitioned table). Its life, all of it in the state store (:mod:`catalog.store`,
tables ``transform_jobs`` / ``transform_tasks``), so that it survives a restart:

* ``submit`` checks the table and the definition (the database's ``transform.definition``
  overridden key by key by the job's), refuses a second active job on the same table
  (:class:`InUseError`), and records the job ``queued`` with one task per partition. Each
  task's output is ``/catalog/<db>/tables/<table>/_transformed/<partition>/<job id>`` (the job
  id is the layout version: unique, so outputs never collide) and it keeps the partition's
  source fingerprint as of submission.
* Tasks run on a pool of ``transform_parallelism`` threads shared by all jobs (the memory
  limit is split evenly over them). A task lists the partition's data files (files directly
  in its location, hidden ``_``/``.`` names skipped, as Hive and Trino read them), plans the
  output files and has the executor write them; progress is saved about once a second.
* When every task succeeded, one transaction switches all the job's layouts, bumps the table
  version and marks the job ``succeeded`` (:meth:`CatalogService.switch_layouts`); a partition
  whose source changed since submission makes the switch refuse and the job fail. A job that
  fails (any task) or is cancelled switches nothing and deletes every output it wrote.
* At start, jobs left ``queued`` or ``running`` by a stopped or killed process resume: tasks
  that succeeded and whose files are all there are kept, the others run again from scratch
  (their partial output deleted first). A job whose table is gone fails and is cleaned up.
* Garbage: layouts retired more than ``transform_gc_grace_s`` ago are deleted (files, then the
  row), never a current one; directories under ``_transformed`` that no layout and no active
  task references (a crash between writing and recording) are deleted too. A layout's side
  files of unparseable values (``unparseable=side-file``: ``_unparseable-<job id>`` next to
  it, see :func:`catalog.transform.executor.unparseable_dir`) are kept as long as their job
  is (``transform_jobs_kept``), whatever its state, and collected after.
* A task's ``unparseable_rows`` (``side-file`` jobs: the source rows written to its side
  files, read from their footers when it succeeds) is recorded with its progress and shown
  in its status, when the state store and the status model have that field.
* Policy (:mod:`catalog.transform.policy`): ``on-change`` listens to syncs and submits the
  partitions a sync reverted or added (after the table's running job, if any); ``cron:<expr>``
  submits every table's untransformed partitions on schedule.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from catalog.exceptions import (
    CatalogError,
    InUseError,
    InvalidInputError,
    NoSuchPartitionError,
    NotFoundError,
)
from catalog.models import Layout, Partition, Table
from catalog.store import JobRecord, TaskRecord
from catalog.transform.definition import merge, parse_definition
from catalog.transform.executor import (
    UNPARSEABLE_PREFIX,
    TransformCancelled,
    remove_tree,
    unparseable_rows,
)
from catalog.transform.executors import Executor, PartitionTask, load_executor
from catalog.transform.planner import PartitionInput, plan_partition
from catalog.transform.policy import CRON, ON_CHANGE, TransformPolicy, cron_trigger
from catalog.views import TransformJobOut, TransformTaskOut

if TYPE_CHECKING:
    from catalog.service import CatalogService

log = logging.getLogger(__name__)

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "queued", "running", "succeeded", "failed", "cancelled")
ACTIVE = (QUEUED, RUNNING)
#: Root of the catalog's own files in the namespace.
CATALOG_ROOT = "/catalog"
#: Seconds between two saves of a running task's progress.
PROGRESS_SAVE_S = 1.0


class NoSuchJobError(NotFoundError):
    def __init__(self, job_id: int) -> None:
        super().__init__(f"transformation job {job_id} does not exist")


def output_root(db: str, table: str) -> str:
    """The namespace folder holding every transformed layout of a table."""
    return f"{CATALOG_ROOT}/{db}/tables/{table.lower()}/_transformed"


def output_path(db: str, table: str, partition: str, version: int) -> str:
    """Where one layout of a partition is written (``''``: the unpartitioned table's)."""
    middle = f"/{partition}" if partition else ""
    return f"{output_root(db, table)}{middle}/{version}"


@dataclass
class _Progress:
    bytes_read: int = 0
    rows_read: int = 0
    bytes_written: int = 0
    rows_written: int = 0
    unparseable_rows: int | None = None
    saved_at: float = 0.0


@dataclass
class _Active:
    """In-memory state of a job this process runs."""

    cancel: threading.Event = field(default_factory=threading.Event)
    progress: dict[str, _Progress] = field(default_factory=dict)
    thread: threading.Thread | None = None


class TransformService:
    """Transformation jobs over one :class:`CatalogService` (see the module docstring)."""

    def __init__(self, service: CatalogService) -> None:
        self.service = service
        self.store = service.store
        self.settings = service.settings
        self._lock = threading.RLock()
        self._active: dict[int, _Active] = {}
        self._pending: dict[tuple[str, str], set[str]] = {}  # on-change work after a job
        self._pool: ThreadPoolExecutor | None = None
        self._executors: dict[tuple[str, tuple[tuple[str, str], ...]], Executor] = {}
        self._started = False
        self._stopping = threading.Event()
        self._gc_thread: threading.Thread | None = None
        self._cron: Any = None
        self._cron_jobs: dict[str, str] = {}
        service.sync_listeners.append(self._on_sync)

    # -- life ------------------------------------------------------------------------------------

    def start(self, *, collect_every_s: float | None = None) -> TransformService:
        """Resume unfinished jobs, start the garbage collector and the cron policy."""
        with self._lock:
            if self._started:
                return self
            self._started = True
            self._stopping.clear()
            self._pool = ThreadPoolExecutor(self.settings.transform_parallelism,
                                            thread_name_prefix="transform")
        for job in reversed(self.store.jobs(states=ACTIVE)):
            with self.store.transaction() as conn:
                for t in self.store.tasks(job.id):
                    if t.state == RUNNING:
                        self.store.update_task(conn, job.id, t.partition, state=QUEUED)
            log.info("resuming transformation job %d (%s.%s)", job.id, job.db_name,
                     job.table_name)
            self._launch(job.id)
        every = collect_every_s if collect_every_s is not None else max(
            1.0, min(60.0, self.settings.transform_gc_grace_s / 4 or 60.0))
        self._gc_thread = threading.Thread(target=self._gc_loop, args=(every,),
                                           name="transform-gc", daemon=True)
        self._gc_thread.start()
        self._start_cron()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking work; running jobs are cancelled in memory only (they resume at the
        next start), their threads joined."""
        self._stopping.set()
        with self._lock:
            active = list(self._active.values())
            self._started = False
        for a in active:
            a.cancel.set()
        for a in active:
            if a.thread is not None:
                a.thread.join(timeout)
        if self._cron is not None:
            self._cron.shutdown(wait=False)
            self._cron = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        for ex in self._executors.values():
            try:
                ex.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                log.exception("closing a transformation executor failed")
        self._executors.clear()
        if self._gc_thread is not None:
            self._gc_thread.join(timeout)

    # -- submit / read / cancel ------------------------------------------------------------------

    def submit(self, db: str, table: str, definition: str | None = None,
               partitions: Sequence[str] | None = None, *, trigger: str = "manual"
               ) -> TransformJobOut:
        """Queue a job for ``partitions`` (names, default all) of ``db.table``."""
        rec = self.service.table_record(db, table)
        dbrec = self.service.database_record(rec.db_name)
        policy = TransformPolicy.parse(dbrec.options)
        t = rec.table
        if t.is_view:
            raise InvalidInputError(f"'{rec.db_name}.{rec.name}' is a view: views have no data "
                                    "to transform")
        if not t.sd.columns:
            raise InvalidInputError(f"table '{rec.db_name}.{rec.name}' has no columns")
        defn = policy.definition
        if definition is not None and definition.strip():
            defn = merge(defn, parse_definition(definition))
        # An ill-placed sort key is a bad request now, not a failed job later.
        names_lower = {c.name.lower() for c in t.sd.columns}
        for key in defn.sort_by:
            if key.lower() not in names_lower:
                raise InvalidInputError(
                    f"sort.by names column '{key}', which table '{rec.db_name}.{rec.name}' "
                    f"does not have (columns: {', '.join(c.name for c in t.sd.columns)})")
        tasks = self._tasks_for(rec, partitions)
        now = time.time()
        with self._lock:
            with self.store.transaction() as conn:
                busy = self.store.jobs(db_name=rec.db_name, table_name=rec.name, states=ACTIVE)
                if busy:
                    raise InUseError(
                        f"table '{rec.db_name}.{rec.name}' already has transformation job "
                        f"{busy[0].id} ({busy[0].state}); wait for it or cancel it")
                job_id = self.store.insert_job(conn, JobRecord(
                    id=0, db_name=rec.db_name, table_name=rec.name, table_id=rec.id,
                    definition=defn.to_text(), executor=policy.executor, trigger=trigger,
                    state=QUEUED, created_at=now))
                self.store.insert_tasks(conn, [TaskRecord(
                    job_id=job_id, partition=name, state=QUEUED,
                    output_path=output_path(rec.db_name, rec.name, name, job_id),
                    source_fingerprint=fp) for name, fp in tasks])
                self.store.prune_jobs(conn, self.settings.transform_jobs_kept)
            if self._started:
                self._launch(job_id)
        return self.get(job_id)

    def _tasks_for(self, rec: Any, partitions: Sequence[str] | None
                   ) -> list[tuple[str, str | None]]:
        """(partition name, its source fingerprint) of each partition to transform."""
        if not rec.table.partition_keys:
            if partitions and any(p for p in partitions):
                raise InvalidInputError(f"table '{rec.db_name}.{rec.name}' is not partitioned; "
                                        "--partition does not apply")
            return [("", rec.fingerprint)]
        if partitions:
            wanted = list(dict.fromkeys(partitions))
            found = {r.name: r.fingerprint for r in self.store.partitions(rec.id, wanted)}
            missing = [p for p in wanted if p not in found]
            if missing:
                raise NoSuchPartitionError(rec.db_name, rec.name, missing[0])
            return [(p, found[p]) for p in wanted]
        fps = self.store.partition_fingerprints(rec.id)
        if not fps:
            raise InvalidInputError(f"table '{rec.db_name}.{rec.name}' has no partitions to "
                                    "transform")
        return sorted((name, v[1]) for name, v in fps.items())

    def get(self, job_id: int) -> TransformJobOut:
        job = self.store.job(job_id)
        if job is None:
            raise NoSuchJobError(job_id)
        return self._out(job, self.store.tasks(job_id))

    def jobs(self, *, db: str | None = None, table: str | None = None,
             state: str | None = None, limit: int = 50) -> list[TransformJobOut]:
        """Jobs, newest first (their partitions left out: see :meth:`get`)."""
        jobs = self.store.jobs(db_name=db.lower() if db else None, table_name=table,
                               states=[state] if state else None, limit=limit)
        return [self._out(j, self.store.tasks(j.id), with_tasks=False) for j in jobs]

    def cancel(self, job_id: int) -> TransformJobOut:
        """Ask a queued or running job to stop; it ends ``cancelled`` with its output removed."""
        with self._lock:
            job = self.store.job(job_id)
            if job is None:
                raise NoSuchJobError(job_id)
            if job.state not in ACTIVE:
                raise InUseError(f"transformation job {job_id} has already {job.state}")
            with self.store.transaction() as conn:
                self.store.update_job(conn, job_id, cancel_requested=1)
            active = self._active.get(job_id)
            if active is not None:
                active.cancel.set()
            elif not self._started:
                self._finish_unstarted(job_id, CANCELLED, "cancelled")
        return self.get(job_id)

    def wait(self, job_id: int, timeout: float | None = None) -> TransformJobOut:
        """Block until the job has finished (or ``timeout`` seconds passed); its last state."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                active = self._active.get(job_id)
            if active is not None and active.thread is not None:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                active.thread.join(timeout=min(left, 0.5) if left is not None else 0.5)
            out = self.get(job_id)
            if out.state not in ACTIVE:
                return out
            if deadline is not None and time.monotonic() >= deadline:
                return out
            if active is None:
                time.sleep(0.05)

    # -- running ---------------------------------------------------------------------------------

    def _launch(self, job_id: int) -> None:
        with self._lock:
            if job_id in self._active:
                return
            active = _Active()
            self._active[job_id] = active
            active.thread = threading.Thread(target=self._run_job, args=(job_id, active),
                                             name=f"transform-job-{job_id}", daemon=True)
            active.thread.start()

    def _run_job(self, job_id: int, active: _Active) -> None:
        try:
            self._run_job_inner(job_id, active)
        except Exception as e:  # noqa: BLE001 - a job must end in a state, never hang
            log.exception("transformation job %d failed unexpectedly", job_id)
            self._fail(job_id, FAILED, f"internal error: {e}")
        finally:
            with self._lock:
                self._active.pop(job_id, None)
            self._after_job(job_id)

    def _run_job_inner(self, job_id: int, active: _Active) -> None:
        job = self.store.job(job_id)
        if job is None:
            return
        if job.cancel_requested:
            self._fail(job_id, CANCELLED, "cancelled")
            return
        try:
            rec = self.service.table_record(job.db_name, job.table_name)
        except NotFoundError:
            self._fail(job_id, FAILED, f"table '{job.db_name}.{job.table_name}' is no longer "
                                       "attached")
            return
        if rec.id != job.table_id:
            self._fail(job_id, FAILED, f"table '{job.db_name}.{job.table_name}' was replaced "
                                       "since the job was submitted")
            return
        now = time.time()
        with self.store.transaction() as conn:
            self.store.update_job(conn, job_id, state=RUNNING,
                                  started_at=job.started_at or now)
        definition = parse_definition(job.definition)
        dbrec = self.service.database_record(job.db_name)
        executor = self._executor(job.executor, dbrec.options)
        tasks = self.store.tasks(job_id)
        parts: dict[str, Partition] = {}
        if rec.table.partition_keys:
            parts = {r.name: r.partition for r in self.store.partitions(
                rec.id, [t.partition for t in tasks])}
        todo = [t for t in tasks if not (t.state == SUCCEEDED and self._output_intact(t))]
        pool = self._pool
        if pool is None:  # stopping
            return
        futures: list[Future[None]] = []
        for t in todo:
            part = parts.get(t.partition) if rec.table.partition_keys else None
            if rec.table.partition_keys and part is None:
                active.cancel.set()
                self._fail(job_id, FAILED, f"partition '{t.partition}' no longer exists")
                return
            futures.append(pool.submit(self._run_task, job_id, t, rec.table, part,
                                       definition, executor, active))
        errors: list[str] = []
        for fut in futures:
            try:
                fut.result()
            except TransformCancelled:
                pass
            except Exception as e:  # noqa: BLE001 - reported as the job's error
                errors.append(str(e))
                active.cancel.set()  # stop the others early
        if self._stopping.is_set() and not errors:
            return  # left queued/running in the store: resumed at the next start
        job = self.store.job(job_id)
        if job is None:
            return
        if errors:
            self._fail(job_id, FAILED, errors[0])
            return
        if job.cancel_requested or active.cancel.is_set():
            self._fail(job_id, CANCELLED, "cancelled")
            return
        layouts = [Layout.model_validate_json(t.layout) for t in self.store.tasks(job_id)
                   if t.layout]
        finished = time.time()

        def record(conn: Any, version: int) -> None:
            self.store.update_job(conn, job_id, state=SUCCEEDED, finished_at=finished,
                                  table_version=version)

        try:
            self.service.switch_layouts(job.db_name, job.table_name, layouts, on_commit=record)
        except CatalogError as e:
            self._fail(job_id, FAILED, f"switch refused: {e}")
            return
        log.info("transformation job %d switched %s.%s (%d partitions)", job_id, job.db_name,
                 job.table_name, len(layouts))

    def _run_task(self, job_id: int, task: TaskRecord, table: Table, partition: Partition | None,
                  definition: Any, executor: Executor, active: _Active) -> None:
        if active.cancel.is_set():
            raise TransformCancelled("cancelled")
        fs = self.service.fs
        name = task.partition
        where = f"partition '{name}'" if name else "the table"
        started = time.time()
        with self.store.transaction() as conn:
            self.store.update_task(conn, job_id, name, state=RUNNING, started_at=started,
                                   finished_at=None, error=None, bytes_read=0, rows_read=0,
                                   bytes_written=0, rows_written=0, files_written=0, layout=None,
                                   unparseable_rows=None)
        progress = active.progress.setdefault(name, _Progress())
        try:
            self._remove_output(task.output_path, strict=True)  # a crashed attempt's leftovers
            location = (partition.sd.location if partition is not None else table.sd.location)
            if not location:
                raise InvalidInputError(f"{where} has no location")
            files = self._data_files(location)
            plan = plan_partition(PartitionInput(name, location, files), definition)
            with self.store.transaction() as conn:
                self.store.update_task(conn, job_id, name, bytes_total=plan.input_bytes)

            def report(bytes_read: int, rows_read: int, bytes_written: int,
                       rows_written: int) -> None:
                progress.bytes_read, progress.rows_read = bytes_read, rows_read
                progress.bytes_written, progress.rows_written = bytes_written, rows_written
                now = time.monotonic()
                if now - progress.saved_at >= PROGRESS_SAVE_S:
                    progress.saved_at = now
                    with self.store.transaction() as conn:
                        self.store.update_task(conn, job_id, name, bytes_read=bytes_read,
                                               rows_read=rows_read, bytes_written=bytes_written,
                                               rows_written=rows_written)

            layout = executor.run(PartitionTask(
                plan=plan, table=table, partition=partition, definition=definition,
                output_dir=task.output_path, version=job_id,
                source_fingerprint=task.source_fingerprint), report, active.cancel.is_set)
        except TransformCancelled:
            self._end_task(job_id, name, CANCELLED, progress, error=None)
            raise
        except CatalogError as e:
            self._end_task(job_id, name, FAILED, progress, error=str(e))
            raise InvalidInputError(f"{where}: {e}") from e
        except Exception as e:
            log.exception("transformation of %s failed", where)
            self._end_task(job_id, name, FAILED, progress, error=f"{type(e).__name__}: {e}")
            raise InvalidInputError(f"{where}: {type(e).__name__}: {e}") from e
        params = layout.parameters
        progress.bytes_read = plan.input_bytes
        progress.rows_written = int(params.get("numRows", progress.rows_written))
        progress.rows_read = max(progress.rows_read, progress.rows_written)
        progress.bytes_written = int(params.get("totalSize", progress.bytes_written))
        if definition.unparseable == "side-file":
            try:
                progress.unparseable_rows = unparseable_rows(fs, task.output_path)
            except (CatalogError, OSError, ValueError) as e:
                log.warning("could not count the unparseable rows of %s: %s", where, e)
        self._end_task(job_id, name, SUCCEEDED, progress, error=None,
                       layout=layout.model_dump_json(), files=int(params.get("numFiles", 0)))

    def _end_task(self, job_id: int, name: str, state: str, p: _Progress, *,
                  error: str | None, layout: str | None = None, files: int = 0) -> None:
        with self.store.transaction() as conn:
            self.store.update_task(conn, job_id, name, state=state, error=error, layout=layout,
                                   files_written=files, bytes_read=p.bytes_read,
                                   rows_read=p.rows_read, bytes_written=p.bytes_written,
                                   rows_written=p.rows_written, finished_at=time.time(),
                                   unparseable_rows=p.unparseable_rows)

    def _data_files(self, location: str) -> list[tuple[str, int]]:
        """The data files of a partition: files directly in ``location``, hidden names skipped."""
        ufs, uri = self.service.fs.location_of(location)
        entries = ufs.list(uri)
        if entries is None:
            return []  # an absent location reads as no rows, as in Hive
        return sorted((e.uri, e.size) for e in entries
                      if not e.is_dir and not e.name.startswith(("_", ".")))

    def _output_intact(self, task: TaskRecord) -> bool:
        """Whether a succeeded task's files are all still there (else it runs again)."""
        if not task.layout:
            return False
        layout = Layout.model_validate_json(task.layout)
        try:
            ufs, uri = self.service.fs.location_of(layout.location)
            entries = ufs.list(uri)
        except CatalogError:
            return False
        if entries is None:
            return int(layout.parameters.get("numFiles", "0")) == 0 and ufs.exists(uri)
        names = {e.name for e in entries if not e.is_dir}
        want = int(layout.parameters.get("numFiles", "0"))
        return all(f"part-{i}.parquet" in names for i in range(want))

    def _executor(self, name: str, options: dict[str, str]) -> Executor:
        extra = tuple(sorted((k, v) for k, v in options.items() if k.startswith("spark.")))
        key = (name, extra)
        with self._lock:
            ex = self._executors.get(key)
            if ex is None:
                share = max(64 * 1024 ** 2, self.settings.transform_memory_limit_bytes
                            // self.settings.transform_parallelism)
                settings = self.settings.model_copy(update={"transform_memory_limit_bytes": share})
                ex = load_executor(name, self.service.fs, dict(extra), settings)
                self._executors[key] = ex
            return ex

    # -- ending ----------------------------------------------------------------------------------

    def _fail(self, job_id: int, state: str, error: str) -> None:
        """End a job ``failed`` or ``cancelled``: delete every output it wrote, then record."""
        for t in self.store.tasks(job_id):
            self._remove_output(t.output_path)
        now = time.time()
        with self.store.transaction() as conn:
            job = self.store.job(job_id)
            if job is None or job.state not in ACTIVE:
                return
            for t in self.store.tasks(job_id):
                if t.state in ACTIVE:
                    self.store.update_task(conn, job_id, t.partition, state=CANCELLED,
                                           finished_at=now)
            self.store.update_job(conn, job_id, state=state, finished_at=now,
                                  error=None if state == CANCELLED else error,
                                  started_at=job.started_at or now)
        log.info("transformation job %d %s: %s", job_id, state, error)

    def _finish_unstarted(self, job_id: int, state: str, error: str) -> None:
        self._fail(job_id, state, error)

    def _remove_output(self, path: str, strict: bool = False) -> None:
        """Delete an output directory if it is there (``strict``: errors propagate)."""
        try:
            remove_tree(self.service.fs, path)
        except CatalogError as e:
            if strict:
                raise
            log.warning("could not remove transformation output %s: %s (the collector will "
                        "retry)", path, e)

    def _after_job(self, job_id: int) -> None:
        """Submit the on-change work that arrived while the job ran."""
        job = self.store.job(job_id)
        if job is None:
            return
        with self._lock:
            pending = self._pending.pop((job.db_name, job.table_name.lower()), None)
        if pending and not self._stopping.is_set():
            self._submit_quietly(job.db_name, job.table_name, sorted(pending), ON_CHANGE)

    # -- policy ----------------------------------------------------------------------------------

    def _on_sync(self, db: str, tables: dict[str, list[str]]) -> None:
        try:
            policy = TransformPolicy.parse(self.service.database_record(db).options)
        except CatalogError:
            return
        if policy.kind != ON_CHANGE:
            return
        for table, parts in tables.items():
            with self._lock:
                busy = self.store.jobs(db_name=db, table_name=table, states=ACTIVE)
                if busy:
                    self._pending.setdefault((db, table.lower()), set()).update(parts)
                    continue
            self._submit_quietly(db, table, parts, ON_CHANGE)

    def _submit_quietly(self, db: str, table: str, parts: list[str], trigger: str) -> None:
        try:
            rec = self.service.table_record(db, table)
            if rec.table.partition_keys:
                existing = {r.name for r in self.store.partitions(rec.id, parts)}
                parts = [p for p in parts if p in existing]
                if not parts:
                    return
            else:
                parts = []
            job = self.submit(db, table, partitions=parts or None, trigger=trigger)
            log.info("%s: submitted transformation job %d for %s.%s (%d partitions)", trigger,
                     job.id, db, table, job.partitions_total)
        except CatalogError as e:
            log.warning("%s: could not submit a transformation of %s.%s: %s", trigger, db,
                        table, e)

    def untransformed(self, db: str, table: str) -> list[str]:
        """Partitions of a table served from their source (``['']`` for an unpartitioned one)."""
        rec = self.service.table_record(db, table)
        current = self.store.current_layouts(rec.id)
        if not rec.table.partition_keys:
            return [] if "" in current else [""]
        return [n for n in self.service.partition_names(db, table) if n not in current]

    def run_cron(self, db: str) -> list[int]:
        """What ``cron:`` does on schedule: submit each table's untransformed partitions;
        returns the job ids."""
        ids = []
        for rec in self.service.table_records(db):
            if rec.table.is_view or not rec.table.sd.columns:
                continue
            if self.store.jobs(db_name=rec.db_name, table_name=rec.name, states=ACTIVE):
                continue
            parts = self.untransformed(db, rec.name)
            if not parts:
                continue
            try:
                ids.append(self.submit(db, rec.name, partitions=[p for p in parts if p] or None,
                                       trigger=CRON).id)
            except CatalogError as e:
                log.warning("cron: could not submit %s.%s: %s", db, rec.name, e)
        return ids

    def _start_cron(self) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        self._cron = BackgroundScheduler(daemon=True, timezone="UTC")
        self._cron.start()
        self._cron.add_job(self._refresh_cron, "interval", seconds=5, id="__refresh__",
                           coalesce=True, max_instances=1)
        self._refresh_cron()

    def _refresh_cron(self) -> None:
        wanted: dict[str, str] = {}
        for name in self.service.list_databases():
            try:
                policy = TransformPolicy.parse(self.service.database_record(name).options)
            except CatalogError:
                continue
            if policy.kind == CRON and policy.cron:
                wanted[name] = policy.cron
        scheduler = self._cron
        if scheduler is None:
            return
        with self._lock:
            for name in set(self._cron_jobs) - set(wanted):
                scheduler.remove_job(f"cron:{name}")
                del self._cron_jobs[name]
            for name, expr in wanted.items():
                if self._cron_jobs.get(name) == expr:
                    continue
                if name in self._cron_jobs:
                    scheduler.remove_job(f"cron:{name}")
                scheduler.add_job(self.run_cron, cron_trigger(expr), args=(name,),
                                  id=f"cron:{name}", coalesce=True, max_instances=1)
                self._cron_jobs[name] = expr

    # -- garbage ---------------------------------------------------------------------------------

    def _gc_loop(self, every: float) -> None:
        while not self._stopping.wait(every):
            try:
                self.collect_garbage()
            except Exception:  # noqa: BLE001 - retried at the next round
                log.exception("transformation garbage collection failed")

    def collect_garbage(self, now: float | None = None) -> dict[str, int]:
        """Delete retired layouts past the grace period and unreferenced output directories;
        returns counts (``layouts``, ``orphans``)."""
        fs = self.service.fs
        now = time.time() if now is None else now
        collected = 0
        for table_id, layout in self.store.retired_layouts(now - self.settings.transform_gc_grace_s):
            if self._inside_catalog(layout.location):
                try:
                    ufs, uri = fs.location_of(layout.location)
                    if ufs.exists(uri):
                        ufs.delete(uri, recursive=True)
                        fs.forget(uri, recursive=True)
                except CatalogError as e:
                    log.warning("could not delete retired layout %s: %s", layout.location, e)
                    continue
            with self.store.transaction() as conn:
                self.store.delete_layout(conn, table_id, layout.partition, layout.version)
            collected += 1
        return {"layouts": collected, "orphans": self._collect_orphans(now)}

    def _inside_catalog(self, location: str) -> bool:
        found = self.service.fs.reverse(location)
        return found is not None and found[0].path == CATALOG_ROOT

    def _collect_orphans(self, now: float) -> int:
        """Delete layout directories under the ``_transformed`` folders of the tables the store
        knows (a kept job or a layout names them) that nothing references: one listing per such
        table, never the whole catalog. Listed first, references read after: a directory created
        meanwhile is referenced by then (its task row is written before its first file)."""
        fs = self.service.fs
        mount, _ = fs.resolve(CATALOG_ROOT)
        ufs = fs.ufs(mount)
        roots = {fs.resolve(output_root(j.db_name, j.table_name))[1].rstrip("/")
                 for j in self.store.jobs()}
        for loc in self.store.layout_locations():
            head, sep, _ = loc.partition("/_transformed/")
            if sep and self._inside_catalog(loc):
                roots.add(head + "/_transformed")
        dirs: set[str] = set()
        for root in sorted(roots):
            try:
                entries = ufs.list(root, recursive=True) or []
            except CatalogError as e:
                log.warning("cannot list %s for orphans: %s", root, e)
                continue
            for entry in entries:
                # [<partition...>/]<version>/<file>, or _unparseable-<job id>/<file>
                if not entry.is_dir and "/" in entry.rel:
                    dirs.add(entry.uri.rsplit("/", 1)[0])
        if not dirs:
            return 0
        referenced = {loc.rstrip("/") for loc in self.store.layout_locations()}
        for path in self.store.active_output_paths():
            referenced.add(fs.resolve(path)[1].rstrip("/"))
        removed = 0
        for d in sorted(dirs - referenced):
            name = d.rsplit("/", 1)[-1]
            if name.startswith(UNPARSEABLE_PREFIX):  # side files: kept with their job
                job = name[len(UNPARSEABLE_PREFIX):]
                if job.isdigit() and self.store.job(int(job)) is not None:
                    continue
            try:
                ufs.delete(d, recursive=True)
                fs.forget(d, recursive=True)
                removed += 1
                log.info("removed unreferenced transformation output %s", d)
            except CatalogError as e:
                log.warning("could not remove %s: %s", d, e)
        return removed

    # -- answers ---------------------------------------------------------------------------------

    def _out(self, job: JobRecord, tasks: list[TaskRecord], with_tasks: bool = True
             ) -> TransformJobOut:
        with self._lock:
            active = self._active.get(job.id)
            live = dict(active.progress) if active is not None else {}
        outs = []
        for t in tasks:
            p = live.get(t.partition) if t.state == RUNNING else None
            layout = Layout.model_validate_json(t.layout) if t.layout else None
            outs.append(TransformTaskOut(
                partition=t.partition, state=t.state, bytes_total=t.bytes_total,
                bytes_read=p.bytes_read if p else t.bytes_read,
                rows_read=p.rows_read if p else t.rows_read,
                bytes_written=p.bytes_written if p else t.bytes_written,
                rows_written=p.rows_written if p else t.rows_written,
                files_written=t.files_written,
                layout_version=layout.version if layout else None,
                location=layout.location if layout else None, error=t.error,
                started_at=_dt(t.started_at), finished_at=_dt(t.finished_at),
                unparseable_rows=t.unparseable_rows))
        end = job.finished_at if job.finished_at is not None else (
            time.time() if job.started_at is not None else None)
        duration = (end - job.started_at) if (end is not None and job.started_at) else None
        return TransformJobOut(
            id=job.id, db=job.db_name, table=job.table_name, state=job.state,
            trigger=job.trigger, definition=job.definition, executor=job.executor,
            error=job.error, table_version=job.table_version,
            created_at=_dt(job.created_at) or datetime.now(UTC), started_at=_dt(job.started_at),
            finished_at=_dt(job.finished_at), duration_s=duration,
            partitions_total=len(outs),
            partitions_done=sum(1 for o in outs if o.state == SUCCEEDED),
            bytes_total=sum(o.bytes_total for o in outs),
            bytes_read=sum(o.bytes_read for o in outs),
            rows_read=sum(o.rows_read for o in outs),
            bytes_written=sum(o.bytes_written for o in outs),
            rows_written=sum(o.rows_written for o in outs),
            files_written=sum(o.files_written for o in outs),
            partitions=outs if with_tasks else [])


def _dt(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


__all__ = ["NoSuchJobError", "TransformService", "output_path", "output_root"]
