"""`python -m infra.deploy`: the deploy that cloudbuild.yaml runs."""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys

from infra.deploy.plan import plan
from infra.deploy.runner import run
from infra.deploy.steps import Target, default_invoker


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
