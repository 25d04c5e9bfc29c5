"""The pipeline benchmark's floor: the Pub/Sub emulator's own publish-to-push time, to a bare
HTTP sink that stamps arrivals (`bench.pipeline`)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bench.harness import BenchError
from infra import deployables
from infra.emulators import PROJECT
from infra.ports import free_port
from infra.services import Service

FLOOR_TOPIC = "bench.floor"


class Arrivals:
    """When each key was first seen (`time.monotonic()`), stamped from any thread."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.at: dict[str, float] = {}
        self._changed = threading.Condition()

    def stamp(self, key: str, when: float) -> None:
        with self._changed:
            self.at.setdefault(key, when)
            self._changed.notify_all()

    def wait(self, keys: list[str], timeout: float, log: Service) -> None:
        with self._changed:
            if self._changed.wait_for(lambda: all(k in self.at for k in keys), timeout):
                return
            missing = sum(k not in self.at for k in keys)
        raise BenchError(f"{missing}/{len(keys)} {self.what} after {timeout:g} s\n{log.log_tail()}")


class Sink(ThreadingHTTPServer):
    """The floor's push endpoint: stamps each message's `conversation_id` attribute, answers 204."""

    daemon_threads = True

    def __init__(self) -> None:
        self.arrivals = Arrivals("floor messages pushed")
        super().__init__(("127.0.0.1", free_port()), _SinkHandler)
        threading.Thread(target=self.serve_forever, name="sink", daemon=True).start()


class _SinkHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the emulator's pushes to the gateway

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        arrived = time.monotonic()
        assert isinstance(self.server, Sink)
        self.server.arrivals.stamp(body["message"]["attributes"]["conversation_id"], arrived)
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def create_floor_topic(push_endpoint: str) -> None:
    from google.cloud import pubsub_v1
    from google.protobuf.duration_pb2 import Duration

    policy = deployables.subscription_policy()
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = publisher.create_topic(name=publisher.topic_path(PROJECT, FLOOR_TOPIC)).name
    subscriber.create_subscription(
        request={
            "name": subscriber.subscription_path(PROJECT, f"{FLOOR_TOPIC}.sink"),
            "topic": topic,
            "push_config": {"push_endpoint": push_endpoint},
            "ack_deadline_seconds": policy["ack_deadline_seconds"],
            "retry_policy": {
                "minimum_backoff": Duration(seconds=policy["min_backoff_seconds"]),
                "maximum_backoff": Duration(seconds=policy["max_backoff_seconds"]),
            },
        }
    )
    subscriber.close()
    publisher.stop()
