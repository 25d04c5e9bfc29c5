"""Importing any module of `shared/`, `functions/` or `realtime/` does nothing but define things:
no connection, no thread, no process, no settings read. Each is imported in a fresh interpreter
with an empty environment (no keys, no emulator hosts), so a module that reached for a client,
a secret or the network while being imported fails here, not on a cold start."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("shared", "functions", "realtime")

# Run in the fresh interpreter: trap what an import may not do, import every module, report.
CHECK = textwrap.dedent(
    """
    import importlib, json, pkgutil, socket, subprocess, sys, threading

    effects = []

    def refuse(what):
        def trapped(*args, **kwargs):
            effects.append(f"{current}: {what}")
            raise OSError(f"{what} while importing {current}")
        return trapped

    socket.socket.connect = refuse("connects a socket")
    socket.socket.connect_ex = refuse("connects a socket")
    socket.getaddrinfo = refuse("resolves a host name")
    threading.Thread.start = refuse("starts a thread")
    subprocess.Popen.__init__ = refuse("starts a process")

    current = "?"
    failed, seen = {}, []
    for package in sys.argv[1].split(","):
        top = importlib.import_module(package)
        names = [package] + [m.name for m in pkgutil.walk_packages(top.__path__, package + ".")]
        for current in names:
            seen.append(current)
            try:
                importlib.import_module(current)
            except Exception as error:
                failed[current] = repr(error)
    from shared.core import settings
    if settings._settings is not None:
        effects.append("the settings were read while importing")
    print(json.dumps({"effects": effects, "failed": failed, "imported": sorted(seen)}))
    """
)


def imported(packages: tuple[str, ...], path: Path = ROOT) -> dict[str, object]:
    """What importing every module of `packages` did, seen from a fresh interpreter."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{path}:{ROOT}"}
    run = subprocess.run(
        [sys.executable, "-c", CHECK, ",".join(packages)],
        cwd=path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    result: dict[str, object] = json.loads(run.stdout.strip().splitlines()[-1])
    return result


def test_importing_a_module_has_no_side_effects():
    found = imported(PACKAGES)
    assert found["effects"] == [] and found["failed"] == {}
    on_disk = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
    }
    assert found["imported"] == sorted(on_disk)


@pytest.mark.parametrize(
    ("module", "effect"),
    [
        ("import threading\nthreading.Thread(target=print).start()\n", "starts a thread"),
        (
            "import socket\nsocket.create_connection(('127.0.0.1', 9))\n",
            "resolves a host name",
        ),
        ("import subprocess\nsubprocess.run(['true'])\n", "starts a process"),
        (
            "from shared.core.settings import get_settings\nget_settings()\n",
            "the settings were read while importing",
        ),
    ],
)
def test_a_planted_side_effect_is_caught(tmp_path, module, effect):
    package = tmp_path / "planted"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "eager.py").write_text(module)
    found = imported(("planted",), tmp_path)
    assert any(effect in line for line in found["effects"])  # type: ignore[union-attr]
