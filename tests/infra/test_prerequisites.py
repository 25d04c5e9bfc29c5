"""`make run` and `make test` stop at once, saying what to install, when a tool is missing."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from infra.deployables import ROOT


def _check_with(tmp_path, tools: list[str]) -> subprocess.CompletedProcess[str]:
    for tool in tools:
        found = shutil.which(tool)  # the machine's own, not a fake already in tmp_path
        assert found, f"{tool} should be on this machine"
        (tmp_path / tool).symlink_to(found)
    return subprocess.run(
        [sys.executable, "-m", "infra.prerequisites"],
        cwd=ROOT,
        env={"PATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_everything_present_passes(tmp_path):
    assert _check_with(tmp_path, ["java", "node", "npm", "gcloud"]).returncode == 0


@pytest.mark.parametrize(
    ("present", "named"),
    [
        (["node", "npm", "gcloud"], "Java"),
        (["java", "gcloud"], "Node.js"),
        (["java", "node", "npm"], "Google Cloud CLI"),
    ],
)
def test_a_missing_tool_is_named_with_how_to_get_it(tmp_path, present, named):
    checked = _check_with(tmp_path, present)
    assert checked.returncode != 0
    lines = [line for line in checked.stderr.splitlines() if line.startswith("  - ")]
    assert len(lines) == 1 and named in lines[0], checked.stderr
    assert "install" in lines[0]


def test_a_node_older_than_20_is_named(tmp_path):
    fake = tmp_path / "node"
    fake.write_text("#!/bin/sh\necho v18.19.0\n")
    fake.chmod(0o755)
    checked = _check_with(tmp_path, ["java", "npm", "gcloud"])
    assert checked.returncode != 0
    assert "Node.js 20+" in checked.stderr
