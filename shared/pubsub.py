"""Publishing to Pub/Sub: a lazily built, reused publisher and one `publish` call.

Messages carry JSON bodies. Topic names are the short names of `infra/resources.yaml`.
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any

from shared.settings import get_settings

if TYPE_CHECKING:
    from google.cloud.pubsub_v1 import PublisherClient

_publisher: PublisherClient | None = None
_lock = threading.Lock()

PUBLISH_TIMEOUT_SECONDS = 30.0


def publisher() -> PublisherClient:
    """The process's Pub/Sub publisher (it honours `PUBSUB_EMULATOR_HOST` itself)."""
    global _publisher
    if _publisher is None:
        with _lock:
            if _publisher is None:
                from google.cloud import pubsub_v1

                _publisher = pubsub_v1.PublisherClient()
    return _publisher


def topic_path(topic: str) -> str:
    return f"projects/{get_settings().google_cloud_project}/topics/{topic}"


def publish(topic: str, data: Any, **attributes: str) -> str:
    """Publish `data` as JSON to `topic` and wait for the server's message id."""
    body = json.dumps(data, separators=(",", ":"), default=str).encode()
    future = publisher().publish(topic_path(topic), body, **attributes)
    return str(future.result(timeout=PUBLISH_TIMEOUT_SECONDS))
