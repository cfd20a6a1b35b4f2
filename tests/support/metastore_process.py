"""The lifecycle shared by the test metastores (HMS 2.3 in ``hms.py``, Hive 4 in ``hms4.py``).

:class:`MetastoreProcess` runs a metastore Thrift server as a java subprocess whose
config, Derby database, warehouse and log live in ``work_dir``: it launches it (own
session, output to ``log_file``, stopped at interpreter exit), waits for the port and
then for a Thrift ``get_all_databases`` (log tail on failure), and stops it by pid.
Subclasses provide only their config (:meth:`MetastoreProcess._write_conf`) and
their java command line (:meth:`MetastoreProcess.command`).
"""
from __future__ import annotations

import atexit
import os
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self
from xml.sax.saxutils import escape

from hmsclient import hmsclient
from thrift.protocol import TBinaryProtocol
from thrift.transport import TSocket, TTransport

from tests.support.ports import LOOPBACK, free_port, log_tail, stop_process, wait_for_port

#: The server class of both HMS 2.3 and the Hive 4 standalone metastore.
HIVE_METASTORE_MAIN = "org.apache.hadoop.hive.metastore.HiveMetaStore"

# Same module opens Spark's launcher adds for Java 17 (DataNucleus/Hive reflection).
JAVA_MODULE_OPTIONS = [
    "-XX:+IgnoreUnrecognizedVMOptions",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.invoke=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.net=ALL-UNNAMED",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.cs=ALL-UNNAMED",
    "--add-opens=java.base/sun.security.action=ALL-UNNAMED",
    "--add-opens=java.base/sun.util.calendar=ALL-UNNAMED",
]

# Inherited settings that would point Hive/Hadoop at some other installation's config.
_FOREIGN_ENV = ("HADOOP_CONF_DIR", "HIVE_CONF_DIR", "METASTORE_CONF_DIR",
                "HADOOP_HOME", "HIVE_HOME", "METASTORE_HOME")


_LOG4J2_CONSOLE = """\
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{ISO8601} %-5p [%t] %c{2}: %m%n
rootLogger.level = INFO
rootLogger.appenderRef.console.ref = console
"""


def log4j2_properties(name: str, quiet: tuple[str, ...]) -> str:
    """A log4j2 config called ``name``: INFO and up to stderr, the ``quiet`` loggers at WARN."""
    loggers = "".join(f"logger.q{i}.name = {logger}\nlogger.q{i}.level = WARN\n"
                      for i, logger in enumerate(quiet))
    return f"status = WARN\nname = {name}\n{_LOG4J2_CONSOLE}{loggers}"


def site_xml(props: dict[str, str]) -> str:
    """A Hadoop-style ``*-site.xml`` holding ``props``."""
    body = "".join(
        f"  <property><name>{escape(k)}</name><value>{escape(v)}</value></property>\n"
        for k, v in props.items()
    )
    return f'<?xml version="1.0"?>\n<configuration>\n{body}</configuration>\n'


def open_client(host: str, port: int, timeout: float = 30.0) -> hmsclient.HMSClient:
    """An opened hmsclient ``HMSClient`` with a socket timeout (close it after use)."""
    sock = TSocket.TSocket(host, port)
    sock.setTimeout(int(timeout * 1000))
    transport = TTransport.TBufferedTransport(sock)
    client = hmsclient.HMSClient(iprot=TBinaryProtocol.TBinaryProtocol(transport))
    client.open()
    return client


class MetastoreProcess:
    """A metastore Thrift server on 127.0.0.1 with its Derby database in ``work_dir``."""

    #: What the server is called in error messages.
    what = "metastore"
    #: The server's stdout/stderr file, relative to ``work_dir``.
    log_name = "metastore.log"

    def __init__(self, work_dir: Path, port: int | None = None) -> None:
        self.work_dir = Path(work_dir).resolve()
        self._port = port if port is not None else free_port()
        self.conf_dir = self.work_dir / "conf"
        self.warehouse_dir = self.work_dir / "warehouse"
        self.derby_dir = self.work_dir / "metastore_db"
        self.log_file = self.work_dir / self.log_name
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

    # -- what a subclass provides ------------------------------------------------------

    def _write_conf(self) -> None:
        """Write the server's config into ``conf_dir`` (see :meth:`_write_site`)."""
        raise NotImplementedError

    def command(self) -> list[str]:
        """The java command line that runs the server."""
        raise NotImplementedError

    # -- helpers for subclasses -----------------------------------------------------

    def _write_site(self, site_name: str, props: dict[str, str],
                    log4j_name: str, log4j: str) -> None:
        """Create ``conf_dir`` and the warehouse; write the site XML and the log4j2 config."""
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.warehouse_dir.mkdir(parents=True, exist_ok=True)
        (self.conf_dir / site_name).write_text(site_xml(props), encoding="utf-8")
        (self.conf_dir / log4j_name).write_text(log4j, encoding="utf-8")

    def _java_command(self, java: str, jvm_options: list[str], system_props: list[str],
                      classpath: list[str]) -> list[str]:
        """``java`` running the metastore on :attr:`port`, with the options every server gets."""
        return [
            java,
            *jvm_options,
            *JAVA_MODULE_OPTIONS,
            *system_props,
            f"-Dderby.stream.error.file={self.work_dir / 'derby.log'}",
            f"-Djava.io.tmpdir={self._tmp_dir()}",
            "-Djava.net.preferIPv4Stack=true",
            "-cp",
            os.pathsep.join(classpath),
            HIVE_METASTORE_MAIN,
            "-p",
            str(self._port),
        ]

    def _tmp_dir(self) -> Path:
        tmp = self.work_dir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, timeout: float = 180) -> None:
        """Launch the server and wait until ``get_all_databases`` answers over Thrift."""
        if self._proc is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        started = time.monotonic()
        deadline = started + timeout
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with socket.socket() as probe:
            if probe.connect_ex((LOOPBACK, self._port)) == 0:
                raise RuntimeError(f"port {self._port} is already in use")
        self._write_conf()
        cmd = self.command()
        env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_ENV}
        self._log = open(self.log_file, "ab")
        self._proc = subprocess.Popen(
            cmd,
            cwd=self.work_dir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        atexit.register(self.stop)
        try:
            wait_for_port(LOOPBACK, self._port, max(1.0, deadline - time.monotonic()),
                          proc=self._proc, log_file=self.log_file, what=self.what)
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
                    f"{self.what} (pid {self._proc.pid}) exited with code "
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
            f"{self.what} on port {self._port} did not answer get_all_databases "
            f"(last error: {last_error!r}); log tail:\n{log_tail(self.log_file)}"
        )

    def stop(self, grace: float = 10.0) -> None:
        """Stop the server by pid: SIGTERM, then SIGKILL after ``grace`` seconds."""
        proc, self._proc = self._proc, None
        stop_process(proc, grace)
        if self._log is not None:
            self._log.close()
            self._log = None
        atexit.unregister(self.stop)

    def __enter__(self) -> Self:
        if self._proc is None:
            self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
