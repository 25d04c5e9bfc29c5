"""Publishing to Pub/Sub: a lazily built, reused publisher and one `publish` call.

Messages carry JSON bodies. Topic names are the short names of `infra/resources.yaml`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from shared.core.clients import Lazy
from shared.core.settings import get_settings

if TYPE_CHECKING:
    from google.cloud.pubsub_v1 import PublisherClient

PUBLISH_TIMEOUT_SECONDS = 30.0


def _build(_: None) -> PublisherClient:
    from google.cloud import pubsub_v1

    return pubsub_v1.PublisherClient()


publisher: Lazy[None, PublisherClient] = Lazy(_build)
"""The process's Pub/Sub publisher (it honours `PUBSUB_EMULATOR_HOST` itself): `publisher()`."""


def topic_path(topic: str) -> str:
    return f"projects/{get_settings().google_cloud_project}/topics/{topic}"


def publish(topic: str, data: Any, **attributes: str) -> str:
    """Publish `data` as JSON to `topic` and wait for the server's message id."""
    body = json.dumps(data, separators=(",", ":"), default=str).encode()
    future = publisher().publish(topic_path(topic), body, **attributes)
    return str(future.result(timeout=PUBLISH_TIMEOUT_SECONDS))
