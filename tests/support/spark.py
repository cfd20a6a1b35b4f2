"""A long-lived Spark SQL worker (pyspark + Hive support) in a subprocess.

Each :class:`SparkSql` owns one Python subprocess running a local Spark session
bound to one metastore, so several can coexist in one pytest process.  Requests
and answers are JSON lines over two dedicated pipes; the worker's stdout/stderr
(and Spark's JVM logging) go to ``work_dir/spark.log``.

Row values come back as plain Python values: ``int``, ``float``, ``bool``,
``str``, ``None``; DECIMAL as ``str(Decimal)``, DATE/TIMESTAMP as ISO strings
(session time zone UTC), BINARY as a hex string, ARRAY as ``list``, MAP/STRUCT
as ``dict``.
"""
from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from tests.support.ports import log_tail

_REPO_ROOT = Path(__file__).resolve().parents[2]


class SparkSqlError(RuntimeError):
    """A query failed inside Spark; the message is Spark's."""

    def __init__(self, message: str, error_class: str | None = None, query: str = "") -> None:
        super().__init__(message)
        self.error_class = error_class
        self.query = query


class SparkWorkerError(RuntimeError):
    """The worker died, failed to start, or a query timed out (worker killed)."""


class SparkSql:
    """Run Spark SQL against ``metastore_uri`` in a dedicated worker process.

    The constructor waits (``startup_timeout``) until Spark is up and has reached
    the metastore.  Not thread-safe: one query at a time per instance.
    """

    def __init__(
        self,
        metastore_uri: str,
        work_dir: Path,
        *,
        startup_timeout: float = 300.0,
        query_timeout: float = 600.0,
        driver_memory: str = "1g",
        extra_conf: dict[str, str] | None = None,
    ) -> None:
        self.metastore_uri = metastore_uri
        self.work_dir = Path(work_dir).resolve()
        self.query_timeout = query_timeout
        self.log_file = self.work_dir / "spark.log"
        self.spark_version: str | None = None
        self._buf = b""
        self._next_id = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._req_w: int | None = None
        self._resp_r: int | None = None
        self._closed_reason = "closed"
        self.work_dir.mkdir(parents=True, exist_ok=True)
        config = {
            "metastore_uri": metastore_uri,
            "work_dir": str(self.work_dir),
            "driver_memory": driver_memory,
            "extra_conf": dict(extra_conf or {}),
        }
        self._start(config, startup_timeout)

    # -- lifecycle ---------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _start(self, config: dict[str, Any], timeout: float) -> None:
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        tmp = self.work_dir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(
            {
                "TZ": "UTC",
                "SPARK_LOCAL_IP": "127.0.0.1",
                "PYSPARK_PYTHON": sys.executable,
                "PYSPARK_DRIVER_PYTHON": sys.executable,
                "TMPDIR": str(tmp),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.pop("PYSPARK_SUBMIT_ARGS", None)
        bootstrap = (
            "import sys; sys.path.insert(0, sys.argv[1]); "
            "from tests.support.spark import _worker_main; _worker_main(sys.argv[2:])"
        )
        self._log = open(self.log_file, "ab")
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", bootstrap, str(_REPO_ROOT),
                 str(req_r), str(resp_w), json.dumps(config)],
                cwd=self.work_dir,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=env,
                pass_fds=(req_r, resp_w),
                start_new_session=True,
            )
        finally:
            os.close(req_r)
            os.close(resp_w)
        self._req_w, self._resp_r = req_w, resp_r
        atexit.register(self._kill)
        try:
            hello = self._read_message(timeout, "Spark startup")
            if not hello.get("ok"):
                raise SparkWorkerError(
                    f"Spark worker failed to start: {hello.get('error')}\n"
                    f"log tail:\n{log_tail(self.log_file)}"
                )
            self.spark_version = hello.get("spark_version")
        except BaseException:
            self._kill()
            raise

    def close(self, timeout: float = 60.0) -> None:
        """Stop Spark and the worker (politely, then SIGTERM/SIGKILL by pid)."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None and self._req_w is not None:
            try:
                os.write(self._req_w, b'{"op": "close"}\n')
            except OSError:
                pass
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self._kill()

    def _kill(self, reason: str = "closed") -> None:
        """Terminate the worker's process group (the worker and its Spark JVM)."""
        if self._proc is not None:
            self._closed_reason = reason
        proc, self._proc = self._proc, None
        for fd in (self._req_w, self._resp_r):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._req_w = self._resp_r = None
        if proc is not None:
            pgid = proc.pid  # start_new_session=True: the worker leads its own group
            # After a polite close the JVM follows its (exited) worker on its own.
            if proc.poll() is None or not _wait_group_gone(pgid, 10.0):
                for sig in (signal.SIGTERM, signal.SIGKILL):
                    try:
                        os.killpg(pgid, sig)
                    except ProcessLookupError:
                        break
                    try:
                        proc.wait(timeout=10.0)
                    except subprocess.TimeoutExpired:
                        continue
                    if _wait_group_gone(pgid, 10.0):
                        break
        if self._log is not None:
            self._log.close()
            self._log = None
        atexit.unregister(self._kill)

    def __enter__(self) -> SparkSql:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- queries -----------------------------------------------------------------

    def sql(self, query: str, timeout: float | None = None) -> list[tuple[Any, ...]]:
        """Run one SQL statement and return all result rows as tuples."""
        if self._proc is None or self._req_w is None:
            raise SparkWorkerError(f"Spark worker is not running ({self._closed_reason})")
        if self._proc.poll() is not None:
            self._dead("before the query")
        self._next_id += 1
        request = json.dumps({"op": "sql", "id": self._next_id, "query": query}) + "\n"
        try:
            _write_all(self._req_w, request.encode("utf-8"))
        except OSError:
            self._dead("while sending the query")
        answer = self._read_message(self.query_timeout if timeout is None else timeout,
                                    f"query {query[:200]!r}")
        if answer.get("id") != self._next_id:
            raise SparkWorkerError(f"out-of-sequence answer from Spark worker: {answer!r}")
        if answer.get("fatal"):
            self._kill("Spark JVM died")
            raise SparkWorkerError(f"{answer.get('error')}; log tail:\n{log_tail(self.log_file)}")
        if not answer.get("ok"):
            raise SparkSqlError(str(answer.get("error")), answer.get("error_class"), query)
        return [tuple(row) for row in answer["rows"]]

    def _dead(self, when: str) -> None:
        code = self._proc.poll() if self._proc is not None else None
        self._kill(f"died {when}")
        raise SparkWorkerError(
            f"Spark worker died {when} (exit code {code}); log tail:\n"
            f"{log_tail(self.log_file)}"
        )

    def _read_message(self, timeout: float, what: str) -> dict[str, Any]:
        assert self._resp_r is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._kill(f"killed after {what} timed out")
                raise SparkWorkerError(
                    f"{what} did not finish within {timeout:.0f}s; worker killed; "
                    f"log tail:\n{log_tail(self.log_file)}"
                )
            ready, _, _ = select.select([self._resp_r], [], [], min(remaining, 1.0))
            if not ready:
                continue
            chunk = os.read(self._resp_r, 1 << 20)
            if not chunk:
                # EOF: give the exit code a moment to appear for the message.
                if self._proc is not None:
                    try:
                        self._proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        pass
                self._dead(f"during {what}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        message: dict[str, Any] = json.loads(line)
        return message


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _wait_group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


# -- worker side (runs in the subprocess) -------------------------------------------


def _plain(value: Any) -> Any:
    """Convert a value from ``Row`` into JSON-friendly plain Python."""
    import datetime
    import decimal

    from pyspark.sql import Row

    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, Row):
        return {k: _plain(v) for k, v in value.asDict(recursive=False).items()}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


