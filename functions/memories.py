"""/v1/memories: the caller's memories."""

from __future__ import annotations

import functions_framework
from werkzeug.wrappers import Request, Response

from shared import memories as store
from shared.http import Call, Router
from shared.memories import Memory, MemoryCreate, MemoryQuery, MemorySearch, MemoryUpdate

router = Router("memories")


@router.route("GET", "/v1/memories", query=MemoryQuery, response=list[Memory])
def list_memories(call: Call) -> list[Memory]:
    """The caller's memories, newest first."""
    return store.list_memories(call.user.uid, call.query)


@router.route("POST", "/v1/memories", body=MemoryCreate, response=Memory, status=201)
def create_memory(call: Call) -> Memory:
    """Remember something."""
    return store.create_memory(call.user.uid, call.body)


@router.route("GET", "/v1/memories/search", query=MemorySearch, response=list[Memory])
def search_memories(call: Call) -> list[Memory]:
    """The caller's memories that best match `q`: embedding neighbours merged with keyword
    hits (keywords alone while no language model is configured)."""
    return store.search(call.user.uid, call.query)


@router.route("GET", "/v1/memories/{memory_id}", response=Memory)
def get_memory(call: Call) -> Memory:
    """One memory."""
    return store.get_memory(call.user.uid, call.params["memory_id"])


@router.route("PUT", "/v1/memories/{memory_id}", body=MemoryUpdate, response=Memory)
def update_memory(call: Call) -> Memory:
    """Change a memory's content or category."""
    return store.update_memory(call.user.uid, call.params["memory_id"], call.body)


@router.route("DELETE", "/v1/memories/{memory_id}", status=204)
def delete_memory(call: Call) -> Response:
    """Forget a memory."""
    store.delete_memory(call.user.uid, call.params["memory_id"])
    return Response(status=204)


@functions_framework.http
def memories(request: Request) -> Response:
    return router(request)
