from __future__ import annotations

import pytest


def test_test_reports_the_environment_connections_and_realtime_origin(api, stack):
    reply = api.get("/test")
    assert reply.status_code == 200
    assert reply.json() == {
        "status": "ok",
        "service": "mnemo",
        "environment": "development",
        "connections": 0,
        "realtime_url": f"http://localhost:{stack.ports.http}",
    }


def test_the_home_page_is_a_page_in_development(gateway):
    reply = gateway.get("/")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/html")


def test_an_unknown_path_is_a_json_404(gateway):
    for path in ("/nope", "/v1/unknown/thing", "/v1/users/someone-else"):
        reply = gateway.get(path)
        assert reply.status_code == 404, path
        assert reply.json()["detail"]


def test_the_realtime_health_answers_on_the_same_port(api):
    assert api.get("/health").json() == {"status": "ok", "connections": 0}


def test_realtime_errors_are_json_too(gateway):
    reply = gateway.post("/health")
    assert reply.status_code == 405
    assert reply.json()["detail"]


def test_a_websocket_to_an_unknown_path_is_refused(stack):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{stack.ports.http}/no/such/socket", open_timeout=10)
    assert refused.value.response.status_code == 403