def _build_session(config: dict[str, Any]) -> Any:
    from pyspark.sql import SparkSession

    work = Path(config["work_dir"])
    for sub in ("warehouse", "local", "scratch/hdfs", "scratch/local", "tmp"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    java_opts = (
        f"-Djava.io.tmpdir={work / 'tmp'} -Dderby.system.home={work} "
        "-Djava.net.preferIPv4Stack=true -XX:+UseSerialGC"
    )
    conf = {
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.driver.memory": config["driver_memory"],
        "spark.driver.extraJavaOptions": java_opts,
        "spark.sql.shuffle.partitions": "2",
        "spark.default.parallelism": "2",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.warehouse.dir": (work / "warehouse").as_uri(),
        "spark.local.dir": str(work / "local"),
        "spark.hadoop.hive.metastore.uris": config["metastore_uri"],
        "spark.hadoop.hive.exec.scratchdir": str(work / "scratch" / "hdfs"),
        "spark.hadoop.hive.exec.local.scratchdir": str(work / "scratch" / "local"),
        "spark.sql.adaptive.enabled": "false",
    }
    conf.update(config["extra_conf"])
    builder = SparkSession.builder.master("local[2]").appName("strata-test-spark")
    for key, val in conf.items():
        builder = builder.config(key, val)
    spark = builder.enableHiveSupport().getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    spark.sql("SHOW DATABASES").collect()  # connect to the metastore now
    return spark


def _worker_main(argv: list[str]) -> None:
    """Entry point of the worker subprocess: ``REQ_FD RESP_FD CONFIG_JSON``."""
    req_fd, resp_fd, config = int(argv[0]), int(argv[1]), json.loads(argv[2])
    requests = os.fdopen(req_fd, "r", encoding="utf-8")
    responses = os.fdopen(resp_fd, "w", encoding="utf-8")

    def reply(message: dict[str, Any]) -> None:
        responses.write(json.dumps(message) + "\n")
        responses.flush()

    try:
        spark = _build_session(config)
    except Exception as exc:  # noqa: BLE001 - report to the parent
        import traceback

        traceback.print_exc()
        reply({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return
    reply({"ok": True, "spark_version": spark.version})
    try:
        for line in requests:
            if not line.strip():
                continue
            request = json.loads(line)
            if request.get("op") == "close":
                break
            try:
                df = spark.sql(request["query"])
                rows = [[_plain(v) for v in row] for row in df.collect()]
                reply({"id": request["id"], "ok": True, "columns": df.columns, "rows": rows})
            except Exception as exc:  # noqa: BLE001 - report to the parent
                code = _jvm_exit_code(spark)
                if code is not None:
                    reply({"id": request["id"], "ok": False, "fatal": True,
                           "error": f"Spark JVM died (exit code {code}): {exc}"})
                    return
                reply({"id": request["id"], "ok": False,
                       "error_class": type(exc).__name__, "error": str(exc)})
    finally:
        if _jvm_exit_code(spark) is None:
            spark.stop()


def _jvm_exit_code(spark: Any) -> int | None:
    """The exit code of the session's JVM, or None while it runs."""
    proc = getattr(spark.sparkContext._gateway, "proc", None)
    return None if proc is None else proc.poll()
