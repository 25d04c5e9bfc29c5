"""A pull subscription on a topic, to see what the code under test published."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from infra.emulators import PROJECT


@dataclass(frozen=True)
class Message:
    data: Any
    attributes: dict[str, str]


class Tap:
    def __init__(self, subscriber: Any, path: str):
        self.subscriber = subscriber
        self.path = path

    def pull(self, expect: int, settle: float = 1.0, timeout: float = 20.0) -> list[Message]:
        """Messages until `expect` have come and then `settle` seconds passed with no more
        (so a duplicate would be seen), or `timeout`."""
        found: list[Message] = []
        deadline = time.monotonic() + timeout
        quiet_since = None
        while time.monotonic() < deadline:
            reply = self.subscriber.pull(
                request={"subscription": self.path, "max_messages": 100}, timeout=5
            )
            if reply.received_messages:
                quiet_since = None
                self.subscriber.acknowledge(
                    request={
                        "subscription": self.path,
                        "ack_ids": [m.ack_id for m in reply.received_messages],
                    }
                )
                found += [
                    Message(json.loads(m.message.data), dict(m.message.attributes))
                    for m in reply.received_messages
                ]
            elif len(found) >= expect:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= settle:
                    break
            else:
                time.sleep(0.1)
        return found


@contextmanager
def tap(topic: str) -> Iterator[Tap]:
    import google.cloud.pubsub_v1 as pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()
    path = subscriber.subscription_path(PROJECT, f"test-tap-{uuid.uuid4().hex[:12]}")
    subscriber.create_subscription(
        request={"name": path, "topic": f"projects/{PROJECT}/topics/{topic}"}
    )
    try:
        yield Tap(subscriber, path)
    finally:
        subscriber.delete_subscription(request={"subscription": path})
        subscriber.close()
