"""`Idempotency-Key` on POST: the same key from the same user within 24 h gets the first
response again, and the work is done once (API.md, "Conventions").

A key is reserved by creating `idempotency/{sha256(uid, key)}` (one `create`, which fails if
the document exists, so two concurrent duplicates cannot both run). The reservation remembers a
fingerprint of the request; the same key with a different request is a 409. When the handler
finishes, its response is stored on the reservation and replayed to every repeat. A handler that
fails with an API error (or crashes) releases the key, so a corrected request can use it again.
A duplicate that arrives while the first is still running waits for its response, briefly.
A reservation left pending by a crashed instance is taken over after `LOCK_SECONDS`.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.errors import Conflict, Unprocessable
from shared.firestore import db

HEADER = "Idempotency-Key"
COLLECTION = "idempotency"
EXPIRY_FIELD = "expires_at"  # production deletes expired reservations by a TTL policy on it
TTL = timedelta(hours=24)
LOCK_SECONDS = 60.0
WAIT_SECONDS = 10.0
POLL_SECONDS = 0.1
KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: str
    content_type: str


def check_key(key: str) -> str:
    if not KEY_PATTERN.match(key):
        raise Unprocessable(f"header {HEADER}: use 1 to 255 visible ASCII characters")
    return key


def fingerprint(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


@dataclass(frozen=True)
class Reservation:
    """A key this request holds: `complete` it with the response, or `release` it."""

    reference: Any

    def complete(self, response: StoredResponse) -> None:
        self.reference.update(
            {
                "state": "done",
                "status": response.status,
                "body": response.body,
                "content_type": response.content_type,
            }
        )

    def release(self) -> None:
        self.reference.delete()


def reserve(uid: str, key: str, request_fingerprint: str) -> Reservation | StoredResponse:
    """The key for this request, or the stored response of the first request with it (waiting
    briefly for one still running)."""
    from google.api_core.exceptions import AlreadyExists

    reference = db().collection(COLLECTION).document(fingerprint(uid, key))
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        now = datetime.now(UTC)
        reservation = {
            "uid": uid,
            "fingerprint": request_fingerprint,
            "state": "pending",
            "locked_at": now,
            EXPIRY_FIELD: now + TTL,
        }
        try:
            reference.create(reservation)
            return Reservation(reference)
        except AlreadyExists:
            pass
        stored = reference.get().to_dict()
        if stored is None:
            continue  # released meanwhile: try to reserve again
        if stored[EXPIRY_FIELD] <= now or (
            stored["state"] == "pending"
            and (now - stored["locked_at"]).total_seconds() > LOCK_SECONDS
        ):
            if _take_over(reference, stored, reservation):
                return Reservation(reference)
            continue
        if stored["fingerprint"] != request_fingerprint:
            raise Conflict(f"this {HEADER} was used within 24 hours for a different request")
        if stored["state"] == "done":
            return StoredResponse(stored["status"], stored["body"], stored["content_type"])
        if time.monotonic() > deadline:
            raise Conflict(f"a request with this {HEADER} is still being processed; retry later")
        time.sleep(POLL_SECONDS)


def once(
    uid: str, key: str, request_fingerprint: str, run: Callable[[], StoredResponse]
) -> tuple[StoredResponse, bool]:
    """The response to this request: `run()`'s, or the stored one of the first request with
    this key. The flag says whether it was replayed."""
    found = reserve(uid, key, request_fingerprint)
    if isinstance(found, StoredResponse):
        return found, True
    try:
        response = run()
    except BaseException:
        found.release()
        raise
    found.complete(response)
    return response, False


def _take_over(reference: Any, seen: dict[str, Any], reservation: dict[str, Any]) -> bool:
    """Replace an expired or abandoned reservation, unless someone else changed it first."""
    from google.cloud import firestore

    @firestore.transactional
    def replace(transaction: firestore.Transaction) -> bool:
        if reference.get(transaction=transaction).to_dict() != seen:
            return False
        transaction.set(reference, reservation)
        return True

    taken: bool = replace(db().transaction())
    return taken
