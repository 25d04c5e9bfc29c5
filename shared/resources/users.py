"""The user's profile and the deletion of everything a user owns."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.auth.tokens import Caller, forget_account_state
from shared.core.models import UserPatch, UserProfile
from shared.resources.waitlist import waitlist_id
from shared.store.firestore import db

# Top-level collections whose documents belong to one user through a `uid` field
# (ARCHITECTURE.md, "Data"). Everything else a user owns lives under `users/{uid}`.
USER_OWNED_COLLECTIONS = ("api_keys", "idempotency", "usage", "rate_limits")


def get_profile(caller: Caller) -> UserProfile:
    snapshot = db().collection("users").document(caller.uid).get()
    stored = snapshot.to_dict() or {}
    return UserProfile.model_validate({"email": caller.email, **stored, "uid": caller.uid})


def update_profile(caller: Caller, patch: UserPatch) -> UserProfile:
    changes = patch.model_dump(exclude_unset=True)
    document = db().collection("users").document(caller.uid)

    from google.cloud import firestore

    @firestore.transactional
    def apply(transaction: firestore.Transaction) -> None:
        # Built afresh on every attempt: a retried transaction must not see the last one's write.
        now = datetime.now(UTC)
        stored = document.get(transaction=transaction).to_dict()
        write = {**changes, "updated_at": now}
        if stored is None:
            write.update(created_at=now, email=caller.email)
        if patch.terms_accepted and not (stored or {}).get("terms_accepted"):
            write["terms_accepted_at"] = now  # the date of the first acceptance only
        transaction.set(document, write, merge=True)

    apply(db().transaction())
    return get_profile(caller)


def delete_user(caller: Caller) -> None:
    """Delete every document of the user: the profile with all its subcollections, the
    documents of `USER_OWNED_COLLECTIONS`, and the waitlist entry of the account's address if
    the account has verified it."""
    client = db()
    client.recursive_delete(client.collection("users").document(caller.uid))
    from google.cloud.firestore import FieldFilter

    for name in USER_OWNED_COLLECTIONS:
        owned = client.collection(name).where(filter=FieldFilter("uid", "==", caller.uid))
        for snapshot in owned.stream():
            client.recursive_delete(snapshot.reference)
    if caller.email and caller.email_verified:  # else the address may be somebody else's
        client.collection("waitlist").document(waitlist_id(caller.email)).delete()
    forget_account_state(caller.uid)
