"""The Pub/Sub part of the deploy: the topics (and who may publish to the dead-letter ones), the
service account whose token push subscriptions carry, the push subscriptions to the event-driven
functions, and the Cloud Scheduler jobs that tick the scheduled topics."""

from __future__ import annotations

from infra import deployables
from infra.deploy.steps import Step, Target, iam_binding


def topic_steps(target: Target) -> list[Step]:
    steps = [
        Step(
            f"topic {topic.name}",
            ("gcloud", "pubsub", "topics", "create", topic.name),
            unless=("gcloud", "pubsub", "topics", "describe", topic.name),
        )
        for topic in deployables.topics()
    ]
    # Without it Pub/Sub cannot forward an undeliverable message to the dead-letter topic.
    for topic in deployables.topics():
        if topic.dead_letter_topic:
            steps.append(
                iam_binding(
                    ("pubsub", "topics"),
                    topic.dead_letter_topic,
                    target.pubsub_agent,
                    "roles/pubsub.publisher",
                )
            )
    return steps


def invoker_steps(target: Target) -> list[Step]:
    steps = []
    account, _, domain = target.invoker.partition("@")
    if domain == f"{target.project}.iam.gserviceaccount.com":  # else it is managed elsewhere
        steps.append(
            Step(
                f"service account {target.invoker}",
                (
                    "gcloud",
                    "iam",
                    "service-accounts",
                    "create",
                    account,
                    "--display-name=Pub/Sub push invoker",
                ),
                unless=("gcloud", "iam", "service-accounts", "describe", target.invoker),
            )
        )
    # Pub/Sub mints the push OIDC tokens as the invoker (projects from before April 2021 lack
    # this grant by default).
    steps.append(
        iam_binding(
            ("iam", "service-accounts"),
            target.invoker,
            target.pubsub_agent,
            "roles/iam.serviceAccountTokenCreator",
        )
    )
    return steps


def subscription_steps(target: Target) -> list[Step]:
    policy = deployables.subscription_policy()
    steps = []
    for subscription in deployables.subscriptions():
        # The topic in the push path names the CloudEvent's source, as the local stack does.
        endpoint = (
            f"{target.function_url(subscription.function)}/projects/{target.project}"
            f"/topics/{subscription.topic}"
        )
        options: tuple[str, ...] = (
            f"--push-endpoint={endpoint}",
            f"--push-auth-service-account={target.invoker}",
            f"--ack-deadline={deployables.ack_deadline(subscription.function)}",
            f"--min-retry-delay={policy['min_backoff_seconds']}s",
            f"--max-retry-delay={policy['max_backoff_seconds']}s",
        )
        if subscription.dead_letter_topic:
            options += (
                f"--dead-letter-topic={subscription.dead_letter_topic}",
                f"--max-delivery-attempts={policy['max_delivery_attempts']}",
            )
        probe = ("gcloud", "pubsub", "subscriptions", "describe", subscription.name)
        steps.append(
            Step(
                f"subscription {subscription.name}",
                (
                    "gcloud",
                    "pubsub",
                    "subscriptions",
                    "create",
                    subscription.name,
                    f"--topic={subscription.topic}",
                    *options,
                ),
                unless=probe,
                otherwise=(
                    "gcloud",
                    "pubsub",
                    "subscriptions",
                    "update",
                    subscription.name,
                    *options,
                ),
            )
        )
        if subscription.dead_letter_topic:
            # Pub/Sub acknowledges the message here once it has forwarded it.
            steps.append(
                iam_binding(
                    ("pubsub", "subscriptions"),
                    subscription.name,
                    target.pubsub_agent,
                    "roles/pubsub.subscriber",
                )
            )
    return steps


def schedule_steps() -> list[Step]:
    # Cloud Scheduler publishes to the scheduled topics (the local stack's Ticker does locally).
    region = deployables.resources()["region"]
    steps = []
    for topic in deployables.topics():
        if topic.schedule is None:
            continue
        job = f"{topic.name.replace('.', '-')}"
        options = (f"--location={region}", f"--schedule={topic.schedule}", "--message-body={}")
        steps.append(
            Step(
                f"schedule {topic.schedule} -> {topic.name}",
                (
                    "gcloud",
                    "scheduler",
                    "jobs",
                    "create",
                    "pubsub",
                    job,
                    *options,
                    f"--topic={topic.name}",
                ),
                unless=("gcloud", "scheduler", "jobs", "describe", job, f"--location={region}"),
                otherwise=(
                    "gcloud",
                    "scheduler",
                    "jobs",
                    "update",
                    "pubsub",
                    job,
                    *options,
                    f"--topic={topic.name}",
                ),
            )
        )
    return steps
