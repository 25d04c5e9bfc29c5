from __future__ import annotations

import json

from shared.core.logging import TRACE_FIELD, get_logger, set_trace


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


def test_a_request_trace_is_attached_to_its_records(capsys):
    set_trace("0af7651916cd43dd8448eb211c80319c/123;o=1")
    get_logger("test").info("traced")
    set_trace(None)
    get_logger("test").info("untraced")
    traced, untraced = (json.loads(line) for line in capsys.readouterr().out.splitlines()[-2:])
    assert traced[TRACE_FIELD] == "projects/demo-mnemo/traces/0af7651916cd43dd8448eb211c80319c"
    assert TRACE_FIELD not in untraced
