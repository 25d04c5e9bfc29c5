"""The route table, the deploy steps and the topic file agree (they are read from one place,
and these tests check that what each consumer derives is complete and consistent)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infra import deployables
from infra.deploy.plan import plan
from infra.deploy.steps import Target
from infra.deployables import ROOT

TARGET = Target(
    project="mnemo-prod", project_number="123", image="registry/realtime:abc", invoker="invoker@x"
)


def _commands() -> list[tuple[str, ...]]:
    return [step.command for step in plan(TARGET)]


def test_every_rewrite_names_a_declared_http_function():
    http = {fn.name for fn in deployables.functions() if not fn.event_driven}
    for rewrite in deployables.rewrites():
        assert rewrite.function in http, rewrite


def test_every_function_source_exists_and_exports_its_entry_point():
    for fn in deployables.functions():
        assert fn.source == f"functions/{fn.name}.py", "main.py finds functions by this name"
        assert (ROOT / fn.source).is_file(), fn.source
        assert callable(getattr(fn.load(), fn.name)), fn.name


def test_every_http_function_is_reachable_and_every_event_function_subscribed():
    routed = {rewrite.function for rewrite in deployables.rewrites()}
    for fn in deployables.functions():
        if fn.event_driven:
            assert fn.name not in routed, f"{fn.name} is event-driven but has a REST rewrite"
        else:
            assert fn.name in routed, f"{fn.name} has no firebase.json rewrite"


def test_every_subscription_reads_a_declared_topic():
    topics = {topic.name for topic in deployables.topics()}
    for subscription in deployables.subscriptions():
        assert subscription.topic in topics
        if subscription.dead_letter_topic:
            assert subscription.dead_letter_topic in topics


def test_every_dead_letter_topic_is_recorded():
    recorded = {
        subscription.topic
        for subscription in deployables.subscriptions()
        if subscription.function == "dead_letters"
    }
    dead_letter_topics = {t.dead_letter_topic for t in deployables.topics() if t.dead_letter_topic}
    assert dead_letter_topics and dead_letter_topics == recorded


def test_the_deploy_creates_every_topic_function_and_subscription():
    commands = _commands()
    created_topics = {c[4] for c in commands if c[:4] == ("gcloud", "pubsub", "topics", "create")}
    assert created_topics == {topic.name for topic in deployables.topics()}
    deployed = {c[3] for c in commands if c[:3] == ("gcloud", "functions", "deploy")}
    assert deployed == {fn.name for fn in deployables.functions()}
    for command in commands:
        if command[:3] == ("gcloud", "functions", "deploy"):
            assert f"--entry-point={command[3]}" in command
            assert "--trigger-http" in command and "--gen2" in command
    created = {
        c[4]: c for c in commands if c[:4] == ("gcloud", "pubsub", "subscriptions", "create")
    }
    assert set(created) == {s.name for s in deployables.subscriptions()}
    for subscription in deployables.subscriptions():
        command = created[subscription.name]
        assert f"--topic={subscription.topic}" in command
        endpoint = next(arg for arg in command if arg.startswith("--push-endpoint="))
        assert endpoint.startswith(f"--push-endpoint={TARGET.function_url(subscription.function)}/")
        if subscription.dead_letter_topic:
            assert f"--dead-letter-topic={subscription.dead_letter_topic}" in command


def test_event_functions_are_private_and_http_functions_public():
    for command in _commands():
        if command[:3] != ("gcloud", "functions", "deploy"):
            continue
        fn = deployables.function(command[3])
        expected = "--no-allow-unauthenticated" if fn.event_driven else "--allow-unauthenticated"
        assert expected in command


def test_the_topics_come_before_the_functions_and_hosting_comes_last():
    commands = _commands()
    kinds = [" ".join(command[1:3]) for command in commands]
    assert kinds.index("functions deploy") > max(
        i for i, kind in enumerate(kinds) if kind == "pubsub topics"
    )
    assert commands[-1][:3] == ("npx", "firebase", "deploy")


def test_cloudbuild_tests_before_it_deploys_with_the_plan():
    build = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())
    steps = [step["id"] for step in build["steps"]]
    assert steps.index("test") < steps.index("deploy")
    scripts = {step["id"]: " ".join(step.get("args", [])) for step in build["steps"]}
    assert "make test" in scripts["test"]
    assert "python -m infra.deploy" in scripts["deploy"]
    assert "infra/Dockerfile" in scripts["build-realtime"]


def test_the_realtime_image_carries_what_the_service_imports():
    dockerfile = (ROOT / "infra" / "Dockerfile").read_text()
    for needed in ("requirements.txt", "shared/", "realtime/", "realtime.app:app"):
        assert needed in dockerfile


def test_firebase_json_points_at_the_rules_and_indexes_in_infra():
    firestore = deployables.firebase_config()["firestore"]
    assert Path(ROOT / firestore["rules"]).is_file()
    assert Path(ROOT / firestore["indexes"]).is_file()


def test_the_entry_module_loads_only_the_function_it_is_asked_for():
    script = (
        "import sys, main\n"
        "assert callable(main.users)\n"
        "assert 'functions.users' in sys.modules\n"
        "assert 'functions.openapi' not in sys.modules and 'functions.root' not in sys.modules\n"
        "try:\n"
        "    main.no_such_function\n"
        "except AttributeError:\n"
        "    pass\n"
        "else:\n"
        "    raise SystemExit('an unknown entry point must be an AttributeError')\n"
    )
    checked = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True)
    assert checked.returncode == 0, checked.stderr.decode()


def test_expired_idempotency_reservations_are_cleaned_up_by_a_ttl_policy():
    from shared.web import idempotency

    ttl = [c for c in _commands() if c[:5] == ("gcloud", "firestore", "fields", "ttls", "update")]
    assert ttl and ttl[0][5] == idempotency.EXPIRY_FIELD
    assert f"--collection-group={idempotency.COLLECTION}" in ttl[0]


def test_every_scheduled_topic_gets_a_scheduler_job_and_a_subscriber():
    scheduled = [topic for topic in deployables.topics() if topic.schedule]
    assert scheduled, "the sweep needs its tick"
    jobs = {
        command[5]: command
        for command in _commands()
        if command[:5] == ("gcloud", "scheduler", "jobs", "create", "pubsub")
    }
    subscribed = {topic for fn in deployables.functions() for topic in fn.subscribe}
    for topic in scheduled:
        assert topic.every_seconds is not None and topic.every_seconds >= 60
        job = jobs[topic.name.replace(".", "-")]
        assert f"--topic={topic.name}" in job and f"--schedule={topic.schedule}" in job
        assert topic.name in subscribed


@pytest.mark.parametrize("schedule", ["5 * * * *", "*/0 * * * *", "* * * * 1", "every minute"])
def test_a_schedule_the_local_ticker_cannot_follow_is_refused(schedule):
    with pytest.raises(ValueError, match="every N min"):
        _ = deployables.Topic("t", None, schedule).every_seconds
