"""The sweep, ticked once a minute through Pub/Sub `sweep.tick` (Cloud Scheduler in production,
the local stack's own ticker locally). See `shared.pipeline.sweep`."""

from __future__ import annotations

import functions_framework
from cloudevents.http import CloudEvent

from shared.pipeline.sweep import run_sweep


@functions_framework.cloud_event
def sweep(event: CloudEvent) -> None:
    run_sweep()
