"""Cloud Scheduler's part in the local stack: ticking the scheduled topics (docs/architecture.md,
"Local stack")."""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.request

from infra import deployables
from infra.emulators import PROJECT


class Ticker:
    """Cloud Scheduler's part locally: publishes `{}` to every topic with a `schedule` in
    `infra/resources.yaml`, once per period (the first after one period), through the Pub/Sub
    emulator's REST API, from a thread of the launcher."""

    def __init__(self, pubsub_port: int, every_seconds: float | None = None):
        self.url = f"http://127.0.0.1:{pubsub_port}/v1/projects/{PROJECT}/topics"
        self.topics = [topic for topic in deployables.topics() if topic.schedule]
        self.every_seconds = every_seconds  # overrides the schedules (tests)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ticker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def tick(self, topic: str) -> None:
        body = json.dumps({"messages": [{"data": "e30="}]}).encode()  # base64 of "{}"
        request = urllib.request.Request(
            f"{self.url}/{topic}:publish",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            reply.read()

    def _run(self) -> None:
        due = {
            topic.name: time.monotonic() + (self.every_seconds or topic.every_seconds or 60)
            for topic in self.topics
        }
        while not self._stopping.wait(0.1):
            for topic in self.topics:
                if time.monotonic() < due[topic.name]:
                    continue
                due[topic.name] += self.every_seconds or topic.every_seconds or 60
                try:
                    self.tick(topic.name)
                except (OSError, urllib.error.URLError) as error:
                    print(f"ticker: could not publish to {topic.name}: {error}", file=sys.stderr)
