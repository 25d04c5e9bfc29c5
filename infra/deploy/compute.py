"""The deploy's code that runs: each function (Cloud Functions gen2) and the realtime service
(Cloud Run) with its domain, their environment and their secrets.

Each deployable gets `--set-secrets` for the settings `infra/resources.yaml` lists for it, since
the flag replaces the deployable's whole list.
"""

from __future__ import annotations

from typing import Any

from infra import deployables
from infra.deploy.steps import IAM_ATTEMPTS, Step, Target

RUNTIME_ENV = "ENVIRONMENT=production"


def secrets(spec: dict[str, Any]) -> list[str]:
    """The settings a deployable (its entry in resources.yaml) reads from Secret Manager."""
    names = [*deployables.resources().get("secrets", []), *spec.get("secrets", [])]
    return list(dict.fromkeys(names))


def set_secrets_option(spec: dict[str, Any]) -> str:
    mapped = (f"{name}={name.lower().replace('_', '-')}:latest" for name in secrets(spec))
    return f"--set-secrets={','.join(mapped)}"


def runtime_env(target: Target) -> str:
    # Cloud Functions gen2 and Cloud Run do not set GOOGLE_CLOUD_PROJECT themselves.
    domain = deployables.resources()["realtime"]["domain"]
    return f"{RUNTIME_ENV},GOOGLE_CLOUD_PROJECT={target.project},REALTIME_URL=https://{domain}"


def function_steps(target: Target) -> list[Step]:
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
                    f"--set-env-vars={runtime_env(target)}",
                    set_secrets_option(spec),
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


def realtime_steps(target: Target) -> list[Step]:
    spec = deployables.resources()["realtime"]
    service, domain = spec["service"], spec["domain"]
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
                f"--set-env-vars={runtime_env(target)}",
                set_secrets_option(spec),
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
