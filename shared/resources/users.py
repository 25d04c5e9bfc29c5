"""The user's profile and the deletion of everything a user owns."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from shared.auth.tokens import Caller, delete_account
from shared.core.models import Model, Patch
from shared.resources.waitlist import waitlist_id
from shared.store import documents
from shared.store.firestore import db


def _known_timezone(value: str) -> str:
    # Only the IANA names (not the host's `localtime`, `Factory` or `posixrules` files).
    if value not in _iana_zones():
        raise ValueError("unknown time zone; use an IANA name such as Europe/Paris")
    return value


@cache
def _iana_zones() -> frozenset[str]:
    from zoneinfo import available_timezones

    return frozenset(available_timezones() - {"localtime", "Factory", "posixrules"})


def _zones_schema(schema: dict[str, Any]) -> None:
    schema["enum"] = sorted(_iana_zones())  # read when the document is built, not at import


TimeZone = Annotated[
    str,
    Field(min_length=1, max_length=64, json_schema_extra=_zones_schema),
    AfterValidator(_known_timezone),
]
Language = Annotated[str, Field(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$", max_length=35)]


class UserProfile(Model):
    uid: str
    email: str | None = None
    name: str | None = None
    timezone: str = "UTC"
    language: str = "en"
    terms_accepted: bool = False
    terms_accepted_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class UserPatch(Patch):
    terms_accepted: Literal[True] | None = Field(
        default=None, description="Accept the terms of service (it cannot be withdrawn here)."
    )
    name: str | None = Field(default=None, min_length=1, max_length=100)
    timezone: TimeZone | None = None
    language: Language | None = None


# Top-level collections whose documents belong to one user through a `uid` field
# (docs/architecture.md, "Data"). Everything else a user owns lives under `users/{uid}`, but for
# the waitlist entry, keyed by the address.
# The reason an open socket of a deleted account is closed with, and its session cancelled with.
ACCOUNT_DELETED = "account deleted"
USER_OWNED_COLLECTIONS = ("api_keys", "idempotency", "usage", "rate_limits", "dead_letters")


def get_profile(caller: Caller) -> UserProfile:
    """The caller's profile; made on first read, so that `created_at` is the account's first
    use of Mnemo (and never null)."""
    document = db().collection("users").document(caller.uid)
    stored = document.get().to_dict()
    if stored is None:
        stored = _create_profile(document, caller)
    return UserProfile.model_validate({"email": caller.email, **stored, "uid": caller.uid})


def _create_profile(document: Any, caller: Caller) -> dict[str, Any]:
    from google.api_core.exceptions import AlreadyExists

    now = datetime.now(UTC)
    made = {"email": caller.email, "created_at": now, "updated_at": now}
    try:
        document.create(made)
    except AlreadyExists:  # made meanwhile by another request of the caller's
        return document.get().to_dict() or made
    return made


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
    """Delete everything of the user, in an order that a failure part-way can be retried from:

    1. the profile document, which every open socket of the user watches (`realtime.accounts`): on
       every instance they are closed (1008 `account deleted`) and stop writing;
    2. every document: `users/{uid}` with all its subcollections, the documents of
       `USER_OWNED_COLLECTIONS`, and the waitlist entry of the account's address if the account
       has verified it;
    3. the Firebase Auth account, last, so that a retry can still authenticate.
    """
    client = db()
    profile = client.collection("users").document(caller.uid)
    profile.delete()
    client.recursive_delete(profile)
    for name in USER_OWNED_COLLECTIONS:
        for snapshot in documents.owned(name, caller.uid).stream():
            client.recursive_delete(snapshot.reference)
    if caller.email and caller.email_verified:  # else the address may be somebody else's
        client.collection("waitlist").document(waitlist_id(caller.email)).delete()
    delete_account(caller.uid)


def profile_exists(uid: str) -> bool:
    return bool(db().collection("users").document(uid).get(field_paths=["created_at"]).exists)


def ensure_profile(caller: Caller) -> None:
    """Make the caller's profile if there is none yet (as a first read does)."""
    if not profile_exists(caller.uid):
        _create_profile(db().collection("users").document(caller.uid), caller)


# Firestore's limit on the values of one `in` filter: one listener watches this many profiles.
PROFILES_PER_WATCH = 30


class ProfilesWatch:
    """One Firestore listener on up to `PROFILES_PER_WATCH` profiles: `present` is called, from
    the listener's thread, with the uids among `uids` whose profile exists, at once and on every
    change. `stop()` ends it."""

    def __init__(self, uids: list[str], present: Callable[[set[str]], None]):
        from google.cloud.firestore import FieldFilter
        from google.cloud.firestore_v1.field_path import FieldPath

        assert 0 < len(uids) <= PROFILES_PER_WATCH
        users = db().collection("users")
        profiles = [users.document(uid) for uid in uids]
        query = users.where(filter=FieldFilter(FieldPath.document_id(), "in", profiles))
        self._present = present
        self._watch = query.on_snapshot(self._changed)

    def _changed(self, snapshots: list[Any], changes: Any, read_time: Any) -> None:
        self._present({snapshot.id for snapshot in snapshots if snapshot.exists})

    def stop(self) -> None:
        self._watch.unsubscribe()
