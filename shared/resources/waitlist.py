"""The waitlist: one document per address, so signing up twice changes nothing."""

from __future__ import annotations

import contextlib
import hashlib
import re
from datetime import UTC, datetime
from typing import Any

from pydantic import EmailStr, Field

from shared.core.models import Strict
from shared.store.firestore import db


def _deliverable_schema(schema: dict[str, Any]) -> None:
    """The schema says what `EmailStr` refuses beyond the syntax: a domain without a dot, or
    one of the special-use names (`.test`, `.invalid`, `localhost`, ...), in any case."""
    from email_validator import SPECIAL_USE_DOMAIN_NAMES

    def any_case(word: str) -> str:
        return "".join(f"[{c}{c.upper()}]" if c.isalpha() else re.escape(c) for c in word)

    special = "|".join(any_case(name) for name in SPECIAL_USE_DOMAIN_NAMES)
    schema["pattern"] = rf"^[^@]+@(?!(?:[^@]*\.)?(?:{special})\.?$)[^@]+\.[^@]+$"


class EmailSignup(Strict):
    email: EmailStr = Field(max_length=254, json_schema_extra=_deliverable_schema)


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
