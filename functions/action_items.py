"""/v1/action-items: the caller's action items."""

from __future__ import annotations

import functions_framework
from werkzeug.wrappers import Request, Response

from shared.resources import action_items as action_items_resource
from shared.resources.action_items import (
    ActionItem,
    ActionItemCreate,
    ActionItemQuery,
    ActionItemUpdate,
)
from shared.web.router import Call, Router

router = Router("action_items")


@router.route("GET", "/v1/action-items", query=ActionItemQuery, response=list[ActionItem])
def list_action_items(call: Call) -> list[ActionItem]:
    """The caller's action items, newest first; `status` picks pending or completed ones."""
    return action_items_resource.list_action_items(call.user.uid, call.query)


@router.route("POST", "/v1/action-items", body=ActionItemCreate, response=ActionItem, status=201)
def create_action_item(call: Call) -> ActionItem:
    """Add an action item."""
    return action_items_resource.create_action_item(call.user.uid, call.body)


@router.route("GET", "/v1/action-items/{item_id}", response=ActionItem)
def get_action_item(call: Call) -> ActionItem:
    """One action item."""
    return action_items_resource.get_action_item(call.user.uid, call.params["item_id"])


@router.route("PUT", "/v1/action-items/{item_id}", body=ActionItemUpdate, response=ActionItem)
def update_action_item(call: Call) -> ActionItem:
    """Change an action item; `completed: true` completes it, `false` reopens it."""
    return action_items_resource.update_action_item(
        call.user.uid, call.params["item_id"], call.body
    )


@router.route("DELETE", "/v1/action-items/{item_id}", status=204)
def delete_action_item(call: Call) -> Response:
    """Delete an action item."""
    action_items_resource.delete_action_item(call.user.uid, call.params["item_id"])
    return Response(status=204)


@functions_framework.http
def action_items(request: Request) -> Response:
    return router(request)
