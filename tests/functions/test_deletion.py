"""Deleting an account is complete: every collection the code writes (found in the code, not
listed by hand) is covered, the user's open sockets are closed on the spot, and the account's
token is refused afterwards."""

from __future__ import annotations

import ast
import contextlib
import importlib
import json
import threading
import time
import uuid

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from infra.deployables import ROOT
from shared.resources.users import USER_OWNED_COLLECTIONS
from tests.support import chat, listen

PACKAGES = ("shared", "functions", "realtime")
# Top-level collections that are not the user's: none yet (the waitlist is the address's, and
# deleted with a verified account; see `delete_user`).
NOT_THE_USERS: set[str] = set()


def written_collections() -> tuple[set[str], set[str]]:
    """Every collection name the code passes to `.collection(...)`: (top level, nested). A call
    on `db()` or on a client from it is a top-level collection; any other is under a document."""
    top, nested = set(), set()
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            namespace = vars(importlib.import_module(module.removesuffix(".__init__")))
            for node in ast.walk(ast.parse(path.read_text())):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue
                if node.func.attr != "collection" or not node.args:
                    continue
                try:
                    name = eval(ast.unparse(node.args[-1]), dict(namespace))
                except NameError:
                    continue  # a parameter (`documents.collection(uid, name)`): its callers count
                receiver = ast.unparse(node.func.value)
                (top if receiver in ("db()", "client") else nested).add(name)
    return top, nested


def test_every_top_level_collection_the_code_writes_is_deleted_with_the_account():
    top, nested = written_collections()
    assert {"users", "waitlist", "idempotency", "usage", "dead_letters"} <= top
    assert {"conversations", "memories", "action_items", "chats", "messages"} <= nested
    # The user's documents are `users/{uid}/...`, deleted as one tree, or found by their `uid`.
    assert top - {"users", "waitlist"} - NOT_THE_USERS <= set(USER_OWNED_COLLECTIONS)


def _closed(socket) -> tuple[int, str]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.recv(timeout=deadline - time.monotonic())
        except ConnectionClosed as closed:
            assert closed.rcvd is not None
            return closed.rcvd.code, closed.rcvd.reason
        except TimeoutError:
            break
    pytest.fail("the socket was not closed")


def test_deleting_closes_the_users_open_sockets_and_refuses_the_token(
    stack, api, auth_emulator, firestore, deepgram
):
    user, neighbour = auth_emulator.sign_up(), auth_emulator.sign_up()
    chat_id = uuid.uuid4().hex
    with (
        connect(chat.url(stack, user, chat_id)) as chatting,
        connect(listen.url(stack, user)) as listening,
        connect(chat.url(stack, neighbour)) as neighbours,
    ):
        assert json.loads(listening.recv(timeout=15))["status"] == "ready"
        # Audio keeps flowing while the account goes: none of it may be stored afterwards.
        streaming = threading.Thread(target=_stream_until_closed, args=(listening,), daemon=True)
        streaming.start()
        time.sleep(0.3)
        assert api.delete("/v1/users/me", headers=user.bearer).status_code == 204
        assert _closed(chatting) == (1008, "account deleted")
        assert _closed(listening) == (1008, "account deleted")
        streaming.join(timeout=10)
        neighbours.send("still here?")  # the neighbour's socket is untouched
        assert neighbours.protocol.close_rcvd is None
    assert api.get("/v1/users/me", headers=user.bearer).status_code == 401
    time.sleep(1)  # anything still on its way would have landed by now
    home = firestore.collection("users").document(user.uid)
    assert not home.get().exists and list(home.collections()) == []


def _stream_until_closed(socket) -> None:
    """A phone talking: 0.3 s of audio every 0.3 s until the socket closes (60 s at most)."""
    with contextlib.suppress(ConnectionClosed):
        for _ in range(200):
            listen.stream(socket, listen.tone(0.3, 16000), 16000)
            time.sleep(0.3)
