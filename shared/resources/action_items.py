"""Action items: what the user promised to do, from conversations or added by hand."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from shared.core.models import Model, Moment, Page, Patch, Strict
from shared.store import documents

COLLECTION = "action_items"

Description = Annotated[str, Field(min_length=1, max_length=500)]


class ActionItem(Model):
    id: str
    description: str
    completed: bool = False
    due_at: datetime | None = None
    completed_at: datetime | None = None
    conversation_id: str | None = None
    created_at: datetime
    updated_at: datetime


class ActionItemCreate(Strict):
    description: Description
    due_at: Moment | None = Field(default=None, description="RFC 3339, with an offset.")


class ActionItemUpdate(Patch):
    clearable: ClassVar[frozenset[str]] = frozenset({"due_at"})

    description: Description | None = None
    completed: bool | None = None
    due_at: Moment | None = Field(default=None, description="`null` removes the date.")


class ActionItemQuery(Page):
    status: Literal["pending", "completed"] | None = None


def stored_action_item(
    description: str, due_at: datetime | None, conversation_id: str | None, now: datetime
) -> dict[str, Any]:
    """The stored fields of a new action item, open: from the conversation `conversation_id`, or
    added by the user (`conversation_id` None); `due_at` stored in UTC."""
    return {
        "description": description,
        "completed": False,
        "due_at": due_at.astimezone(UTC) if due_at else None,
        "completed_at": None,
        "conversation_id": conversation_id,
        "created_at": now,
        "updated_at": now,
    }


def listing(uid: str, query: ActionItemQuery) -> documents.Listing:
    """The query behind `list_action_items` (and the index it needs)."""
    equal = {"completed": query.status == "completed"} if query.status else None
    return documents.listing(uid, COLLECTION, equal=equal)


def list_action_items(uid: str, query: ActionItemQuery) -> list[ActionItem]:
    found = listing(uid, query)
    return [
        ActionItem.model_validate(item)
        for item in documents.read_page(found, query.limit, query.offset)
    ]


def get_action_item(uid: str, item_id: str) -> ActionItem:
    return ActionItem.model_validate(documents.read(uid, COLLECTION, item_id))


def create_action_item(uid: str, body: ActionItemCreate) -> ActionItem:
    reference = documents.collection(uid, COLLECTION).document()
    fields = stored_action_item(body.description, body.due_at, None, datetime.now(UTC))
    reference.create(fields)
    return ActionItem.model_validate({**fields, "id": reference.id})


def update_action_item(uid: str, item_id: str, body: ActionItemUpdate) -> ActionItem:
    """Completing sets `completed_at` (once); un-completing clears it."""
    from google.cloud import firestore

    reference = documents.document(uid, COLLECTION, item_id)

    @firestore.transactional
    def apply(transaction: firestore.Transaction) -> None:
        current = reference.get(transaction=transaction).to_dict()
        if current is None:
            raise documents.not_found(COLLECTION)
        now = datetime.now(UTC)
        changes = {**body.changes(), "updated_at": now}
        if body.completed is True and not current.get("completed"):
            changes["completed_at"] = now
        elif body.completed is False:
            changes["completed_at"] = None
        transaction.update(reference, changes)

    apply(documents.db().transaction())
    return get_action_item(uid, item_id)


def delete_action_item(uid: str, item_id: str) -> None:
    documents.delete(uid, COLLECTION, item_id)
