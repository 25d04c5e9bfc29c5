"""The waitlist: one document per address, so signing up twice changes nothing."""

from __future__ import annotations

import contextlib
import hashlib
from datetime import UTC, datetime

from pydantic import EmailStr, Field

from shared.core.models import Strict
from shared.store.firestore import db


class EmailSignup(Strict):
    email: EmailStr = Field(max_length=254)


def normalized(email: str) -> str:
    return email.strip().lower()


def waitlist_id(email: str) -> str:
    """The waitlist document of an address: its hash, so a repeat lands on the same document."""
    return hashlib.sha256(normalized(email).encode()).hexdigest()


def join(email: str, source: str) -> None:
    """Record `email` once; a repeat is a no-op (the first sign-up's date and source stay)."""
    from google.api_core.exceptions import AlreadyExists

    address = normalized(email)
    document = db().collection("waitlist").document(waitlist_id(address))
    with contextlib.suppress(AlreadyExists):
        document.create({"email": address, "source": source, "created_at": datetime.now(UTC)})
