from __future__ import annotations

import json

from shared.logging import get_logger


def test_records_are_one_json_object_per_line_with_severity(capsys):
    log = get_logger("test")
    log.warning("hello %s", "world", extra={"uid": "u1"})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    lines = capsys.readouterr().out.strip().splitlines()
    first, second = (json.loads(line) for line in lines[-2:])
    assert first["severity"] == "WARNING"
    assert first["message"] == "hello world"
    assert first["uid"] == "u1"
    assert second["severity"] == "ERROR"
    assert "ValueError: boom" in second["stack_trace"]
