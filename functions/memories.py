"""/v1/memories: the caller's memories."""

from __future__ import annotations

import functions_framework
from werkzeug.wrappers import Request, Response

from shared.resources import memories as memories_resource
from shared.resources.memories import Memory, MemoryCreate, MemoryQuery, MemorySearch, MemoryUpdate
from shared.web.router import Call, Router

router = Router("memories")


@router.route("GET", "/v1/memories", query=MemoryQuery, response=list[Memory])
def list_memories(call: Call) -> list[Memory]:
    """The caller's memories, newest first."""
    return memories_resource.list_memories(call.user.uid, call.query)


@router.route("POST", "/v1/memories", body=MemoryCreate, response=Memory, status=201)
def create_memory(call: Call) -> Memory:
    """Remember something."""
    return memories_resource.create_memory(call.user.uid, call.body)


@router.route("GET", "/v1/memories/search", query=MemorySearch, response=list[Memory])
def search_memories(call: Call) -> list[Memory]:
    """The caller's memories that best match `q`: embedding neighbours merged with keyword
    hits (keywords alone while no language model is configured)."""
    return memories_resource.search(call.user.uid, call.query)


@router.route("GET", "/v1/memories/{memory_id}", response=Memory)
def get_memory(call: Call) -> Memory:
    """One memory."""
    return memories_resource.get_memory(call.user.uid, call.params["memory_id"])


@router.route("PUT", "/v1/memories/{memory_id}", body=MemoryUpdate, response=Memory)
def update_memory(call: Call) -> Memory:
    """Change a memory's content or category."""
    return memories_resource.update_memory(call.user.uid, call.params["memory_id"], call.body)


@router.route("DELETE", "/v1/memories/{memory_id}", status=204)
def delete_memory(call: Call) -> Response:
    """Forget a memory."""
    memories_resource.delete_memory(call.user.uid, call.params["memory_id"])
    return Response(status=204)


@functions_framework.http
def memories(request: Request) -> Response:
    return router(request)
