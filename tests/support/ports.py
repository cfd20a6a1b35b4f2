"""Port and process helpers for the integration-test harness (loopback only)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """Return a TCP port that is currently free on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def log_tail(log_file: Path | str | None, lines: int = 60) -> str:
    """Return the last ``lines`` lines of ``log_file`` ("" if there is none)."""
    if log_file is None:
        return ""
    try:
        text = Path(log_file).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def wait_for_port(
    host: str,
    port: int,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    log_file: Path | str | None = None,
    what: str = "server",
) -> None:
    """Wait until ``host:port`` accepts TCP connections.

    Raises ``RuntimeError`` (with the tail of ``log_file``) if ``proc`` exits
    first or ``timeout`` seconds pass.
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"{what} (pid {proc.pid}) exited with code {proc.returncode} before "
                f"{host}:{port} opened; log tail:\n{log_tail(log_file)}"
            )
        if _port_open(host, port):
            return
        if time.monotonic() >= deadline:
            raise RuntimeError(
                f"{what} did not open {host}:{port} within {timeout:.0f}s; "
                f"log tail:\n{log_tail(log_file)}"
            )
        time.sleep(0.25)


def stop_process(proc: subprocess.Popen[bytes] | None, grace: float = 10.0) -> None:
    """Stop ``proc`` by pid: SIGTERM, then SIGKILL if it is still running after ``grace`` s."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    except ProcessLookupError:
        pass
