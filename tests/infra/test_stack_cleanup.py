"""A test session stopped from outside leaves none of its stack's processes behind: SIGTERM (a CI
job's timeout) and SIGHUP (a closed terminal) stop the stack as Ctrl-C does, and after a SIGKILL
the stack's guard stops it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from infra.deployables import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.emulators]  # each starts a stack of its own

# The inner session's one test: it records the process groups of its stack (one per service) and
# the guard, then holds the stack up until it is stopped from outside.
HOLDER = """
import json
import os
import time
from pathlib import Path


def test_hold_the_stack(stack):
    record = {
        "groups": [service.process.pid for service in stack.services],
        "guard": stack.guard.process.pid,
    }
    path = Path(os.environ["MNEMO_HOLDER_RECORD"])
    path.with_suffix(".tmp").write_text(json.dumps(record))
    path.with_suffix(".tmp").rename(path)
    time.sleep(60)
"""


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _members(groups: set[int]) -> dict[int, str]:
    """Every process now in one of `groups`, with its start time (to tell a reused pid)."""
    found = {}
    for entry in Path("/proc").glob("[0-9]*"):
        fields = _stat(int(entry.name))
        if fields is not None and int(fields[2]) in groups:
            found[int(entry.name)] = fields[19]
    return found


def _alive(pid: int, started: str) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z" and fields[19] == started


def _left(processes: dict[int, str], within: float) -> list[int]:
    deadline = time.monotonic() + within
    while True:
        left = [pid for pid, started in processes.items() if _alive(pid, started)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.1)


@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL], ids=lambda signum: signum.name
)
def test_a_stopped_test_session_leaves_no_stack_process(tmp_path, signum):
    holder = tmp_path / "test_holder.py"
    holder.write_text(HOLDER)
    record_path = tmp_path / "record.json"
    env = {k: v for k, v in os.environ.items() if not k.endswith("_EMULATOR_HOST")}
    env["MNEMO_HOLDER_RECORD"] = str(record_path)
    with (tmp_path / "inner.log").open("wb") as log:
        inner = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "tests.conftest",  # the `stack` fixture, as the suite's own conftest
                "-p",
                "no:cacheprovider",
                "--rootdir",
                str(ROOT),
                "-c",
                str(ROOT / "pyproject.toml"),
                f"--basetemp={tmp_path / 'inner'}",  # not the outer session's
                str(holder),
            ],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    processes: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 180
        while not record_path.exists() and inner.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        output = (tmp_path / "inner.log").read_text(errors="replace")
        assert record_path.exists(), f"the inner session's stack did not come up:\n{output}"
        record = json.loads(record_path.read_text())
        groups = set(record["groups"])
        assert len(groups) == 4, "three emulators and the gateway"
        processes = _members(groups)
        guard = _stat(record["guard"])
        assert guard is not None, "the guard runs"
        processes[record["guard"]] = guard[19]
        # The emulators' launchers and their JVMs, firebase-tools' node, uvicorn, the guard.
        assert len(processes) >= 7, processes

        os.kill(inner.pid, signum)
        inner.wait(timeout=90)
        output = (tmp_path / "inner.log").read_text(errors="replace")
        if signum == signal.SIGKILL:
            assert inner.returncode == -signal.SIGKILL
            left = _left(processes, within=30)  # the guard's SIGTERM, then SIGKILL after 10 s
        else:
            # pytest itself stopped the stack, in the fixture's teardown, before exiting.
            assert inner.returncode == pytest.ExitCode.INTERRUPTED, output
            left = _left(processes, within=5)
        assert left == [], f"still running after {signum.name}: {left}\n{output}"
    finally:
        if inner.poll() is None:
            inner.kill()
            inner.wait(timeout=30)
        for pid, started in processes.items():  # only ours, if the test failed
            if _alive(pid, started):
                os.kill(pid, signal.SIGKILL)
