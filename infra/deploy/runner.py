"""Running a deploy's steps with gcloud: a step whose probe succeeds is skipped (or replaced by
its `otherwise`), and a failed step is tried again as many times as it allows."""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Sequence

from infra.deploy.steps import Step

RETRY_SECONDS = 15.0


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
