"""The Spark transformation executor: the embedded executor's per-partition plan run on Spark.

A user whose tables outgrow one machine points ``transform.executor=spark`` at the cluster they
already have (``spark.master``; every other ``spark.*`` option of the database goes to the
SparkSession builder's conf, ``spark.app.name`` defaults to ``strata-transform``).

What runs where:

* **Driver** (the Strata host, :meth:`SparkExecutor.run`): checks ``sort.by``, resolves
  ``output_dir`` and every non-local input URI through the :class:`Namespace` to plain UFS URIs
  (``strata:///lake/x`` becomes ``s3://bucket/x``), creates ``output_dir``, and submits one Spark
  job whose tasks are the plan's output groups (``parallelize(groups, len(groups))``: output
  group ``i`` is task ``i``). It polls, every :attr:`SparkExecutor.poll_interval` seconds, an
  accumulator the tasks add to as they finish (``progress`` is called with running totals, on the
  calling thread) and ``cancelled()``; on cancellation it cancels the job group, waits until no
  task of it is still running, deletes ``output_dir`` and raises :class:`TransformCancelled`.
  Finally it merges the per-group column statistics (:func:`merge_partition_stats`) and builds
  the same :class:`Layout` as :func:`~catalog.transform.executor.execute_partition`.
* **Tasks** (Python workers, :func:`_run_groups`): read the group's files with the Hive-semantics
  reader and write ``part-<i>.parquet`` with the embedded executor's own
  :func:`~catalog.transform.executor._write_group` (identical files by construction), through
  :class:`_WorkerFs`, a small stand-in for the Namespace over :func:`load_ufs`. A task answers
  ``(i, rows, bytes, _PartitionStats)``, or the :class:`CatalogError` it met (class and message,
  re-raised on the driver as the same class; the task itself succeeds, so bad data is not retried,
  and the driver, which sees the error in the accumulator, cancels the rest of the job).
  Any other exception fails the task the Spark way (retried per ``spark.task.maxFailures``) and
  reaches the driver as a :class:`CatalogError` naming the worker's error.

What ships to the tasks: the table and partition metadata, the definition, the Arrow schema, the
memory bound of one task's data work (:attr:`SparkExecutor.memory_limit_bytes`, handed to the
writer as the embedded executor hands it, so the same bound makes the same files), the
resolved URIs, and the storage options (credentials included) of exactly the mounts that hold
the inputs and the output, as ``(root UFS URI, options)`` pairs; the Namespace and its state store
never leave the driver. The ``catalog`` package itself is shipped as a zip (``sc.addPyFile``,
built from the installed package) so that a cluster's workers can import it (in local mode the
workers may find the installed package first: the same code); the Python workers use the driver's
interpreter (``PYSPARK_PYTHON=sys.executable``) unless configured otherwise.

Every failure and cancellation removes ``output_dir`` (after the job's tasks are gone), as the
embedded executor does. A task that is retried rewrites its ``part-<i>.parquet`` under the same
name; speculative execution is refused (``spark.speculation=true`` is an invalid option), as two
attempts would write one file at once.

One SparkSession per process: Spark allows one SparkContext per JVM, so executors created in one
process share the session this module started (reference-counted, stopped when the last one is
closed); a session started by someone else is used and never stopped. ``run`` may be called from
several threads at once: each call is its own job group (``spark.scheduler.mode=FAIR`` shares the
cluster between them; ``spark.scheduler.pool`` names the pool the jobs go to).
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc

import catalog
from catalog import exceptions as _exceptions
from catalog.exceptions import (
    CatalogError,
    InvalidInputError,
    InvalidOptionError,
    NoSuchPathError,
)
from catalog.fs.namespace import Mount
from catalog.fs.ufs import (
    FileStatus,
    UnderFileSystem,
    fold_scheme,
    is_within,
    load_ufs,
    normalize_uri,
    uri_scheme,
)
from catalog.models import Layout, Partition, SerDe, Table
from catalog.transform import executor as _executor
from catalog.transform.definition import TransformDefinition
from catalog.transform.executor import (
    ProgressFn,
    TransformCancelled,
    _ColumnStats,
    _PartitionStats,
    _sort_keys,
    _write_group,
    remove_tree,
    unparseable_dir,
)
from catalog.transform.source import arrow_schema
from catalog.udb.directory import PARQUET_INPUT, PARQUET_OUTPUT, PARQUET_SERDE

if TYPE_CHECKING:
    from catalog.config import Settings
    from catalog.fs.namespace import Namespace
    from catalog.transform.executors import PartitionTask

log = logging.getLogger(__name__)

DEFAULT_MASTER = "local[*]"
DEFAULT_APP_NAME = "strata-transform"
#: Longest wait for a cancelled job's tasks to end before ``output_dir`` is deleted anyway.
CANCEL_WAIT_S = 60.0


# -- statistics merge (driver) --------------------------------------------------------------------

def _distinct_estimate(s: _ColumnStats) -> int:
    """What ``s`` contributes to a summed (inexact) distinct count."""
    values = s.distinct_values()
    if not s.exact:
        return s.dv_estimate
    return len(values) if values is not None else 0


def _pick(a: Any, b: Any, fn: Callable[[Any, Any], Any]) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return fn(a, b)


def merge_column_stats(a: _ColumnStats, b: _ColumnStats) -> _ColumnStats:
    """The statistics of one column over the rows of ``a`` and ``b``: counts summed, bounds and
    lengths combined; distinct values (each side's pending chunks merged first) unioned
    exactly while the union fits :data:`~catalog.transform.executor.DISTINCT_CAP`, else the
    per-part distinct counts summed (the rule of ``_ColumnStats._add_distinct``)."""
    out = _ColumnStats(
        a.column, a.kind, a.arrow_type, rows=a.rows + b.rows, nulls=a.nulls + b.nulls,
        low=_pick(a.low, b.low, min), high=_pick(a.high, b.high, max), trues=a.trues + b.trues,
        len_sum=a.len_sum + b.len_sum, len_max=max(a.len_max, b.len_max))
    a_values, b_values = a.distinct_values(), b.distinct_values()  # (pending chunks merged)
    if a.exact and b.exact:
        if a_values is None or b_values is None:
            uniques = a_values if b_values is None else b_values
        else:
            uniques = pc.unique(pa.concat_arrays([a_values, b_values]))
        if uniques is not None and len(uniques) > _executor.DISTINCT_CAP:
            out.exact, out.dv_estimate, out.uniques = False, len(uniques), None
        else:
            out.uniques = uniques
    else:
        out.exact = False
        out.dv_estimate = _distinct_estimate(a) + _distinct_estimate(b)
    return out


def merge_partition_stats(a: _PartitionStats, b: _PartitionStats) -> _PartitionStats:
    """Column-wise :func:`merge_column_stats` of two statistics of the same columns."""
    if [s.column.name for s in a.columns] != [s.column.name for s in b.columns]:
        raise ValueError("statistics of different columns cannot be merged")
    out = _PartitionStats([], pa.schema([]))
    out.columns = [merge_column_stats(x, y) for x, y in zip(a.columns, b.columns)]
    return out


# -- the worker side ------------------------------------------------------------------------------

def _is_local(uri: str) -> bool:
    """Whether the source reader opens ``uri`` directly (plain path or ``file:``)."""
    return uri.startswith("/") or urlsplit(uri).scheme == "file"


class _WorkerFs:
    """What the reader and writer need of a :class:`Namespace`, on a worker: storages by root UFS
    URI with their shipped options (a URI under none gets default credentials, as
    :meth:`Namespace.ufs_for` does). Every path it is given is a UFS URI."""

    def __init__(self, storages: Iterable[tuple[str, Mapping[str, str]]]) -> None:
        self._roots = sorted(((normalize_uri(r), dict(o)) for r, o in storages),
                             key=lambda ro: -len(ro[0]))
        self._ufs: dict[str, UnderFileSystem] = {}

    def _root_of(self, uri: str) -> tuple[str, dict[str, str]]:
        folded = fold_scheme(uri)
        for root, options in self._roots:
            if is_within(folded, fold_scheme(root)):
                return root, options
        scheme = uri_scheme(uri)
        key = "file:///" if scheme == "file" else f"{scheme}://{uri.split('/', 3)[2]}"
        return key, {}

    def location_of(self, target: str) -> tuple[UnderFileSystem, str]:
        if target.startswith("strata:"):
            raise InvalidInputError(f"{target}: namespace paths are resolved on the driver")
        uri = normalize_uri(target)
        root, options = self._root_of(uri)
        ufs = self._ufs.get(root)
        if ufs is None:
            ufs = self._ufs[root] = load_ufs(root, options)
        return ufs, uri

    def resolve(self, path: str) -> tuple[Mount, str]:
        ufs, uri = self.location_of(path)
        root, _ = self._root_of(uri)
        return Mount(path=root, ufs_uri=root, options=ufs.options), uri

    def open_output(self, path: str) -> Any:
        ufs, uri = self.location_of(path)
        return ufs.open_output(uri)

    def stat(self, path: str) -> FileStatus:
        ufs, uri = self.location_of(path)
        status = ufs.info(uri)
        if status is None:
            raise NoSuchPathError(f"no such file or directory {uri}")
        return status

    def mkdirs(self, path: str) -> None:
        ufs, uri = self.location_of(path)
        ufs.mkdirs(uri)

    def delete(self, path: str, recursive: bool = False) -> None:
        ufs, uri = self.location_of(path)
        ufs.delete(uri, recursive)

    def close(self) -> None:
        for ufs in self._ufs.values():
            try:
                ufs.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        self._ufs.clear()


@dataclass(frozen=True)
class _TaskContext:
    """Everything a task needs besides its group; pickled into the job's closure."""

    table: Table
    partition: Partition | None
    definition: TransformDefinition
    schema: pa.Schema
    sort_keys: tuple[str, ...]
    output_uri: str
    storages: tuple[tuple[str, dict[str, str]], ...]
    memory_limit_bytes: int | None


@dataclass(frozen=True)
class _Tally:
    """Accumulated over finished groups: planned bytes read, rows, bytes written, groups done,
    and ``(group, error class, message)`` of the groups that failed."""

    bytes_read: int = 0
    rows: int = 0
    bytes_written: int = 0
    done: int = 0
    errors: tuple[tuple[int, str, str], ...] = field(default=())

    def __add__(self, other: _Tally) -> _Tally:
        return _Tally(self.bytes_read + other.bytes_read, self.rows + other.rows,
                      self.bytes_written + other.bytes_written, self.done + other.done,
                      self.errors + other.errors)


class _TallyParam:
    """The accumulator parameter of :class:`_Tally` (pyspark's ``AccumulatorParam`` protocol)."""

    def zero(self, value: _Tally) -> _Tally:
        return _Tally()

    def addInPlace(self, value1: _Tally, value2: _Tally) -> _Tally:  # noqa: N802 - pyspark's
        return value1 + value2


@dataclass(frozen=True)
class _GroupResult:
    """What a task sends back for one output group."""

    index: int
    rows: int = 0
    size: int = 0
    stats: _PartitionStats | None = None
    error: tuple[str, str] | None = None  # (module.Class, message)


def _run_groups(ctx: _TaskContext, accumulator: Any,
                items: Iterable[tuple[int, list[str], int]]) -> Iterator[_GroupResult]:
    """The task: write each ``(index, files, planned bytes)`` group of this Spark partition."""
    worker_fs = _WorkerFs(ctx.storages)
    try:
        for i, files, planned in items:
            stats = _PartitionStats(ctx.table.sd.columns, ctx.schema)
            try:
                rows, size = _write_group(
                    i, files, table=ctx.table, partition=ctx.partition,
                    definition=ctx.definition, fs=cast(Any, worker_fs),
                    output_dir=ctx.output_uri, schema=ctx.schema,
                    sort_keys=list(ctx.sort_keys), stats=stats,
                    memory_limit_bytes=ctx.memory_limit_bytes)
            except CatalogError as e:
                cls = f"{type(e).__module__}.{type(e).__qualname__}"
                accumulator.add(_Tally(errors=((i, cls, str(e)),)))
                yield _GroupResult(i, error=(cls, str(e)))
                continue
            accumulator.add(_Tally(planned, rows, size, 1))
            yield _GroupResult(i, rows, size, stats)
    finally:
        worker_fs.close()


# -- errors ---------------------------------------------------------------------------------------

def _rebuild_error(cls_path: str, message: str) -> CatalogError:
    """The worker's :class:`CatalogError` of class ``cls_path`` (``catalog.exceptions.X``)."""
    module, _, name = cls_path.rpartition(".")
    cls = getattr(_exceptions, name, None) if module == _exceptions.__name__ else None
    if cls is None:
        try:
            cls = getattr(__import__(module, fromlist=[name]), name, None)
        except Exception:  # noqa: BLE001 - unknown class: the generic error
            cls = None
    if not (isinstance(cls, type) and issubclass(cls, CatalogError)):
        return CatalogError(message)
    try:
        err: CatalogError = cls(message)
    except TypeError:  # a constructor with other arguments (NoSuchTableError(db, table))
        err = cls.__new__(cls)
        Exception.__init__(err, message)
    return err


def _spark_error_line(e: BaseException) -> str:
    """One line naming why a Spark job failed: the worker's Python exception when there is one
    (the last line of the last Python traceback in the message), else the first line."""
    text = str(e)
    at = text.rfind("Traceback (most recent call last):")
    if at >= 0:
        block: list[str] = []
        for line in text[at:].splitlines()[1:]:
            if line.startswith("\tat ") or line.startswith("\t... "):
                break
            if line.strip():
                block.append(line.strip())
        if block:
            return block[-1][:1000]
    java = getattr(e, "java_exception", None)
    if java is not None:
        try:
            text = str(java.getMessage()) or text
        except Exception:  # noqa: BLE001 - the JVM may be gone
            pass
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(e).__name__)
    return first[:1000]


