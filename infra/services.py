"""A process of the local stack that serves on one port (`Service`), and an ASGI app that uvicorn
serves as one (`uvicorn_service`).

Each starts in a session of its own and is stopped by its process group, since the emulator
launchers are wrapper scripts whose JVM would outlive a plain kill; after a stop its port is
checked free.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from infra.deployables import ROOT
from infra.ports import port_open


@dataclass
class Service:
    name: str
    command: list[str]
    port: int
    ready_path: str = "/"
    cwd: Path | None = None
    env: dict[str, str] | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    log_path: Path | None = None

    def start(self, log_dir: Path | None) -> None:
        """Start in a session of its own, logging to `log_dir`, or to this terminal if None."""
        if port_open(self.port):
            raise SystemExit(f"{self.name}: port {self.port} is already in use")
        self.log_path = log_dir / f"{self.name}.log" if log_dir else None
        with self.log_path.open("wb") if self.log_path else open(os.devnull, "wb") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log if self.log_path else None,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, deadline: float) -> None:
        assert self.process is not None
        url = f"http://127.0.0.1:{self.port}{self.ready_path}"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(
                    f"{self.name} exited ({self.process.returncode}):\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=1) as reply:
                    if reply.status == 200:
                        return
            except (OSError, urllib.error.HTTPError):
                pass
            time.sleep(0.1)
        raise SystemExit(f"{self.name} did not become ready on {url}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
            except ProcessLookupError:
                pass
        # The wrapper may be gone while the JVM (same group) still holds the port.
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)


def uvicorn_service(
    name: str, app: str, port: int, env: dict[str, str], graceful_seconds: int = 10
) -> Service:
    """The ASGI `app` served by uvicorn on 127.0.0.1:`port` (as the realtime image serves it),
    with this process's environment plus `env`; ready when `/health` answers."""
    return Service(
        name,
        [
            sys.executable,
            "-m",
            "uvicorn",
            app,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--timeout-graceful-shutdown",
            str(graceful_seconds),
        ],
        port,
        ready_path="/health",
        cwd=ROOT,
        env={**os.environ, **env},
    )
