"""A deploy step (a command, and the probe that decides whether it runs) and the project it
deploys to."""

from __future__ import annotations

from dataclasses import dataclass

from infra import deployables

# IAM is eventually consistent: a service account created a moment ago may not be grantable yet.
IAM_ATTEMPTS = 5


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


def iam_binding(kind: tuple[str, ...], resource: str, member: str, role: str) -> Step:
    """`role` for the service account `member` on `resource` (`kind` is its gcloud group)."""
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
