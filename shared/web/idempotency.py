"""`Idempotency-Key` on POST: the same key from the same user within 24 h gets the first
response again, and the work is done once (docs/api.md, "Idempotency").

A key is reserved by creating `idempotency/{sha256(uid, key)}` (one `create`, which fails if
the document exists, so two concurrent duplicates cannot both run). The reservation remembers a
fingerprint of the request; the same key with a different request is a 409. When the handler
finishes, its response is stored on the reservation and replayed to every repeat. A handler that
fails with an API error (or crashes) releases the key, so a corrected request can use it again.
A duplicate that arrives while the first is still running waits for its response, briefly.
A reservation left pending by a crashed instance is taken over after `LOCK_SECONDS`; a holder
that runs longer keeps its reservation by `refresh`ing it (the streaming chat does, while it
streams). A holder writes only the version of the reservation it last wrote (a Firestore
`last_update_time` precondition), so one whose reservation was taken over meanwhile cannot
complete, release or refresh the new holder's: it logs a warning and leaves it alone.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.core.errors import Conflict, Unprocessable
from shared.core.logging import get_logger
from shared.store.firestore import db

HEADER = "Idempotency-Key"
COLLECTION = "idempotency"
EXPIRY_FIELD = "expires_at"  # production deletes expired reservations by a TTL policy on it
TTL = timedelta(hours=24)
LOCK_SECONDS = 60.0
WAIT_SECONDS = 10.0
POLL_SECONDS = 0.1
KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")

log = get_logger("idempotency")


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


class Reservation:
    """A key this request holds: `complete` it with the response, or `release` it; `refresh` it
    while the work runs longer than `LOCK_SECONDS`.

    Each write is conditional on the reservation's last write being this holder's own, so a
    holder that lost its reservation (taken over after `LOCK_SECONDS`) changes nothing.
    Thread-safe: a refresh running in a thread is finished before `complete` or `release`."""

    def __init__(self, reference: Any, version: datetime) -> None:
        self.reference = reference
        self._version = version  # the update time of this holder's last write
        self._lock = threading.Lock()
        self._ended = False  # completed, released or lost: nothing more to write

    def complete(self, response: StoredResponse) -> bool:
        """Store `response` for repeats; False if the reservation is no longer this one's."""
        fields = {
            "state": "done",
            "status": response.status,
            "body": response.body,
            "content_type": response.content_type,
        }
        return self._write("complete", lambda option: self.reference.update(fields, option))

    def release(self) -> bool:
        """Free the key for a retry; False if the reservation is no longer this one's."""
        return self._write("release", lambda option: self.reference.delete(option))

    def refresh(self) -> bool:
        """Renew the lock for another `LOCK_SECONDS`; False if the reservation is no longer this
        one's, or was completed or released."""
        fields = {"locked_at": datetime.now(UTC)}
        return self._write(
            "refresh", lambda option: self.reference.update(fields, option), ends=False
        )

    def _write(self, action: str, write: Callable[[Any], Any], *, ends: bool = True) -> bool:
        """`write` with the precondition that this holder's last write is the latest."""
        from google.api_core.exceptions import FailedPrecondition, NotFound

        with self._lock:
            if self._ended:
                return False
            option = db().write_option(last_update_time=self._version)
            try:
                result = write(option)
            except (FailedPrecondition, NotFound):
                self._ended = True
                log.warning(
                    "idempotency reservation %s is no longer this request's (taken over after "
                    "its lock expired, or deleted): %s skipped",
                    self.reference.id,
                    action,
                )
                return False
            if ends:
                self._ended = True
            else:
                self._version = result.update_time
            return True


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
            return Reservation(reference, reference.create(reservation).update_time)
        except AlreadyExists:
            pass
        snapshot = reference.get()
        stored = snapshot.to_dict()
        if stored is None:
            continue  # released meanwhile: try to reserve again
        if stored[EXPIRY_FIELD] <= now or (
            stored["state"] == "pending"
            and (now - stored["locked_at"]).total_seconds() > LOCK_SECONDS
        ):
            taken = _take_over(reference, snapshot, reservation)
            if taken is not None:
                return taken
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
    complete(found, response)
    return response, False


# Waits before trying again to store a response whose work is done.
COMPLETE_RETRY_DELAYS = (0.1, 0.5)


def complete(reservation: Reservation, response: StoredResponse) -> None:
    """Store the response of work that is done, trying again on a transient failure. If it
    still fails, the caller gets its response all the same (the work happened): the key stays
    pending, and a repeat after `LOCK_SECONDS` would run again, which is logged here."""
    for delay in (*COMPLETE_RETRY_DELAYS, None):
        try:
            reservation.complete(response)
            return
        except Exception:
            if delay is None:
                log.exception(
                    "the response of idempotency key %s could not be stored",
                    reservation.reference.id,
                )
                return
            time.sleep(delay)


def _take_over(reference: Any, seen: Any, reservation: dict[str, Any]) -> Reservation | None:
    """Replace an expired or abandoned reservation (the snapshot `seen`), unless someone else
    changed it first."""
    from google.api_core.exceptions import FailedPrecondition, NotFound
    from google.cloud import firestore

    replacement: dict[str, Any] = {field: firestore.DELETE_FIELD for field in seen.to_dict()}
    replacement.update(reservation)
    option = db().write_option(last_update_time=seen.update_time)
    try:
        written = reference.update(replacement, option)
    except (FailedPrecondition, NotFound):
        return None
    return Reservation(reference, written.update_time)