# -- the session ----------------------------------------------------------------------------------

_SESSION_LOCK = threading.Lock()
_session: Any = None  # the SparkSession this module started
_session_users = 0
_package_zip: str | None = None  # the zip shipped with addPyFile, under its own temp folder


def _package_zip_of(dest: Path) -> str:
    """A zip of the installed ``catalog`` package (sources only), for ``sc.addPyFile``."""
    root = Path(catalog.__file__).resolve().parent
    path = dest / "strata_catalog.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(root.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts and f.suffix not in (".pyc", ".pyo"):
                z.write(f, Path("catalog") / f.relative_to(root))
    return str(path)


def _acquire_session(conf: Mapping[str, str], master: str, app_name: str) -> tuple[Any, bool]:
    """The process's SparkSession and whether this module owns it (then it is counted)."""
    global _session, _session_users
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    with _SESSION_LOCK:
        active = SparkContext._active_spark_context
        if _session is not None and active is not None and _session.sparkContext is active:
            _session_users += 1
            _warn_if_other(_session, master)
            return _session, True
        _session = None
        if active is not None:
            session = SparkSession.builder.getOrCreate()
            _warn_if_other(session, master)
            _ship_package(session)
            return session, False
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = SparkSession.builder.master(master).appName(app_name)
        for k, v in conf.items():
            builder = builder.config(k, v)
        session = builder.getOrCreate()
        try:
            _ship_package(session)
        except BaseException:
            session.stop()
            raise
        _session, _session_users = session, 1
        return session, True


