"""The local stack's guard: stops the stack's process groups if whoever started them dies
without stopping them (SIGKILL, a crash). See docs/architecture.md, "Local stack"."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

from infra.deployables import ROOT


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def stop_groups(pgids: set[int], timeout: float = 10.0) -> set[int]:
    """SIGTERM to each process group, then SIGKILL to those still there after `timeout` (which
    it returns)."""
    for pgid in pgids:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    left = {pgid for pgid in pgids if _group_alive(pgid)}
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = {pgid for pgid in left if _group_alive(pgid)}
    for pgid in left:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    return left


class Guard:
    """Stops a stack's process groups if the process that started them dies without stopping them
    (SIGKILL, a crash): a small process in a session of its own, started before the services,
    which the starter tells through a pipe of each process group it starts (`+pgid`) and each it
    has stopped (`-pgid`). When the pipe ends (the starter closed it, or died) or the starter is no
    longer its parent (the check the `make run` launcher makes on `make`), it stops the groups left,
    by their ids, and exits: with none left after a clean stop, at once."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, log_dir: Path) -> None:
        with (log_dir / "guard.log").open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", "from infra.guard import Guard; Guard.watch()"],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                bufsize=0,  # each line in one write, at once
            )

    def _tell(self, line: str) -> None:
        if self.process is not None and self.process.stdin is not None:
            with suppress(OSError):  # the guard is gone: nothing to tell
                self.process.stdin.write(line.encode())

    def add(self, pgid: int) -> None:
        self._tell(f"+{pgid}\n")

    def remove(self, pgid: int) -> None:
        self._tell(f"-{pgid}\n")

    def stop(self) -> None:
        """Closes the pipe: the guard stops what it was not told was stopped, and exits."""
        if self.process is None:
            return
        if self.process.stdin is not None:
            with suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    @staticmethod
    def watch() -> None:
        """The guard process: reads the pipe on stdin until it ends or the starter is gone."""
        starter = os.getppid()
        groups: set[int] = set()
        pending = b""
        while True:
            orphaned = os.getppid() != starter  # then only what is already in the pipe
            if not select.select([0], [], [], 0 if orphaned else 0.2)[0]:
                if orphaned:
                    break
                continue
            chunk = os.read(0, 4096)
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                pgid = int(line[1:])
                if line.startswith(b"+"):
                    groups.add(pgid)
                else:
                    groups.discard(pgid)
        if groups:
            print(f"the stack's starter is gone: stopping process groups {sorted(groups)}")
            killed = stop_groups(groups)
            print(f"stopped; SIGKILL to {sorted(killed)}" if killed else "stopped", flush=True)
