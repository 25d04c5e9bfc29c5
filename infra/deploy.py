"""The production deploy, planned from `infra/resources.yaml` and `firebase.json`.

`python -m infra.deploy --project P --image IMAGE [--dry-run]` (cloudbuild.yaml runs it after
the tests and the image build). Every step is idempotent: a resource that exists is updated
(or left alone), so a deploy can be re-run after a failure.

Order: topics first (subscriptions and functions publish to them), with the Pub/Sub service
agent allowed to publish to the dead-letter topics; the push invoker service account; then the
functions, then the push subscriptions to the event-driven functions' URLs (with OIDC tokens,
dead-letter policies and the service agent allowed to pull from them to forward) and the Cloud
Scheduler jobs that tick the scheduled topics, then the realtime service and its domain mapping,
then Hosting with the Firestore rules and indexes (Hosting last, so no rewrite points at a
function that does not exist yet). IAM bindings (`add-iam-policy-binding`) are idempotent.

Each deployable gets `--set-secrets` for the settings `infra/resources.yaml` lists for it, since
the flag replaces the deployable's whole list.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from infra import deployables

RUNTIME_ENV = "ENVIRONMENT=production"
# IAM is eventually consistent: a service account created a moment ago may not be grantable yet.
IAM_ATTEMPTS = 5
RETRY_SECONDS = 15.0


@dataclass(frozen=True)
class Step:
    """A command, run only if `unless` (a probe for the resource) fails."""

    description: str
    command: tuple[str, ...]
    unless: tuple[str, ...] | None = None
    otherwise: tuple[str, ...] | None = None  # run instead when the probe succeeds
    attempts: int = 1


@dataclass(frozen=True)
class Target:
    project: str
    project_number: str
    image: str
    invoker: str  # service account whose OIDC token push subscriptions carry

    @property
    def pubsub_agent(self) -> str:
        """The Pub/Sub service agent, which forwards to dead-letter topics and signs push tokens."""
        return f"service-{self.project_number}@gcp-sa-pubsub.iam.gserviceaccount.com"

    @property
    def region(self) -> str:
        region: str = deployables.resources()["region"]
        return region

    def function_url(self, name: str) -> str:
        return f"https://{self.region}-{self.project}.cloudfunctions.net/{name}"


def default_invoker(project: str) -> str:
    return f"pubsub-invoker@{project}.iam.gserviceaccount.com"


def secrets(spec: dict[str, Any]) -> list[str]:
    """The settings a deployable (its entry in resources.yaml) reads from Secret Manager."""
    names = [*deployables.resources().get("secrets", []), *spec.get("secrets", [])]
    return list(dict.fromkeys(names))


def _set_secrets(spec: dict[str, Any]) -> str:
    mapped = (f"{name}={name.lower().replace('_', '-')}:latest" for name in secrets(spec))
    return f"--set-secrets={','.join(mapped)}"


def _binding(kind: tuple[str, ...], resource: str, member: str, role: str) -> Step:
    return Step(
        f"{role} for {member} on {resource}",
        (
            "gcloud",
            *kind,
            "add-iam-policy-binding",
            resource,
            f"--member=serviceAccount:{member}",
            f"--role={role}",
        ),
        attempts=IAM_ATTEMPTS,
    )


def _topic_steps(target: Target) -> list[Step]:
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
                _binding(
                    ("pubsub", "topics"),
                    topic.dead_letter_topic,
                    target.pubsub_agent,
                    "roles/pubsub.publisher",
                )
            )
    return steps


def _invoker_steps(target: Target) -> list[Step]:
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
        _binding(
            ("iam", "service-accounts"),
            target.invoker,
            target.pubsub_agent,
            "roles/iam.serviceAccountTokenCreator",
        )
    )
    return steps


def _runtime_env(target: Target) -> str:
    # Cloud Functions gen2 and Cloud Run do not set GOOGLE_CLOUD_PROJECT themselves.
    domain = deployables.resources()["realtime"]["domain"]
    return f"{RUNTIME_ENV},GOOGLE_CLOUD_PROJECT={target.project},REALTIME_URL=https://{domain}"


def _function_steps(target: Target) -> list[Step]:
    resources = deployables.resources()
    steps = []
    for fn in deployables.functions():
        spec = resources["functions"][fn.name]
        access = "--no-allow-unauthenticated" if fn.event_driven else "--allow-unauthenticated"
        timeout = spec.get("timeout_seconds")
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
                    *([f"--timeout={timeout}s"] if timeout else []),
                    f"--set-env-vars={_runtime_env(target)}",
                    _set_secrets(spec),
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
                    attempts=IAM_ATTEMPTS,
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
                _binding(
                    ("pubsub", "subscriptions"),
                    subscription.name,
                    target.pubsub_agent,
                    "roles/pubsub.subscriber",
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
                _set_secrets(realtime),
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
        *_topic_steps(target),
        *_invoker_steps(target),
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
            _execute(step, with_project)


def _execute(step: Step, command: Sequence[str]) -> None:
    for attempt in range(1, step.attempts + 1):
        try:
            subprocess.run(command, check=True)
            return
        except subprocess.CalledProcessError:
            if attempt == step.attempts:
                raise
            print(f"! {step.description}: failed, trying again in {RETRY_SECONDS:g} s", flush=True)
            time.sleep(RETRY_SECONDS)


def main() -> None:
    parser = argparse.ArgumentParser(description="Deploy Mnemo (run by cloudbuild.yaml).")
    parser.add_argument("--project", required=True)
    parser.add_argument(
        "--project-number",
        required=True,
        help="names the Pub/Sub service agent (cloudbuild.yaml passes ${PROJECT_NUMBER})",
    )
    parser.add_argument("--image", required=True, help="the realtime image to deploy")
    parser.add_argument("--invoker", help="service account for push subscriptions' OIDC tokens")
    parser.add_argument("--dry-run", action="store_true", help="print the steps, change nothing")
    args = parser.parse_args()
    target = Target(
        project=args.project,
        project_number=args.project_number,
        image=args.image,
        invoker=args.invoker or default_invoker(args.project),
    )
    try:
        run(plan(target), args.project, args.dry_run)
    except subprocess.CalledProcessError as error:
        sys.exit(f"deploy failed at: {shlex.join(error.cmd)}")


if __name__ == "__main__":
    main()
