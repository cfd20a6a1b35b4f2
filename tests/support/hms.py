"""A real Hive Metastore 2.3 (from pyspark's jars, embedded Derby) for tests.

HMS 2.3 always binds its Thrift socket to the wildcard address: it passes a
``null`` host to ``HiveAuthUtils.getServerSocket``, and
``hive.metastore.thrift.bind.host`` does not exist before Hive 3 (2.3 only logs
"HiveConf of name ... does not exist").  To keep the server on loopback we
compile a tiny drop-in replacement of
``org.apache.hadoop.hive.common.auth.HiveAuthUtils`` that falls back to the
``strata.hms.bind.host`` system property and put it in front of the jars on the
classpath.  Without a ``javac`` the server still starts but
listens on all interfaces (a warning is logged).
"""
from __future__ import annotations

import atexit
import logging
import os
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
from thrift.protocol import TBinaryProtocol
from thrift.transport import TSocket, TTransport

from tests.support.ports import LOOPBACK, free_port, log_tail, wait_for_port

log = logging.getLogger(__name__)

HMS_MAIN = "org.apache.hadoop.hive.metastore.HiveMetaStore"

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

_LOG4J2 = """\
status = WARN
name = StrataTestHMS
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{ISO8601} %-5p [%t] %c{2}: %m%n
rootLogger.level = INFO
rootLogger.appenderRef.console.ref = console
logger.audit.name = org.apache.hadoop.hive.metastore.HiveMetaStore.audit
logger.audit.level = WARN
logger.dn.name = DataNucleus
logger.dn.level = WARN
logger.ds.name = Datastore
logger.ds.level = WARN
logger.bonecp.name = com.jolbox.bonecp
logger.bonecp.level = WARN
# Per-call INFO lines (every Thrift call, every connection) would flood benchmarks.
logger.hms.name = org.apache.hadoop.hive.metastore.HiveMetaStore
logger.hms.level = WARN
logger.os.name = org.apache.hadoop.hive.metastore.ObjectStore
logger.os.level = WARN
logger.sql.name = org.apache.hadoop.hive.metastore.MetaStoreDirectSql
logger.sql.level = WARN
"""

