"""`make run` from the outside: it comes up, serves, and leaves nothing behind when stopped."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from infra.auth_emulator import AuthEmulator
from infra.deployables import ROOT
from infra.emulators import PROJECT
from infra.ports import free_port, port_open

pytestmark = [pytest.mark.slow, pytest.mark.emulators]  # each starts a stack of its own


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_make_run_serves_and_stops_cleanly(stop):
    port = free_port()
    make = subprocess.Popen(
        ["make", "--no-print-directory", "run", "RUN_FLAGS=--free-ports", f"PORT={port}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={k: v for k, v in os.environ.items() if not k.endswith("_EMULATOR_HOST")},
    )
    output: list[str] = []
    started: set[int] = set()
    ports: list[int] = [port]
    try:
        assert make.stdout is not None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            line = make.stdout.readline()
            if not line:
                break
            output.append(line)
            if "Ctrl-C stops everything" in line:
                break
        text = "".join(output)
        assert f"Mnemo is up on http://localhost:{port}" in text, text
        auth_host = re.search(r"Firebase Auth emulator\s+(\S+)", text).group(1)  # type: ignore[union-attr]

        base = f"http://localhost:{port}"
        assert httpx.get(f"{base}/test").json()["status"] == "ok"
        user = AuthEmulator(auth_host, PROJECT).sign_up()
        me = httpx.get(f"{base}/v1/users/me", headers=user.bearer)
        assert me.status_code == 200 and me.json()["uid"] == user.uid

        started = _descendants(make.pid)
        assert len(started) >= 5, "expected the launcher, three emulators and the gateway"
        ports = [int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", text)] + [port]
    finally:
        if stop == "ctrl-c":
            os.killpg(make.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        else:
            make.send_signal(signal.SIGTERM)
        make.wait(timeout=60)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in started) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [pid for pid in started if _alive(pid)] == []
    assert [p for p in ports if port_open(p)] == []
