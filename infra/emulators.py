"""The emulators of the local stack (Firestore, Pub/Sub, Firebase Auth) and what is set up in
them: the topics and push subscriptions of `infra/resources.yaml`, pushing to the gateway as
production pushes to each function. See docs/architecture.md, "Local stack".
"""

from __future__ import annotations

import json
import os
from contextlib import suppress
from pathlib import Path

from infra import deployables
from infra.deployables import ROOT
from infra.ports import Ports
from infra.prerequisites import FIREBASE_BIN
from infra.services import Service

PROJECT = "demo-mnemo"


def write_auth_config(ports: Ports, workdir: Path) -> Path:
    """The Auth emulator's `firebase.json` (its ports, not the repository's), written in
    `workdir`."""
    config = {
        "emulators": {
            "singleProjectMode": True,
            "auth": {"host": "127.0.0.1", "port": ports.auth},
            "hub": {"host": "127.0.0.1", "port": ports.hub},
            "logging": {"host": "127.0.0.1", "port": ports.logging},
            "ui": {"enabled": False},
        }
    }
    path = workdir / "firebase.json"
    path.write_text(json.dumps(config))
    return path


def emulator_services(ports: Ports, sdk_root: Path, auth_config: Path) -> list[Service]:
    """The three emulators on `ports`: gcloud's (from `sdk_root`) and firebase-tools' Auth, run
    from the folder of its `auth_config`."""
    gcloud = str(sdk_root / "bin" / "gcloud")
    quiet = {**os.environ, "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"}
    return [
        Service(
            "firestore",
            [
                gcloud,
                "emulators",
                "firestore",
                "start",
                f"--host-port=127.0.0.1:{ports.firestore}",
                # Production's rules, so the tests show that apps cannot go around the API.
                f"--rules={ROOT / deployables.firebase_config()['firestore']['rules']}",
            ],
            ports.firestore,
            env=quiet,
        ),
        Service(
            "pubsub",
            [
                gcloud,
                "beta",
                "emulators",
                "pubsub",
                "start",
                f"--host-port=127.0.0.1:{ports.pubsub}",
                f"--project={PROJECT}",
            ],
            ports.pubsub,
            env=quiet,
        ),
        Service(
            "auth",
            [
                str(FIREBASE_BIN),
                "emulators:start",
                "--only",
                "auth",
                "--project",
                PROJECT,
                "--config",
                str(auth_config),
            ],
            ports.auth,
            cwd=auth_config.parent,
            env={
                **os.environ,
                "NO_UPDATE_NOTIFIER": "1",
                "FIREBASE_CLI_DISABLE_UPDATE_CHECK": "1",
            },
        ),
    ]


def create_pubsub(env: dict[str, str], http_port: int) -> None:
    """Create the topics and push subscriptions of `infra/resources.yaml` in the emulator,
    pushing to the gateway as production pushes to each function."""
    import google.cloud.pubsub_v1 as pubsub_v1
    from google.api_core.exceptions import AlreadyExists
    from google.protobuf.duration_pb2 import Duration

    # The clients find the emulator through the environment, read when they are built.
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        publisher = pubsub_v1.PublisherClient()
        subscriber = pubsub_v1.SubscriberClient()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    try:
        policy = deployables.subscription_policy()
        for topic in deployables.topics():
            with suppress(AlreadyExists):
                publisher.create_topic(name=publisher.topic_path(PROJECT, topic.name))
        for subscription in deployables.subscriptions():
            topic_path = publisher.topic_path(PROJECT, subscription.topic)
            request: dict[str, object] = {
                "name": subscriber.subscription_path(PROJECT, subscription.name),
                "topic": topic_path,
                "push_config": {
                    "push_endpoint": f"http://127.0.0.1:{http_port}/_events/{subscription.function}/"
                    f"{topic_path}"
                },
                "ack_deadline_seconds": deployables.ack_deadline(subscription.function),
                "retry_policy": {
                    "minimum_backoff": Duration(seconds=policy["min_backoff_seconds"]),
                    "maximum_backoff": Duration(seconds=policy["max_backoff_seconds"]),
                },
            }
            if subscription.dead_letter_topic:
                request["dead_letter_policy"] = {
                    "dead_letter_topic": publisher.topic_path(
                        PROJECT, subscription.dead_letter_topic
                    ),
                    "max_delivery_attempts": policy["max_delivery_attempts"],
                }
            with suppress(AlreadyExists):
                subscriber.create_subscription(request=request)
    finally:
        subscriber.close()
        publisher.stop()
