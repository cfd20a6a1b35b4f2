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

import logging
import os
import shutil
import subprocess
from pathlib import Path

# JAVA_MODULE_OPTIONS and open_client are re-exported (callers import them from here).
from tests.support.metastore_process import (
    HIVE_METASTORE_MAIN,
    JAVA_MODULE_OPTIONS,  # noqa: F401 - re-exported
    MetastoreProcess,
    log4j2_properties,
    open_client,  # noqa: F401 - re-exported
)
from tests.support.ports import LOOPBACK

log = logging.getLogger(__name__)

HMS_MAIN = HIVE_METASTORE_MAIN

_LOG4J2 = log4j2_properties("StrataTestHMS", quiet=(
    "org.apache.hadoop.hive.metastore.HiveMetaStore.audit",
    "DataNucleus",
    "Datastore",
    "com.jolbox.bonecp",
    # Per-call INFO lines (every Thrift call, every connection) would flood benchmarks.
    "org.apache.hadoop.hive.metastore.HiveMetaStore",
    "org.apache.hadoop.hive.metastore.ObjectStore",
    "org.apache.hadoop.hive.metastore.MetaStoreDirectSql",
))


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


class HiveMetastore(MetastoreProcess):
    """A real HMS 2.3.10 Thrift server with an embedded Derby database in ``work_dir``."""

    what = "Hive Metastore"
    log_name = "hms.log"
    #: Whether the running server's socket is bound to 127.0.0.1 (set by :meth:`command`).
    bound_to_loopback = False

    def _write_conf(self) -> None:
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
        self._write_site("hive-site.xml", props, "hive-log4j2.properties", _LOG4J2)

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

    def command(self) -> list[str]:
        """The java command line that runs the server.

        Compiles the loopback-binding patch first (once per ``work_dir``) and sets
        :attr:`bound_to_loopback` accordingly.
        """
        java = java_executable()
        patch_dir = self._compile_bind_patch(java)
        self.bound_to_loopback = patch_dir is not None
        classpath = [str(self.conf_dir)]
        if patch_dir is not None:
            classpath.append(str(patch_dir))
        classpath.append(str(spark_jars_dir() / "*"))
        return self._java_command(
            java,
            ["-Xmx512m", "-XX:+UseSerialGC"],
            [f"-Dstrata.hms.bind.host={LOOPBACK}",
             f"-Dlog4j.configurationFile={self.conf_dir / 'hive-log4j2.properties'}"],
            classpath,
        )
