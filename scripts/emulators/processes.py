"""Emulator processes: free ports, start until ready (log tail on failure), stop by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from pipelines.local.bigquery_emulator import DEFAULT_GRPC_PORT_OFFSET, parse_host_port

DEFAULT_HOST = "127.0.0.1"


PID_FILE_NAME = "emulator.pid"


READY_TIMEOUT_S = 120.0


STOP_TIMEOUT_S = 10.0


class EmulatorError(RuntimeError):
    """The emulator cannot be installed, started or reached; the message says why."""


@dataclass(frozen=True)
class Emulator:
    """A running emulator process."""

    host: str
    port: int
    pid: int
    data_dir: Path
    log_path: Path

    @property
    def host_port(self) -> str:
        """HOST:PORT of the REST API, the value of --bigquery_emulator."""
        return f"{self.host}:{self.port}"


def _port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on host:port (a bind test)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = DEFAULT_HOST) -> int:
    """A port P with P and P + 10 (gRPC) free on host."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
        if port + DEFAULT_GRPC_PORT_OFFSET < 65536 and _port_is_free(host, port + DEFAULT_GRPC_PORT_OFFSET):
            return port
    raise EmulatorError(f"found no free pair of ports (P, P + {DEFAULT_GRPC_PORT_OFFSET}) on {host}")


def _log_tail(path: Path, lines: int = 15) -> str:
    """The last lines of the emulator's log, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def launch(command: list[str], host_port: str, ready, data_dir: Path, name: str, timeout: float) -> Emulator:
    """Start a server in the background and wait until ready(host_port); stop it if it never is."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / f"{name}.log"
    with open(log_path, "ab") as log_file:
        # Its own session: a Ctrl-C meant for the caller does not kill it half-way.
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    host, port = parse_host_port(host_port)
    server = Emulator(host, port, process.pid, data_dir, log_path)
    deadline = time.monotonic() + timeout
    while not ready(host_port):
        if process.poll() is not None:
            raise EmulatorError(
                f"the {name} exited with code {process.returncode} (log: {log_path}):\n{_log_tail(log_path)}"
            )
        if time.monotonic() > deadline:
            stop(server.pid)
            raise EmulatorError(
                f"the {name} did not answer within {timeout:.0f} s (log: {log_path}):\n{_log_tail(log_path)}"
            )
        time.sleep(0.2)
    return server


def alive(pid: int) -> bool:
    """True while pid runs (a zombie child is reaped and counts as gone)."""
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    except ChildProcessError:  # not our child: ask the kernel instead
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop(pid: int, timeout: float = STOP_TIMEOUT_S) -> bool:
    """Stop the emulator by PID (SIGTERM, then SIGKILL); False if it was not running."""
    if not alive(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
        time.sleep(0.1)
    return True
