"""Records every message that exhausted its delivery attempts, so none is lost silently.

Subscribed to each `<topic>.dead-letter` topic (infra/resources.yaml). The record keeps the
original data and attributes; a message's id makes the write idempotent under redelivery.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import functions_framework
from cloudevents.http import CloudEvent

from shared.firestore import db
from shared.logging import get_logger

log = get_logger("dead_letters")


@functions_framework.cloud_event
def dead_letters(event: CloudEvent) -> None:
    message = event.data["message"]
    attributes = dict(message.get("attributes") or {})
    payload = base64.b64decode(message.get("data") or b"").decode("utf-8", "replace")
    source = attributes.get("CloudPubSubDeadLetterSourceSubscription", "unknown")
    db().collection("dead_letters").document(event["id"]).set(
        {
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