# Drop-in replacement for Hive 2.3.10's HiveAuthUtils (same public API); the only
# change: a null/empty host means System.getProperty("strata.hms.bind.host").
_HIVE_AUTH_UTILS_JAVA = """\
package org.apache.hadoop.hive.common.auth;

import java.net.InetSocketAddress;
import java.net.UnknownHostException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.SSLServerSocket;
import javax.net.ssl.SSLSocket;
import org.apache.thrift.TConfiguration;
import org.apache.thrift.transport.TSSLTransportFactory;
import org.apache.thrift.transport.TServerSocket;
import org.apache.thrift.transport.TSocket;
import org.apache.thrift.transport.TTransport;
import org.apache.thrift.transport.TTransportException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

public class HiveAuthUtils {
  private static final Logger LOG = LoggerFactory.getLogger(HiveAuthUtils.class);

  private static InetSocketAddress bindAddress(String host, int port) {
    if (host == null || host.isEmpty()) {
      host = System.getProperty("strata.hms.bind.host");
    }
    if (host == null || host.isEmpty()) {
      return new InetSocketAddress(port);
    }
    LOG.info("Binding Thrift server socket to " + host + ":" + port);
    return new InetSocketAddress(host, port);
  }

  public static TTransport getSocketTransport(String host, int port, int loginTimeout)
      throws TTransportException {
    return new TSocket(new TConfiguration(), host, port, loginTimeout);
  }

  public static TTransport getSSLSocket(String host, int port, int loginTimeout)
      throws TTransportException {
    return getSSLSocketWithHttps(TSSLTransportFactory.getClientSocket(host, port, loginTimeout));
  }

  public static TTransport getSSLSocket(String host, int port, int loginTimeout,
      String trustStorePath, String trustStorePassWord) throws TTransportException {
    return getSSLSocket(host, port, loginTimeout, loginTimeout, trustStorePath, trustStorePassWord);
  }

  public static TTransport getSSLSocket(String host, int port, int socketTimeout,
      int connectionTimeout, String trustStorePath, String trustStorePassWord)
      throws TTransportException {
    TSSLTransportFactory.TSSLTransportParameters params =
        new TSSLTransportFactory.TSSLTransportParameters();
    params.setTrustStore(trustStorePath, trustStorePassWord);
    params.requireClientAuth(true);
    TSocket tSSLSocket = TSSLTransportFactory.getClientSocket(host, port, socketTimeout, params);
    tSSLSocket.setConnectTimeout(connectionTimeout);
    return getSSLSocketWithHttps(tSSLSocket);
  }

  private static TSocket getSSLSocketWithHttps(TSocket tSSLSocket) throws TTransportException {
    SSLSocket sslSocket = (SSLSocket) tSSLSocket.getSocket();
    SSLParameters sslParams = sslSocket.getSSLParameters();
    if (sslSocket.getLocalAddress().getHostAddress().equals("127.0.0.1")) {
      sslParams.setEndpointIdentificationAlgorithm(null);
    } else {
      sslParams.setEndpointIdentificationAlgorithm("HTTPS");
    }
    sslSocket.setSSLParameters(sslParams);
    return new TSocket(sslSocket);
  }

  public static TServerSocket getServerSocket(String hiveHost, int portNum)
      throws TTransportException {
    return new TServerSocket(bindAddress(hiveHost, portNum));
  }

  public static TServerSocket getServerSSLSocket(String hiveHost, int portNum, String keyStorePath,
      String keyStorePassWord, List<String> sslVersionBlacklist)
      throws TTransportException, UnknownHostException {
    TSSLTransportFactory.TSSLTransportParameters params =
        new TSSLTransportFactory.TSSLTransportParameters();
    params.setKeyStore(keyStorePath, keyStorePassWord);
    InetSocketAddress serverAddress = bindAddress(hiveHost, portNum);
    TServerSocket thriftServerSocket =
        TSSLTransportFactory.getServerSocket(portNum, 0, serverAddress.getAddress(), params);
    if (thriftServerSocket.getServerSocket() instanceof SSLServerSocket) {
      List<String> blacklist = new ArrayList<String>();
      for (String p : sslVersionBlacklist) {
        blacklist.add(p.trim().toLowerCase());
      }
      SSLServerSocket sslServerSocket = (SSLServerSocket) thriftServerSocket.getServerSocket();
      List<String> enabled = new ArrayList<String>();
      for (String protocol : sslServerSocket.getEnabledProtocols()) {
        if (blacklist.contains(protocol.toLowerCase())) {
          LOG.debug("Disabling SSL Protocol: " + protocol);
        } else {
          enabled.add(protocol);
        }
      }
      sslServerSocket.setEnabledProtocols(enabled.toArray(new String[0]));
      LOG.info("SSL Server Socket Enabled Protocols: "
          + Arrays.toString(sslServerSocket.getEnabledProtocols()));
    }
    return thriftServerSocket;
  }
}
"""


