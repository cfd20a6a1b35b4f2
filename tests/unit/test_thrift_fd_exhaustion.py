"""The Thrift accept loop out of file descriptors: back off instead of spinning, then recover.

The server runs in a subprocess whose RLIMIT_NOFILE is 64; the test holds more connections than
that, so ``accept()`` fails with EMFILE while connections wait in the kernel backlog.
"""

from __future__ import annotations

import os
import selectors
import socket
import subprocess
import sys
import time
from pathlib import Path

from hmsclient.genthrift.hive_metastore import ThriftHiveMetastore
from thrift.protocol import TBinaryProtocol
from thrift.transport import TSocket, TTransport

from tests.support.ports import LOOPBACK, log_tail, stop_process

REPO = Path(__file__).resolve().parents[2]
FD_LIMIT = 64
HELD = 100

_LAUNCHER = f"""
import resource, sys, threading
_soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, ({FD_LIMIT}, hard))
from pathlib import Path
from api.thrift.server import ThriftServer
from catalog.config import Settings
from catalog.service import CatalogService
service = CatalogService(Settings(data_dir=Path(sys.argv[1])))
server = ThriftServer(service, "127.0.0.1", 0).start()
print(server.port, flush=True)
threading.Event().wait()
"""


def _cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` from /proc/<pid>/stat, in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _read_port(proc: subprocess.Popen[bytes], log_file: Path, timeout: float = 60.0) -> int:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise AssertionError(f"server printed no port in {timeout:.0f}s:\n{log_tail(log_file)}")
    line = proc.stdout.readline().decode().strip()
    assert line.isdigit(), f"server exited before printing its port:\n{log_tail(log_file)}"
    return int(line)


def test_accept_backs_off_when_out_of_descriptors_and_recovers(tmp_path: Path) -> None:
    log_file = tmp_path / "server.log"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    held: list[socket.socket] = []
    with open(log_file, "wb") as log_out:
        proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER, str(tmp_path / "data")],
                                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log_out)
    try:
        port = _read_port(proc, log_file)
        for _ in range(HELD):  # handshakes complete in the kernel; the backlog holds the rest
            held.append(socket.create_connection((LOOPBACK, port), timeout=5))
        time.sleep(0.5)  # let the server accept until it runs out of descriptors
        open_fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
        assert open_fds >= FD_LIMIT - 2, f"server not out of descriptors ({open_fds} open)"

        before, started = _cpu_seconds(proc.pid), time.monotonic()
        time.sleep(2.0)
        cpu = (_cpu_seconds(proc.pid) - before) / (time.monotonic() - started)
        print(f"thrift server CPU while out of descriptors: {cpu:.1%} of one CPU")
        assert cpu < 0.10, f"accept loop spins while out of descriptors: {cpu:.0%} of one CPU"
        assert proc.poll() is None, log_tail(log_file)
        logged = log_file.read_text(errors="replace").splitlines()
        assert len(logged) < 10, "a log line per refused accept:\n" + "\n".join(logged[-10:])

        for sock in held:
            sock.close()
        held.clear()

        tsock = TSocket.TSocket(LOOPBACK, port)
        tsock.setTimeout(10_000)
        transport = TTransport.TBufferedTransport(tsock)
        started = time.monotonic()
        transport.open()
        try:
            client = ThriftHiveMetastore.Client(
                TBinaryProtocol.TBinaryProtocolAccelerated(transport))
            assert client.get_all_databases() == ["default"]
        finally:
            transport.close()
        assert time.monotonic() - started < 5.0, "served only after a long delay"
    finally:
        for sock in held:
            sock.close()
        stop_process(proc, grace=5)
        assert proc.stdout is not None
        proc.stdout.close()
