"""`conversation.finished` built and read from one definition, in process (no emulator)."""

from __future__ import annotations

import base64
import json

import pytest

from shared.store.topics import ConversationFinished


def _pushed(data: object, attributes: dict[str, str] | None = None) -> dict:
    body = base64.b64encode(json.dumps(data).encode()).decode()
    return {"data": body, "attributes": attributes or {}}


def test_the_payload_and_the_attributes_are_the_same_fields():
    message = ConversationFinished("u1", "c1", "timeout")
    assert message.topic == "conversation.finished"
    assert message.fields == {"uid": "u1", "conversation_id": "c1", "reason": "timeout"}
    assert ConversationFinished.parse(_pushed(message.fields, message.fields)) == message


@pytest.mark.parametrize(
    "data", [{"conversation_id": "c1"}, {"uid": "u1"}, [], "text", None], ids=repr
)
def test_a_message_that_names_no_conversation_is_refused(data):
    with pytest.raises(ValueError):
        ConversationFinished.parse(_pushed(data))
    with pytest.raises(ValueError):
        ConversationFinished.parse({"data": "not base64 json!"})
