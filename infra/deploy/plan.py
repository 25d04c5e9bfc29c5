"""The deploy plan: every step, in order.

Topics first (subscriptions and functions publish to them), with the Pub/Sub service agent allowed
to publish to the dead-letter topics; the push invoker service account; then the functions, then
the push subscriptions to the event-driven functions' URLs (with OIDC tokens, dead-letter policies
and the service agent allowed to pull from them to forward) and the Cloud Scheduler jobs that tick
the scheduled topics, then the realtime service and its domain mapping, then Hosting with the
Firestore rules and indexes (Hosting last, so no rewrite points at a function that does not exist
yet). IAM bindings (`add-iam-policy-binding`) are idempotent.
"""

from __future__ import annotations

from infra.deploy.compute import function_steps, realtime_steps
from infra.deploy.hosting import hosting_steps, ttl_steps
from infra.deploy.pubsub import invoker_steps, schedule_steps, subscription_steps, topic_steps
from infra.deploy.steps import Step, Target


def plan(target: Target) -> list[Step]:
    """Every step of a deploy, in order."""
    return [
        *topic_steps(target),
        *invoker_steps(target),
        *function_steps(target),
        *subscription_steps(target),
        *schedule_steps(),
        *realtime_steps(target),
        *ttl_steps(),
        *hosting_steps(target),
    ]