def _ship_package(session: Any) -> None:
    global _package_zip
    if _package_zip is None:
        _package_zip = _package_zip_of(Path(tempfile.mkdtemp(prefix="strata-spark-")))
    session.sparkContext.addPyFile(_package_zip)


def _warn_if_other(session: Any, master: str) -> None:
    running = session.sparkContext.master
    if running != master:
        log.warning("a SparkSession on %s is running in this process already; spark.master=%s "
                    "and the other spark.* options of this executor are not applied",
                    running, master)


def _release_session() -> None:
    global _session, _session_users, _package_zip
    with _SESSION_LOCK:
        _session_users -= 1
        if _session_users > 0 or _session is None:
            return
        session, _session = _session, None
        zip_path, _package_zip = _package_zip, None
    try:
        session.stop()
    finally:
        if zip_path is not None:
            shutil.rmtree(os.path.dirname(zip_path), ignore_errors=True)


_MEMORY_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def _memory_bytes(value: str) -> int:
    """Bytes of a Spark memory size (``512m``, ``2g``; a plain number is MiB, as
    ``spark.executor.pyspark.memory`` reads it)."""
    v = value.strip().lower().removesuffix("b")
    unit = _MEMORY_UNITS.get(v[-1:], 0) if v else 0
    digits = v[:-1] if unit else v
    if not digits.isdigit():
        raise InvalidOptionError(f"spark.executor.pyspark.memory must be a size like 2g, "
                                 f"got '{value}'")
    return int(digits) * (unit or 1 << 20)


