"""WebSocket authentication and connection counting, through a real socket.

The realtime service has no WebSocket route of its own yet (listen and chat come later), so a
small app built from the service's own pieces stands in for one: `authenticate_websocket` at the
door and the `ConnectionCounter` around it, served by uvicorn on 127.0.0.1.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from infra.ports import free_port
from realtime.app import health
from realtime.auth import authenticate_websocket
from realtime.connections import ConnectionCounter


async def whoami(websocket: WebSocket) -> None:
    caller = await authenticate_websocket(websocket)
    if caller is None:
        return
    await websocket.accept()
    await websocket.send_text(caller.uid)
    await websocket.receive_text()  # held open until the client speaks
    await websocket.close()


@pytest.fixture(scope="module")
def server(stack) -> Iterator[str]:
    app = Starlette(routes=[WebSocketRoute("/whoami", whoami), Route("/health", health)])
    app.state.connections = ConnectionCounter(app)
    port = free_port()
    config = uvicorn.Config(app.state.connections, host="127.0.0.1", port=port, log_level="warning")
    runner = uvicorn.Server(config)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not runner.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"127.0.0.1:{port}"
    runner.should_exit = True
    thread.join(timeout=10)


def _closed_with(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    with (
        connect(url, additional_headers=headers, open_timeout=10) as socket,
        pytest.raises(ConnectionClosed) as closed,
    ):
        socket.recv(timeout=10)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


def test_a_bad_token_is_accepted_then_closed_with_1008_and_a_reason(server, auth_emulator):
    disabled = auth_emulator.sign_up()
    auth_emulator.disable(disabled)
    cases = {
        "missing": f"ws://{server}/whoami",
        "garbage": f"ws://{server}/whoami?token=garbage",
        "disabled": f"ws://{server}/whoami?token={disabled.token}",
    }
    for name, url in cases.items():
        code, reason = _closed_with(url)
        assert code == 1008, name
        assert reason, name


def test_a_good_token_in_the_query_or_the_header_is_let_in_and_counted(server, auth_emulator):
    user = auth_emulator.sign_up()
    health = f"http://{server}/health"
    assert httpx.get(health).json()["connections"] == 0
    with (
        connect(f"ws://{server}/whoami?token={user.token}") as by_query,
        connect(f"ws://{server}/whoami", additional_headers=user.bearer) as by_header,
    ):
        assert by_query.recv(timeout=10) == user.uid
        assert by_header.recv(timeout=10) == user.uid
        assert httpx.get(health).json()["connections"] == 2
        by_query.send("bye")
    deadline = time.monotonic() + 5
    while httpx.get(health).json()["connections"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert httpx.get(health).json()["connections"] == 0


def test_an_identity_backend_that_is_down_closes_with_1013_try_again_later(
    server, auth_emulator, monkeypatch
):
    from google.api_core import exceptions

    import shared.web.streaming

    def down(*args, **kwargs):
        raise exceptions.DeadlineExceeded("Firestore did not answer")

    monkeypatch.setattr(shared.web.streaming, "authenticate", down)
    user = auth_emulator.sign_up()
    code, reason = _closed_with(f"ws://{server}/whoami?token={user.token}")
    assert code == 1013 and "retry" in reason
