"""/v1/conversations: the caller's conversations."""

from __future__ import annotations

import functions_framework
from werkzeug.wrappers import Request, Response

from shared.resources import conversations as conversations_resource
from shared.resources.conversations import Conversation, ConversationQuery
from shared.web.router import Call, Router

router = Router("conversations")


@router.route("GET", "/v1/conversations", query=ConversationQuery, response=list[Conversation])
def list_conversations(call: Call) -> list[Conversation]:
    """The caller's conversations, newest first."""
    return conversations_resource.list_conversations(call.user.uid, call.query)


@router.route(
    "POST", "/v1/conversations", response=Conversation, responses={409: "Already finished"}
)
def finish_conversation(call: Call) -> Conversation:
    """Finish the caller's conversation in progress now: it becomes `processing`."""
    return conversations_resource.finish_in_progress(call.user.uid)


@router.route("GET", "/v1/conversations/{conversation_id}", response=Conversation)
def get_conversation(call: Call) -> Conversation:
    """One conversation, with its transcript and structure."""
    return conversations_resource.get_conversation(call.user.uid, call.params["conversation_id"])


@router.route("DELETE", "/v1/conversations/{conversation_id}", status=204)
def delete_conversation(call: Call) -> Response:
    """Delete a conversation (its memories and action items stay)."""
    conversations_resource.delete_conversation(call.user.uid, call.params["conversation_id"])
    return Response(status=204)


@router.route(
    "POST",
    "/v1/conversations/{conversation_id}/reprocess",
    response=Conversation,
    responses={409: "Still in progress or processing"},
)
def reprocess_conversation(call: Call) -> Conversation:
    """Run post-processing again."""
    return conversations_resource.reprocess(call.user.uid, call.params["conversation_id"])


@functions_framework.http
def conversations(request: Request) -> Response:
    return router(request)