def _forget_accumulator(accumulator: Any) -> None:
    """Drop a finished job's accumulator from pyspark's registry (late updates are ignored)."""
    try:
        from pyspark.accumulators import _accumulatorRegistry

        _accumulatorRegistry.pop(accumulator.aid, None)
    except Exception:  # noqa: BLE001 - a private registry; leaking one tally is harmless
        pass


# -- the executor ---------------------------------------------------------------------------------

class SparkExecutor:
    """Runs partition tasks as Spark jobs (see the module docstring); ``run`` is thread-safe."""

    #: Seconds between two looks at the accumulator and ``cancelled()`` while a job runs.
    poll_interval = 0.2

    def __init__(self, fs: Namespace, options: Mapping[str, str], settings: Settings,
                 memory_limit_bytes: int | None = None) -> None:
        self.fs = fs
        self.settings = settings
        spark = {k: str(v) for k, v in options.items() if k.startswith("spark.")}
        #: The memory one task's data work may hold (as the embedded executor's
        #: ``memory_limit_bytes``): the argument, else ``spark.executor.pyspark.memory``, else
        #: ``settings.transform_memory_limit_bytes``.
        self.memory_limit_bytes = memory_limit_bytes
        if self.memory_limit_bytes is None and spark.get("spark.executor.pyspark.memory"):
            self.memory_limit_bytes = _memory_bytes(spark["spark.executor.pyspark.memory"])
        if self.memory_limit_bytes is None:
            self.memory_limit_bytes = settings.transform_memory_limit_bytes
        self.master = spark.pop("spark.master", "") or DEFAULT_MASTER
        self.app_name = spark.pop("spark.app.name", "") or DEFAULT_APP_NAME
        self.pool = spark.pop("spark.scheduler.pool", None)
        if spark.get("spark.speculation", "false").strip().lower() != "false":
            raise InvalidOptionError("spark.speculation must stay false for the Spark executor: "
                                     "two attempts of a task would write the same output file")
        spark.setdefault("spark.ui.showConsoleProgress", "false")
        self.conf = spark
        self._lock = threading.Lock()
        self._session: Any = None
        self._owned = False
        self._closed = False

    # -- session -----------------------------------------------------------------------------

    def _context(self) -> Any:
        with self._lock:
            if self._closed:
                raise CatalogError("the Spark executor is closed")
            if self._session is None:
                try:
                    self._session, self._owned = _acquire_session(
                        self.conf, self.master, self.app_name)
                except CatalogError:
                    raise
                except Exception as e:
                    raise CatalogError(
                        f"cannot start Spark on {self.master}: {_spark_error_line(e)}") from e
            return self._session.sparkContext

    def close(self) -> None:
        """Stop the SparkSession (if this was the last executor using the one this module
        started)."""
        with self._lock:
            session, self._session, self._closed = self._session, None, True
            owned, self._owned = self._owned, False
        if session is not None and owned:
            _release_session()

    # -- run ---------------------------------------------------------------------------------

    def run(self, task: PartitionTask, progress: ProgressFn | None = None,
            cancelled: Callable[[], bool] | None = None) -> Layout:
        """Transform ``task`` on Spark; the same files and :class:`Layout` as
        :func:`~catalog.transform.executor.execute_partition`. Raises
        :class:`TransformCancelled`, the worker's :class:`CatalogError` (e.g.
        :class:`InvalidInputError` for bad data), or :class:`CatalogError` for a Spark failure;
        ``output_dir`` is deleted first in every case."""
        plan, table = task.plan, task.table
        output_dir = task.output_dir.rstrip("/")
        columns = table.sd.columns
        if not columns:
            raise InvalidInputError(f"table '{table.db_name}.{table.name}' has no columns")
        sort_keys = _sort_keys(task.definition, columns)
        schema = arrow_schema(columns)
        stats = _PartitionStats(columns, schema)
        mount, location = self.fs.resolve(output_dir)
        what = (f"partition '{plan.name or '(unpartitioned)'}' of "
                f"{table.db_name}.{table.name}")
        rows_written = bytes_written = 0
        side_dir = unparseable_dir(output_dir)  # the workers' side files (unparseable=side-file)
        try:
            remove_tree(self.fs, side_dir)  # an earlier attempt's
            self.fs.mkdirs(output_dir)
            if plan.output_files:
                storages: dict[str, dict[str, str]] = {mount.ufs_uri: mount.ufs_options}
                items = [(i, self._ship_inputs(files, storages),
                          plan.estimated_bytes[i] if i < len(plan.estimated_bytes) else 0)
                         for i, files in enumerate(plan.output_files)]
                ctx = _TaskContext(table, task.partition, task.definition, schema,
                                   tuple(sort_keys), location, tuple(storages.items()),
                                   self.memory_limit_bytes)
                results = self._run_job(ctx, items, what, progress, cancelled)
                for r in results:
                    assert r.stats is not None
                    stats = merge_partition_stats(stats, r.stats)
                    rows_written += r.rows
                    bytes_written += r.size
        except BaseException:
            for path in (output_dir, side_dir):
                try:
                    remove_tree(self.fs, path)
                except Exception:  # noqa: BLE001 - keep the original error
                    pass
            raise
        return Layout(
            partition=plan.name, version=task.version, location=location,
            input_format=PARQUET_INPUT, output_format=PARQUET_OUTPUT,
            serde=SerDe(serialization_lib=PARQUET_SERDE, parameters={"serialization.format": "1"}),
            parameters={"numRows": str(rows_written), "totalSize": str(bytes_written),
                        "numFiles": str(len(plan.output_files))},
            column_stats=stats.result(), source_fingerprint=task.source_fingerprint)

    def _ship_inputs(self, files: list[str], storages: dict[str, dict[str, str]]) -> list[str]:
        """``files`` as the workers open them (local paths as they are, the rest resolved to UFS
        URIs); the mounts holding them are added to ``storages``."""
        out = []
        for uri in files:
            if _is_local(uri):
                out.append(uri)
                continue
            _, ufs_uri = self.fs.location_of(uri)
            found = self.fs.reverse(ufs_uri)
            if found is not None:
                storages[found[0].ufs_uri] = found[0].ufs_options
            out.append(ufs_uri)
        return out

    def _run_job(self, ctx: _TaskContext, items: list[tuple[int, list[str], int]], what: str,
                 progress: ProgressFn | None,
                 cancelled: Callable[[], bool] | None) -> list[_GroupResult]:
        """Run one task per group; the groups' results in group order."""
        from pyspark import InheritableThread

        def is_cancelled() -> bool:
            return cancelled is not None and bool(cancelled())

        if is_cancelled():
            raise TransformCancelled(f"transformation of {what} was cancelled")
        sc = self._context()
        group = f"strata-transform-{uuid.uuid4().hex}"
        with _SESSION_LOCK:  # pyspark numbers accumulators without a lock
            accumulator = sc.accumulator(_Tally(), _TallyParam())
        rdd = sc.parallelize(items, len(items)).mapPartitions(
            functools.partial(_run_groups, ctx, accumulator))
        box: dict[str, Any] = {}

        def collect() -> None:
            try:
                sc.setJobGroup(group, f"Strata: transform {what}", interruptOnCancel=True)
                if self.pool:
                    sc.setLocalProperty("spark.scheduler.pool", self.pool)
                box["results"] = rdd.collect()
            except BaseException as e:  # noqa: BLE001 - handed to the calling thread
                box["error"] = e

        thread = InheritableThread(target=collect, name=group, daemon=True)
        try:
            thread.start()
            return self._follow(sc, group, thread, box, accumulator, items, what, progress,
                                is_cancelled)
        finally:
            _forget_accumulator(accumulator)

    def _follow(self, sc: Any, group: str, thread: threading.Thread, box: dict[str, Any],
                accumulator: Any, items: list[tuple[int, list[str], int]], what: str,
                progress: ProgressFn | None,
                is_cancelled: Callable[[], bool]) -> list[_GroupResult]:
        """Poll the running job until it ends (progress, cancellation, failed groups); its
        results in group order."""
        reported = 0
        stop: BaseException | None = None
        try:
            while thread.is_alive():
                thread.join(self.poll_interval)
                tally: _Tally = accumulator.value
                if tally.errors:
                    _, cls, message = min(tally.errors)
                    stop = _rebuild_error(cls, message)
                    break
                if progress is not None and tally.done > reported:
                    reported = tally.done
                    progress(tally.bytes_read, tally.rows, tally.bytes_written, tally.rows)
                if is_cancelled():
                    stop = TransformCancelled(f"transformation of {what} was cancelled")
                    break
        except BaseException as e:  # a failing progress callback, KeyboardInterrupt
            stop = e
        if stop is not None:
            self._cancel(sc, group, thread)
            raise stop
        thread.join()
        if "error" in box:
            tally = accumulator.value
            if tally.errors:
                _, cls, message = min(tally.errors)
                raise _rebuild_error(cls, message)
            failure: BaseException = box["error"]
            raise CatalogError(f"the Spark job transforming {what} failed: "
                               f"{_spark_error_line(failure)}") from failure
        results: list[_GroupResult] = sorted(box["results"], key=lambda r: r.index)
        failed = [r for r in results if r.error is not None]
        if failed:
            assert failed[0].error is not None
            raise _rebuild_error(*failed[0].error)
        if len(results) != len(items):
            raise CatalogError(f"the Spark job transforming {what} returned {len(results)} "
                               f"results for {len(items)} output files")
        if progress is not None and reported < len(results):
            rows = sum(r.rows for r in results)
            progress(sum(i[2] for i in items), rows, sum(r.size for r in results), rows)
        return results

    def _cancel(self, sc: Any, group: str, thread: threading.Thread) -> None:
        """Cancel job group ``group`` and wait until its job has ended and none of its tasks
        runs any more (at most :data:`CANCEL_WAIT_S`)."""
        try:
            sc.cancelJobGroup(group)
        except Exception as e:  # noqa: BLE001 - the job may have ended; the JVM may be gone
            log.warning("cancelling Spark job group %s: %s", group, _spark_error_line(e))
        deadline = time.monotonic() + CANCEL_WAIT_S
        thread.join(max(0.0, deadline - time.monotonic()))
        try:
            tracker = sc.statusTracker()
            while time.monotonic() < deadline:
                active = 0
                for job_id in tracker.getJobIdsForGroup(group):
                    job = tracker.getJobInfo(job_id)
                    for stage_id in (job.stageIds if job is not None else []):
                        stage = tracker.getStageInfo(stage_id)
                        active += stage.numActiveTasks if stage is not None else 0
                if active == 0:
                    return
                time.sleep(0.1)
            log.warning("tasks of cancelled Spark job group %s still run after %.0fs", group,
                        CANCEL_WAIT_S)
        except Exception as e:  # noqa: BLE001 - best effort
            log.warning("waiting for Spark job group %s to end: %s", group, _spark_error_line(e))


__all__ = ["SparkExecutor", "merge_column_stats", "merge_partition_stats"]
