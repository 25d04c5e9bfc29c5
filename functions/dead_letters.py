"""Records every message that exhausted its delivery attempts, so none is lost silently.

Subscribed to each `<topic>.dead-letter` topic (infra/resources.yaml). The record keeps the
original data and attributes; a message's id makes the write idempotent under redelivery.
A `conversation.finished` message that ran out of attempts also marks its conversation
`failed`, with the last error post-processing recorded as the `failure_reason` the API shows
(`POST /v1/conversations/{id}/reprocess` tries again).
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import functions_framework
from cloudevents.http import CloudEvent

from shared.core.errors import ApiError
from shared.core.logging import get_logger
from shared.resources import lifecycle
from shared.store import documents
from shared.store.firestore import db
from shared.store.topics import ConversationFinished

log = get_logger("dead_letters")


@functions_framework.cloud_event
def dead_letters(event: CloudEvent) -> None:
    message = event.data["message"]
    attributes = dict(message.get("attributes") or {})
    payload = base64.b64decode(message.get("data") or b"").decode("utf-8", "replace")
    source = attributes.get("CloudPubSubDeadLetterSourceSubscription", "unknown")
    db().collection("dead_letters").document(event["id"]).set(
        {
            "uid": attributes.get("uid"),  # whose, if it says (deleted with the account)
            "subscription": source,
            "delivery_attempts": attributes.get("CloudPubSubDeadLetterSourceDeliveryCount"),
            "data": payload,
            "attributes": attributes,
            "dead_lettered_at": datetime.now(UTC),
        }
    )
    log.error(
        "message dead-lettered after its last delivery attempt",
        extra={"subscription": source, "message_id": event["id"]},
    )
    if source.startswith(f"{ConversationFinished.topic}."):
        try:
            finished = ConversationFinished.parse(message)
        except ValueError:
            return  # the record above is all there is to keep
        _fail_conversation(finished, attributes)


def _fail_conversation(finished: ConversationFinished, attributes: dict[str, str]) -> None:
    uid, conversation_id = finished.uid, finished.conversation_id
    try:
        stored = documents.document(uid, lifecycle.COLLECTION, conversation_id).get()
    except ApiError:  # not an id of ours: the record above is all there is to keep
        log.error("a dead-lettered message names no conversation", extra={"id": conversation_id})
        return
    last_error = (stored.to_dict() or {}).get("last_error") or "it was interrupted every time"
    attempts = attributes.get("CloudPubSubDeadLetterSourceDeliveryCount", "several")
    reason = f"Post-processing failed after {attempts} attempts: {last_error}."
    if lifecycle.mark_failed(uid, conversation_id, reason):
        log.error("conversation failed", extra={"conversation_id": conversation_id})
