"""The waitlist: one document per address, so signing up twice changes nothing."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

from shared.firestore import db
from shared.users import waitlist_id


def join(email: str, source: str) -> None:
    """Record `email` once; a repeat is a no-op (the first sign-up's date and source stay)."""
    from google.api_core.exceptions import AlreadyExists

    address = email.strip().lower()
    document = db().collection("waitlist").document(waitlist_id(address))
    with contextlib.suppress(AlreadyExists):
        document.create({"email": address, "source": source, "created_at": datetime.now(UTC)})
