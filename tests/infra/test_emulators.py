"""What the local stack sets up in the emulators, seen through them."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest

from infra import deployables
from infra.emulators import PROJECT
from infra.scheduler import Ticker
from shared.store.pubsub import publish
from tests.support.pubsub import tap


def test_apps_cannot_read_or_write_firestore_directly(stack, user, firestore):
    firestore.collection("users").document(user.uid).set({"name": "mine"})
    host = stack.client_env()["FIRESTORE_EMULATOR_HOST"]
    document = f"http://{host}/v1/projects/{PROJECT}/databases/(default)/documents/users/{user.uid}"
    for headers in ({}, user.bearer):
        assert httpx.get(document, headers=headers).status_code == 403
        written = httpx.patch(document, headers=headers, json={"fields": {}})
        assert written.status_code == 403
    assert firestore.collection("users").document(user.uid).get().get("name") == "mine"


def test_every_declared_subscription_exists_with_its_policies(stack):
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()
    policy = deployables.subscription_policy()
    for declared in deployables.subscriptions():
        found = subscriber.get_subscription(
            subscription=subscriber.subscription_path(PROJECT, declared.name)
        )
        assert found.topic.endswith(f"/topics/{declared.topic}")
        assert found.push_config.push_endpoint.startswith(
            f"{stack.base_url}/_events/{declared.function}/"
        )
        # As deployed: at least the function's own timeout.
        assert found.ack_deadline_seconds == deployables.ack_deadline(declared.function)
        if declared.dead_letter_topic:
            assert found.dead_letter_policy.dead_letter_topic.endswith(declared.dead_letter_topic)
            assert found.dead_letter_policy.max_delivery_attempts == policy["max_delivery_attempts"]
    subscriber.close()


def test_a_dead_lettered_message_is_recorded_through_the_push_subscription(stack, firestore):
    marker = uuid.uuid4().hex
    message_id = publish(
        "conversation.finished.dead-letter",
        {"conversation_id": marker},
        CloudPubSubDeadLetterSourceSubscription="conversation.finished.process_conversation",
        CloudPubSubDeadLetterSourceDeliveryCount="5",
    )
    record = firestore.collection("dead_letters").document(message_id)
    deadline = time.monotonic() + 30
    while not record.get().exists and time.monotonic() < deadline:
        time.sleep(0.2)
    stored = record.get()
    assert stored.exists, "the dead_letters function never recorded the message"
    assert json.loads(stored.get("data")) == {"conversation_id": marker}
    assert stored.get("subscription") == "conversation.finished.process_conversation"
    assert stored.get("delivery_attempts") == "5"


@pytest.mark.slow
def test_a_message_that_keeps_failing_is_dead_lettered_and_recorded(stack, firestore):
    """The whole chain: a push subscription whose endpoint always fails, the emulator's
    dead-letter policy after `max_delivery_attempts`, and the recorder on the dead-letter topic."""
    import google.cloud.pubsub_v1 as pubsub_v1
    from google.protobuf.duration_pb2 import Duration

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    name = f"test.failing-{uuid.uuid4().hex[:8]}"
    topic = publisher.create_topic(name=publisher.topic_path(PROJECT, name)).name
    subscriber.create_subscription(
        request={
            "name": subscriber.subscription_path(PROJECT, name),
            "topic": topic,
            "push_config": {"push_endpoint": f"{stack.base_url}/_events/no_such_function/"},
            "retry_policy": {"minimum_backoff": Duration(seconds=1)},
            "dead_letter_policy": {
                "dead_letter_topic": publisher.topic_path(PROJECT, "app.event.dead-letter"),
                "max_delivery_attempts": 5,
            },
        }
    )
    marker = uuid.uuid4().hex
    publisher.publish(topic, json.dumps({"marker": marker}).encode()).result(timeout=30)
    records = firestore.collection("dead_letters")
    deadline = time.monotonic() + 60
    found = []
    while not found and time.monotonic() < deadline:
        found = [doc for doc in records.stream() if marker in doc.to_dict().get("data", "")]
        time.sleep(0.5)
    subscriber.close()
    publisher.stop()
    assert len(found) == 1, "the failing message never reached the dead-letter recorder"
    assert found[0].get("subscription").endswith(name)
    assert found[0].get("delivery_attempts") == "5"


def test_the_local_ticker_publishes_to_every_scheduled_topic(stack):
    """What Cloud Scheduler does in production (`make run` ticks every minute; here faster)."""
    scheduled = [topic.name for topic in deployables.topics() if topic.schedule]
    ticker = Ticker(stack.ports.pubsub, every_seconds=0.3)
    with tap(scheduled[0]) as ticks:
        ticker.start()
        try:
            received = ticks.pull(expect=2, settle=0.1, timeout=10)
        finally:
            ticker.stop()
    assert len(received) >= 2 and all(message.data == {} for message in received)
