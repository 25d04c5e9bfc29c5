"""schemathesis (v4) over `GET /openapi.json` against the test stack, with a real token and every
check, in all its phases (examples, coverage, fuzzing, stateful): the document says exactly what
the code accepts and answers. A fixed seed and a bounded number of examples keep it to about a
minute and make a finding reproducible (`st replay` with the printed id, or the same command).

Every route is covered without anyone listing it, but one: `DELETE /v1/users/me` deletes the
account the run authenticates with, which would turn every later case into a 401; the deletion
has tests of its own (tests/functions/test_deletion.py, test_users.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.openai_double import text

SEED = 20261204
MAX_EXAMPLES = 10
EXCLUDED = ("users.delete_me",)

pytestmark = pytest.mark.slow


def _st() -> str:
    beside = Path(sys.executable).parent / "st"
    return str(beside) if beside.exists() else "st"


def test_the_api_conforms_to_its_openapi_document(stack, auth_emulator, openai, tmp_path):
    openai.responder = lambda request: text("Noted.")  # the chat answers whatever it is asked
    user = auth_emulator.sign_up()
    command = [
        _st(),
        "run",
        f"{stack.base_url}/openapi.json",
        "--header",
        f"Authorization: Bearer {user.token}",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--seed",
        str(SEED),
        "--max-examples",
        str(MAX_EXAMPLES),
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--no-color",
        *[option for operation in EXCLUDED for option in ("--exclude-operation-id", operation)],
    ]
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    report = run.stdout[-12_000:]
    assert run.returncode == 0, f"schemathesis found drift:\n{report}\n{run.stderr[-2000:]}"
    assert " passed" in report and "Selected: " in report
