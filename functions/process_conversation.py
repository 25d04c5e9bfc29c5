"""Post-processing of a finished conversation, pushed from `conversation.finished`.

A CloudEvent built by functions-framework from the Pub/Sub push (the local emulator pushes
exactly as production does). Returning acknowledges the message; raising answers 500 and Pub/Sub
delivers it again with backoff, then to the dead-letter topic (`dead_letters` marks the
conversation `failed`). See `shared.pipeline.processing` for why redelivery is harmless.
"""

from __future__ import annotations

import functions_framework
from cloudevents.http import CloudEvent

from shared.core.logging import get_logger
from shared.pipeline import processing
from shared.providers.llm import LLMError
from shared.store.topics import ConversationFinished

log = get_logger("process_conversation")


@functions_framework.cloud_event
def process_conversation(event: CloudEvent) -> None:
    try:
        finished = ConversationFinished.parse(event.data["message"])
    except ValueError:
        log.error("dropped a message that names no conversation", extra={"id": event["id"]})
        return  # acknowledged: no delivery of it could ever succeed
    uid, conversation_id = finished.uid, finished.conversation_id
    try:
        outcome = processing.process(uid, conversation_id)
    except LLMError as error:
        log.warning(
            "post-processing failed; Pub/Sub will deliver again: %s",
            error.reason,
            extra={"conversation_id": conversation_id, "message_id": event["id"]},
        )
        raise
    log.info(
        "post-processing %s",
        outcome.status,
        extra={"conversation_id": conversation_id, "memories": list(outcome.memory_ids)},
    )
