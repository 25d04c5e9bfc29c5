"""The user's profile and the deletion of everything a user owns."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from shared.auth import Caller, forget_account_state
from shared.firestore import db
from shared.models import UserPatch, UserProfile

# Top-level collections whose documents belong to one user through a `uid` field
# (ARCHITECTURE.md, "Data"). Everything else a user owns lives under `users/{uid}`.
USER_OWNED_COLLECTIONS = ("api_keys", "idempotency", "usage", "rate_limits")


def waitlist_id(email: str) -> str:
    """The waitlist document of an address: its hash, so a repeat lands on the same document."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


def get_profile(caller: Caller) -> UserProfile:
    snapshot = db().collection("users").document(caller.uid).get()
    stored = snapshot.to_dict() or {}
    return UserProfile.model_validate({"email": caller.email, **stored, "uid": caller.uid})


def update_profile(caller: Caller, patch: UserPatch) -> UserProfile:
    now = datetime.now(UTC)
    changes: dict[str, object] = patch.model_dump(exclude_unset=True)
    if patch.terms_accepted:
        changes["terms_accepted_at"] = now
    document = db().collection("users").document(caller.uid)

    from google.cloud import firestore

    @firestore.transactional
    def apply(transaction: firestore.Transaction) -> None:
        snapshot = document.get(transaction=transaction)
        if not snapshot.exists:
            changes.update(created_at=now, email=caller.email)
        elif snapshot.get("terms_accepted") and "terms_accepted_at" in changes:
            del changes["terms_accepted_at"]  # keep the date of the first acceptance
        transaction.set(document, {**changes, "updated_at": now}, merge=True)

    apply(db().transaction())
    return get_profile(caller)


def delete_user(caller: Caller) -> None:
    """Delete every document of the user: the profile with all its subcollections, the
    documents of `USER_OWNED_COLLECTIONS`, and the waitlist entry of the account's address."""
    client = db()
    client.recursive_delete(client.collection("users").document(caller.uid))
    from google.cloud.firestore import FieldFilter

    for name in USER_OWNED_COLLECTIONS:
        owned = client.collection(name).where(filter=FieldFilter("uid", "==", caller.uid))
        for snapshot in owned.stream():
            client.recursive_delete(snapshot.reference)
    if caller.email:
        client.collection("waitlist").document(waitlist_id(caller.email)).delete()
    forget_account_state(caller.uid)
