"""The deploy's last steps: Firestore's TTL, then Hosting's rewrites with Firestore's rules and
indexes (`firebase.json`)."""

from __future__ import annotations

from infra.deploy.steps import Step, Target


def ttl_steps() -> list[Step]:
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


def hosting_steps(target: Target) -> list[Step]:
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
