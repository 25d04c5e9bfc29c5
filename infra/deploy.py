"""The production deploy, planned from `infra/resources.yaml` and `firebase.json`.

`python -m infra.deploy --project P --image IMAGE [--dry-run]` (cloudbuild.yaml runs it after
the tests and the image build). Every step is idempotent: a resource that exists is updated
(or left alone), so a deploy can be re-run after a failure.

Order: topics first (subscriptions and functions publish to them), then the functions, then the
push subscriptions to the event-driven functions' URLs (with OIDC tokens and dead-letter
policies) and the Cloud Scheduler jobs that tick the scheduled topics, then the realtime service
and its domain mapping, then Hosting with the Firestore rules and indexes (Hosting last, so no
rewrite points at a function that does not exist yet).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from dataclasses import dataclass

from shared import deployables

RUNTIME_ENV = "ENVIRONMENT=production"
SECRETS = "TOKEN_ENCRYPTION_KEY=token-encryption-key:latest,OPENAI_API_KEY=openai-api-key:latest"


@dataclass(frozen=True)
class Step:
    """A command, run only if `unless` (a probe for the resource) fails."""

    description: str
    command: tuple[str, ...]
    unless: tuple[str, ...] | None = None
    otherwise: tuple[str, ...] | None = None  # run instead when the probe succeeds


@dataclass(frozen=True)
class Target:
    project: str
    image: str
    invoker: str  # service account whose OIDC token push subscriptions carry

    @property
    def region(self) -> str:
        region: str = deployables.resources()["region"]
        return region

    def function_url(self, name: str) -> str:
        return f"https://{self.region}-{self.project}.cloudfunctions.net/{name}"


def _topic_steps() -> list[Step]:
    return [
        Step(
            f"topic {topic.name}",
            ("gcloud", "pubsub", "topics", "create", topic.name),
            unless=("gcloud", "pubsub", "topics", "describe", topic.name),
        )
        for topic in deployables.topics()
    ]


def _runtime_env(target: Target) -> str:
    # Cloud Functions gen2 and Cloud Run do not set GOOGLE_CLOUD_PROJECT themselves.
    domain = deployables.resources()["realtime"]["domain"]
    return f"{RUNTIME_ENV},GOOGLE_CLOUD_PROJECT={target.project},REALTIME_URL=https://{domain}"


def _function_steps(target: Target) -> list[Step]:
    resources = deployables.resources()
    steps = []
    for fn in deployables.functions():
        access = "--no-allow-unauthenticated" if fn.event_driven else "--allow-unauthenticated"
        steps.append(
            Step(
                f"function {fn.name}",
                (
                    "gcloud",
                    "functions",
                    "deploy",
                    fn.name,
                    "--gen2",
                    f"--region={target.region}",
                    f"--runtime={resources['runtime']}",
                    "--source=.",
                    f"--entry-point={fn.name}",
                    "--trigger-http",
                    access,
                    f"--set-env-vars={_runtime_env(target)}",
                    f"--set-secrets={SECRETS}",
                ),
            )
        )
        if fn.event_driven:
            steps.append(
                Step(
                    f"push invoker of {fn.name}",
                    (
                        "gcloud",
                        "functions",
                        "add-invoker-policy-binding",
                        fn.name,
                        f"--region={target.region}",
                        f"--member=serviceAccount:{target.invoker}",
                    ),
                )
            )
    return steps


def _subscription_steps(target: Target) -> list[Step]:
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
            f"--ack-deadline={policy['ack_deadline_seconds']}",
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
    return steps


def _realtime_steps(target: Target) -> list[Step]:
    realtime = deployables.resources()["realtime"]
    service, domain = realtime["service"], realtime["domain"]
    return [
        Step(
            f"service {service}",
            (
                "gcloud",
                "run",
                "deploy",
                service,
                f"--image={target.image}",
                f"--region={target.region}",
                "--allow-unauthenticated",
                "--timeout=3600",
                "--session-affinity",
                f"--set-env-vars={_runtime_env(target)}",
                f"--set-secrets={SECRETS}",
            ),
        ),
        Step(
            f"domain {domain}",
            (
                "gcloud",
                "beta",
                "run",
                "domain-mappings",
                "create",
                f"--service={service}",
                f"--domain={domain}",
                f"--region={target.region}",
            ),
            unless=(
                "gcloud",
                "beta",
                "run",
                "domain-mappings",
                "describe",
                f"--domain={domain}",
                f"--region={target.region}",
            ),
        ),
    ]


def _schedule_steps() -> list[Step]:
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


def _ttl_steps() -> list[Step]:
    # Firestore deletes expired idempotency reservations itself (within a day of expiry).
    return [
        Step(
            "TTL on idempotency.expires_at",
            (
                "gcloud",
                "firestore",
                "fields",
                "ttls",
                "update",
                "expires_at",
                "--collection-group=idempotency",
                "--enable-ttl",
                "--async",
            ),
        )
    ]


def _hosting_steps(target: Target) -> list[Step]:
    return [
        Step(
            "hosting rewrites, Firestore rules and indexes",
            (
                "npx",
                "firebase",
                "deploy",
                "--only",
                "hosting,firestore",
                f"--project={target.project}",
                "--non-interactive",
            ),
        )
    ]


def plan(target: Target) -> list[Step]:
    """Every step of a deploy, in order."""
    return [
        *_topic_steps(),
        *_function_steps(target),
        *_subscription_steps(target),
        *_schedule_steps(),
        *_realtime_steps(target),
        *_ttl_steps(),
        *_hosting_steps(target),
    ]


def _succeeds(command: tuple[str, ...], project: str) -> bool:
    return subprocess.run([*command, f"--project={project}"], capture_output=True).returncode == 0


def run(steps: list[Step], project: str, dry_run: bool) -> None:
    for step in steps:
        command = step.command
        if step.unless is not None and not dry_run and _succeeds(step.unless, project):
            if step.otherwise is None:
                print(f"= {step.description}: exists", flush=True)
                continue
            command = step.otherwise
        with_project = [*command, f"--project={project}"] if command[0] == "gcloud" else command
        print(f"+ {step.description}: {shlex.join(with_project)}", flush=True)
        if not dry_run:
            subprocess.run(with_project, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="Deploy Mnemo (run by cloudbuild.yaml).")
    parser.add_argument("--project", required=True)
    parser.add_argument("--image", required=True, help="the realtime image to deploy")
    parser.add_argument("--invoker", help="service account for push subscriptions' OIDC tokens")
    parser.add_argument("--dry-run", action="store_true", help="print the steps, change nothing")
    args = parser.parse_args()
    invoker = args.invoker or f"pubsub-invoker@{args.project}.iam.gserviceaccount.com"
    target = Target(project=args.project, image=args.image, invoker=invoker)
    try:
        run(plan(target), args.project, args.dry_run)
    except subprocess.CalledProcessError as error:
        sys.exit(f"deploy failed at: {shlex.join(error.cmd)}")


if __name__ == "__main__":
    main()