def java_executable() -> str:
    """``$JAVA_HOME/bin/java`` if JAVA_HOME is set, else ``java`` from PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.exists():
            return str(candidate)
        raise RuntimeError(f"JAVA_HOME={java_home} has no bin/java")
    found = shutil.which("java")
    if not found:
        raise RuntimeError("no java on PATH and JAVA_HOME is not set")
    return found


def _javac_executable(java: str) -> str | None:
    sibling = Path(os.path.realpath(java)).parent / "javac"
    if sibling.exists():
        return str(sibling)
    return shutil.which("javac")


def spark_jars_dir() -> Path:
    """The ``jars`` directory of the installed pyspark."""
    import pyspark

    jars = Path(pyspark.__file__).resolve().parent / "jars"
    if not jars.is_dir():
        raise RuntimeError(f"pyspark jars not found at {jars}")
    return jars


def _site_xml(props: dict[str, str]) -> str:
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


class HiveMetastore:
    """A real HMS 2.3.10 Thrift server with an embedded Derby database in ``work_dir``."""

    def __init__(self, work_dir: Path, port: int | None = None) -> None:
        self.work_dir = Path(work_dir).resolve()
        self._port = port if port is not None else free_port()
        self.conf_dir = self.work_dir / "conf"
        self.warehouse_dir = self.work_dir / "warehouse"
        self.derby_dir = self.work_dir / "metastore_db"
        self.log_file = self.work_dir / "hms.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.bound_to_loopback = False

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
        """A new opened Thrift client for this metastore (caller closes it)."""
        return open_client(LOOPBACK, self._port, timeout)

    def _write_conf(self) -> None:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.warehouse_dir.mkdir(parents=True, exist_ok=True)
        scratch = self.work_dir / "scratch"
        props = {
            "javax.jdo.option.ConnectionURL":
                f"jdbc:derby:;databaseName={self.derby_dir};create=true",
            "javax.jdo.option.ConnectionDriverName": "org.apache.derby.jdbc.EmbeddedDriver",
            "datanucleus.schema.autoCreateAll": "true",
            "hive.metastore.schema.verification": "false",
            "hive.metastore.schema.verification.record.version": "false",
            "hive.async.log.enabled": "false",
            "hive.metastore.warehouse.dir": self.warehouse_dir.as_uri(),
            "hive.exec.scratchdir": str(scratch / "hdfs"),
            "hive.exec.local.scratchdir": str(scratch / "local"),
            "hive.metastore.port": str(self._port),
        }
        (self.conf_dir / "hive-site.xml").write_text(_site_xml(props), encoding="utf-8")
        (self.conf_dir / "hive-log4j2.properties").write_text(_LOG4J2, encoding="utf-8")

    def _compile_bind_patch(self, java: str) -> Path | None:
        """Compile the loopback-binding HiveAuthUtils; None if javac is unavailable."""
        out_dir = self.work_dir / "bindpatch"
        marker = out_dir / "org" / "apache" / "hadoop" / "hive" / "common" / "auth"
        if (marker / "HiveAuthUtils.class").exists():
            return out_dir
        javac = _javac_executable(java)
        if javac is None:
            log.warning("no javac found: HMS 2.3 will listen on all interfaces")
            return None
        src_dir = self.work_dir / "bindpatch-src"
        src_dir.mkdir(parents=True, exist_ok=True)
        src = src_dir / "HiveAuthUtils.java"
        src.write_text(_HIVE_AUTH_UTILS_JAVA, encoding="utf-8")
        jars = spark_jars_dir()
        cp = os.pathsep.join(
            str(next(jars.glob(pattern)))
            for pattern in ("hive-common-*.jar", "libthrift-*.jar", "slf4j-api-*.jar")
        )
        result = subprocess.run(
            [javac, "-nowarn", "--release", "8", "-cp", cp, "-d", str(out_dir), str(src)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            log.warning("compiling HiveAuthUtils patch failed (HMS binds all interfaces):\n%s",
                        result.stderr)
            return None
        return out_dir

    def start(self, timeout: float = 180) -> None:
        """Launch the server and wait until ``get_all_databases`` succeeds."""
        if self._proc is not None:
            raise RuntimeError("HiveMetastore already started")
        deadline = time.monotonic() + timeout
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with socket.socket() as probe:
            if probe.connect_ex((LOOPBACK, self._port)) == 0:
                raise RuntimeError(f"port {self._port} is already in use")
        self._write_conf()
        java = java_executable()
        patch_dir = self._compile_bind_patch(java)
        self.bound_to_loopback = patch_dir is not None
        classpath = [str(self.conf_dir)]
        if patch_dir is not None:
            classpath.append(str(patch_dir))
        classpath.append(str(spark_jars_dir() / "*"))
        cmd = [
            java,
            "-Xmx512m",
            "-XX:+UseSerialGC",
            *JAVA_MODULE_OPTIONS,
            f"-Dstrata.hms.bind.host={LOOPBACK}",
            f"-Dlog4j.configurationFile={self.conf_dir / 'hive-log4j2.properties'}",
            f"-Dderby.stream.error.file={self.work_dir / 'derby.log'}",
            f"-Djava.io.tmpdir={self._tmp_dir()}",
            "-Djava.net.preferIPv4Stack=true",
            "-cp",
            os.pathsep.join(classpath),
            HMS_MAIN,
            "-p",
            str(self._port),
        ]
        env = dict(os.environ)
        for var in ("HADOOP_CONF_DIR", "HIVE_CONF_DIR", "HADOOP_HOME", "HIVE_HOME"):
            env.pop(var, None)
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
                          proc=self._proc, log_file=self.log_file, what="Hive Metastore")
            self._wait_for_thrift(deadline)
        except BaseException:
            self.stop()
            raise

    def _tmp_dir(self) -> Path:
        tmp = self.work_dir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp

    def _wait_for_thrift(self, deadline: float) -> None:
        assert self._proc is not None
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"Hive Metastore (pid {self._proc.pid}) exited with code "
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
            f"Hive Metastore on port {self._port} did not answer get_all_databases "
            f"(last error: {last_error!r}); log tail:\n{log_tail(self.log_file)}"
        )

    def stop(self, grace: float = 10.0) -> None:
        """Terminate the server by pid: SIGTERM, then SIGKILL after ``grace`` seconds."""
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
        atexit.unregister(self.stop)

    def __enter__(self) -> HiveMetastore:
        if self._proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
