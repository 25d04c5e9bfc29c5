"""The Firestore client: built on first use, reused for the life of the instance.

`google.cloud.firestore.Client` directly: firebase-admin's `firestore.client()` demands
credentials even under the emulator. The client honours `FIRESTORE_EMULATOR_HOST` itself.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from shared.settings import get_settings

if TYPE_CHECKING:
    from google.cloud.firestore import Client

_client: Client | None = None
_lock = threading.Lock()


def db() -> Client:
    """The process's Firestore client."""
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                from google.cloud import firestore

                _client = firestore.Client(project=get_settings().google_cloud_project)
    return _client
