"""Lifecycle of one local Java service: start detached, record its PID, wait for a real answer, stop.

State lives in ``<data_dir>/run/<name>.json`` so ``up``/``down``/``status`` work from any process
(the CLI, a test fixture, the demo) and ``up`` is idempotent.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from identigraph.errors import PortInUseError, ServiceError


@dataclass
class ServiceState:
    """What a started process left in its state file, so a later command can find and stop it."""
    name: str
    pid: int
    host: str
    port: int
    log: str
    started_at: float


def free_port() -> int:
    """A port the OS says is free now: tests, benches and the demo run their services beside any others."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something answers on the port: a started service is ready only once it does."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    """Whether the recorded process still exists, so a stale state file is not mistaken for a service."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of this very process still answers kill(0); reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


class ManagedProcess:
    """A background service process started and stopped by identigraph, found again through its state file."""
    def __init__(self, name: str, run_dir: Path, log_dir: Path) -> None:
        self.name = name
        self.state_file = run_dir / f"{name}.json"
        self.log_file = log_dir / f"{name}.log"

    def state(self) -> ServiceState | None:
        if not self.state_file.exists():
            return None
        try:
            state = ServiceState(**json.loads(self.state_file.read_text()))
        except (ValueError, TypeError):
            self.state_file.unlink(missing_ok=True)
            return None
        if not pid_alive(state.pid):
            self.state_file.unlink(missing_ok=True)
            return None
        return state

    def start(
        self,
        argv: list[str],
        host: str,
        port: int,
        ready: Callable[[], bool],
        timeout_s: float,
        cwd: Path | None = None,
    ) -> tuple[ServiceState, bool]:
        """Returns (state, started_now). Raises PortInUseError if something else holds the port."""
        current = self.state()
        if current is not None:
            if current.port != port:
                raise ServiceError(
                    f"{self.name} is already running on port {current.port} (pid {current.pid}); "
                    f"run 'identigraph services down' before changing its port to {port}"
                )
            self._wait_ready(current, ready, timeout_s, proc=None)
            return current, False
        if port_open(host, port):
            raise PortInUseError(
                f"port {port} on {host} is already in use by another process, so {self.name} cannot "
                f"start there; stop that process or set a different port in the config"
            )
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:  # the child keeps its own copy of the descriptor
            log.write(f"\n--- identigraph: starting {self.name} at {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(
                    argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    cwd=cwd, start_new_session=True,
                )
            except FileNotFoundError as exc:
                raise ServiceError(f"cannot start {self.name}: {exc}") from None
        state = ServiceState(self.name, proc.pid, host, port, str(self.log_file), time.time())
        self.state_file.write_text(json.dumps(asdict(state)))
        try:
            self._wait_ready(state, ready, timeout_s, proc=proc)
        except ServiceError:
            self.stop()
            raise
        return state, True

    def _wait_ready(
        self, state: ServiceState, ready: Callable[[], bool], timeout_s: float, proc: subprocess.Popen | None
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise ServiceError(
                    f"{self.name} exited with code {proc.returncode} during start-up; "
                    f"last log lines:\n{self.tail(20)}"
                )
            if port_open(state.host, state.port):
                try:
                    if ready():
                        return
                except ServiceError:
                    raise
                except Exception:  # not ready yet: the probe is a real request that may fail while booting
                    pass
            time.sleep(0.3)
        raise ServiceError(
            f"{self.name} did not answer on {state.host}:{state.port} within {timeout_s:.0f}s; "
            f"log: {self.log_file}\n{self.tail(20)}"
        )

    def stop(self, timeout_s: float = 60.0) -> bool:
        """SIGTERM (Gremlin Server writes a final checkpoint), then SIGKILL after the timeout. A kill during that
        write leaves the previous checkpoint as it was: new ones are written beside it and renamed into place."""
        state = self.state()
        if state is None:
            return False
        with contextlib.suppress(ProcessLookupError):  # it ended on its own meanwhile
            os.killpg(state.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while pid_alive(state.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid_alive(state.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(state.pid, signal.SIGKILL)
            while pid_alive(state.pid):
                time.sleep(0.1)
        self.state_file.unlink(missing_ok=True)
        return True

    def tail(self, lines: int = 50) -> str:
        if not self.log_file.exists():
            return "(no log yet)"
        with open(self.log_file, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            text = fh.read().decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:])
