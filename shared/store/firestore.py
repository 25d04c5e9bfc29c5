"""The Firestore client: built on first use, reused for the life of the instance.

`google.cloud.firestore.Client` directly: firebase-admin's `firestore.client()` demands
credentials even under the emulator. The client honours `FIRESTORE_EMULATOR_HOST` itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.core.clients import Lazy
from shared.core.settings import get_settings

if TYPE_CHECKING:
    from google.cloud.firestore import Client


def _project() -> str:
    return get_settings().google_cloud_project


def _build(project: str) -> Client:
    from google.cloud import firestore

    return firestore.Client(project=project)


db: Lazy[str, Client] = Lazy(_build, key=_project)
"""The process's Firestore client: `db()`."""
