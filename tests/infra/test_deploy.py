"""What the deploy plan grants each deployable: its secrets, the IAM that dead-lettering and push
need, and timeouts that Pub/Sub's ack deadlines cover. Nothing runs against Google Cloud: these
read the planned gcloud commands."""

from __future__ import annotations

import ast
import dataclasses
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from infra import deployables
from infra.deploy import runner
from infra.deploy.plan import plan
from infra.deploy.steps import Step, Target, default_invoker
from infra.deployables import ROOT
from shared.core.settings import Settings

TARGET = Target(
    project="mnemo-prod",
    project_number="123456789",
    image="registry/realtime:abc",
    invoker=default_invoker("mnemo-prod"),
)
AGENT = "serviceAccount:service-123456789@gcp-sa-pubsub.iam.gserviceaccount.com"

# A setting is a secret by its name; a new `*_api_key` or `*_secret` is one without anyone
# remembering to say so.
SECRET_NAME = re.compile(r"(^|_)(key|secret|password|token|credentials|pepper)$")
SECRET_SETTINGS = {
    field.name for field in dataclasses.fields(Settings) if SECRET_NAME.search(field.name)
}


def _commands() -> list[tuple[str, ...]]:
    return [step.command for step in plan(TARGET)]


def _option(command: tuple[str, ...], name: str) -> str | None:
    return next((arg.split("=", 1)[1] for arg in command if arg.startswith(f"{name}=")), None)


def _module_file(module: str) -> Path | None:
    for candidate in (ROOT / f"{module.replace('.', '/')}.py", ROOT / module / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(module: str, tree: ast.Module) -> set[str]:
    """Every module of this repository that `module` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.rsplit(".", node.level)[0]
                base = f"{package}.{base}" if base else package
            found |= {base, *(f"{base}.{alias.name}" for alias in node.names)}
    return {name for name in found if _module_file(name)}


def _secrets_read(*entry_modules: str) -> set[str]:
    """The secret settings that code reachable by imports from `entry_modules` may read
    (`settings.openai_api_key`, or the variable's name as a string). Over-approximates: a module
    imported for one helper counts with everything it could read."""
    seen: set[str] = set()
    pending = list(entry_modules)
    read = set()
    while pending:
        module = pending.pop()
        path = _module_file(module)
        if module in seen or path is None:
            continue
        seen.add(module)
        tree = ast.parse(path.read_text())
        pending += _imports(module, tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in SECRET_SETTINGS:
                read.add(node.attr.upper())
            elif isinstance(node, ast.Constant) and str(node.value).lower() in SECRET_SETTINGS:
                read.add(str(node.value).upper())
    return read


def _deployables() -> dict[str, tuple[tuple[str, ...], set[str]]]:
    """Each deployable's deploy command and the secret settings its code may read."""
    commands = _commands()
    found = {}
    for fn in deployables.functions():
        # main.py is the entry module of every function; it imports the function's module.
        command = next(c for c in commands if c[:4] == ("gcloud", "functions", "deploy", fn.name))
        found[fn.name] = (command, _secrets_read("main", fn.module))
    service = deployables.resources()["realtime"]["service"]
    command = next(c for c in commands if c[:4] == ("gcloud", "run", "deploy", service))
    found[service] = (command, _secrets_read("realtime.app"))  # infra/Dockerfile's CMD
    return found


def _mapped(command: tuple[str, ...]) -> dict[str, str]:
    flag = _option(command, "--set-secrets") or ""
    return dict(pair.split("=", 1) for pair in flag.split(",") if pair)


def test_the_settings_that_hold_secrets_are_found():
    assert {"openai_api_key", "deepgram_api_key", "token_encryption_key"} <= SECRET_SETTINGS
    assert {"plaid_secret", "google_oauth_client_secret"} <= SECRET_SETTINGS


def test_every_secret_setting_a_deployable_may_read_is_mapped_in_its_deploy():
    for name, (command, read) in _deployables().items():
        missing = read - set(_mapped(command))
        assert not missing, f"{name} may read {sorted(missing)}: list them in resources.yaml"


def test_the_realtime_service_gets_the_speech_and_language_keys():
    """The finding that motivated these tests: live transcription needs Deepgram's key."""
    service = deployables.resources()["realtime"]["service"]
    command, _ = _deployables()[service]
    assert {"DEEPGRAM_API_KEY", "OPENAI_API_KEY", "TOKEN_ENCRYPTION_KEY"} <= set(_mapped(command))


def test_only_secret_settings_are_mapped_and_never_passed_in_plain_text():
    for name, (command, _) in _deployables().items():
        for variable, secret in _mapped(command).items():
            assert variable.lower() in SECRET_SETTINGS, (name, variable)
            assert secret == f"{variable.lower().replace('_', '-')}:latest", (name, secret)
        plain = _option(command, "--set-env-vars") or ""
        assert not {pair.split("=")[0].lower() for pair in plain.split(",")} & SECRET_SETTINGS


def test_every_dead_letter_topic_gets_both_bindings_for_the_pubsub_agent():
    steps = plan(TARGET)
    commands = [step.command for step in steps]

    def bound(kind: str, resource: str, role: str) -> int:
        wanted = ("gcloud", "pubsub", kind, "add-iam-policy-binding", resource)
        found = [
            i
            for i, c in enumerate(commands)
            if c[:5] == wanted and f"--member={AGENT}" in c and f"--role={role}" in c
        ]
        assert found, f"no {role} for the Pub/Sub agent on {resource}"
        return found[0]

    created = {c[4]: i for i, c in enumerate(commands) if c[2:4] == ("topics", "create")}
    subscribed = {c[4]: i for i, c in enumerate(commands) if c[2:4] == ("subscriptions", "create")}
    dead_letter_topics = [t.dead_letter_topic for t in deployables.topics() if t.dead_letter_topic]
    assert dead_letter_topics
    for topic in dead_letter_topics:
        assert bound("topics", topic, "roles/pubsub.publisher") > created[topic]
    dead_lettered = [s for s in deployables.subscriptions() if s.dead_letter_topic]
    assert dead_lettered
    for subscription in dead_lettered:
        pulled = bound("subscriptions", subscription.name, "roles/pubsub.subscriber")
        assert pulled > subscribed[subscription.name]


def test_the_invoker_account_is_created_before_anything_uses_it():
    steps = plan(TARGET)
    creates = [
        i
        for i, step in enumerate(steps)
        if step.command[:4] == ("gcloud", "iam", "service-accounts", "create")
        and f"{step.command[4]}@" in TARGET.invoker
    ]
    assert len(creates) == 1, "the invoker account is never created"
    created = creates[0]
    probe = ("gcloud", "iam", "service-accounts", "describe", TARGET.invoker)
    assert steps[created].unless == probe
    uses = [i for i, step in enumerate(steps) if TARGET.invoker in " ".join(step.command)]
    assert uses and min(uses) > created  # the create names the account id, not the email
    assert any(
        step.command[:3] == ("gcloud", "functions", "add-invoker-policy-binding") for step in steps
    )


def test_an_invoker_from_another_project_is_not_created_here():
    elsewhere = dataclasses.replace(TARGET, invoker="push@shared-infra.iam.gserviceaccount.com")
    assert not any(step.command[2:4] == ("service-accounts", "create") for step in plan(elsewhere))


def test_cloudbuild_passes_the_project_number_as_it_passes_the_project():
    build = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())
    script = " ".join(next(s for s in build["steps"] if s["id"] == "deploy")["args"])
    assert '--project "${PROJECT_ID}"' in script
    assert '--project-number "${PROJECT_NUMBER}"' in script


def test_every_event_function_declares_its_timeout_and_deploys_with_it():
    specs = deployables.resources()["functions"]
    deployed = {c[3]: c for c in _commands() if c[:3] == ("gcloud", "functions", "deploy")}
    for fn in deployables.functions():
        if fn.event_driven:
            timeout = specs[fn.name].get("timeout_seconds")
            assert timeout, f"{fn.name} has no timeout_seconds in resources.yaml"
            assert _option(deployed[fn.name], "--timeout") == f"{timeout}s"


def test_processing_has_time_for_its_language_model_and_embedding_calls():
    # One structured-output call and one embeddings call, each up to LLM_TIMEOUT_SECONDS.
    timeout = deployables.resources()["functions"]["process_conversation"]["timeout_seconds"]
    assert timeout >= 2 * Settings().llm_timeout_seconds + 30


def test_every_push_subscription_waits_for_its_function_before_redelivering():
    deployed = {c[3]: c for c in _commands() if c[:3] == ("gcloud", "functions", "deploy")}
    for step in plan(TARGET):
        if step.command[:4] != ("gcloud", "pubsub", "subscriptions", "create"):
            continue
        subscription = next(s for s in deployables.subscriptions() if s.name == step.command[4])
        timeout = int((_option(deployed[subscription.function], "--timeout") or "60s")[:-1])
        assert step.otherwise is not None
        for command in (step.command, step.otherwise):
            deadline = int(_option(command, "--ack-deadline") or 0)
            assert timeout <= deadline <= deployables.MAX_ACK_DEADLINE_SECONDS, subscription.name


def test_a_timeout_beyond_pubsubs_ack_deadline_limit_is_refused(monkeypatch):
    functions = dict(deployables.resources()["functions"])
    functions["sweep"] = {**functions["sweep"], "timeout_seconds": 601}
    monkeypatch.setitem(deployables.resources(), "functions", functions)
    with pytest.raises(ValueError, match="ack deadline"):
        plan(TARGET)


def test_an_iam_step_is_tried_again_while_a_new_account_propagates(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "RETRY_SECONDS", 0)
    marker = tmp_path / "failed-once"
    flaky = ("sh", "-c", f'test -e "{marker}" || {{ touch "{marker}"; exit 1; }}')
    runner.run([Step("flaky binding", flaky, attempts=2)], "p", dry_run=False)
    assert marker.exists()
    with pytest.raises(subprocess.CalledProcessError):
        runner.run([Step("failing", ("false",), attempts=2)], "p", dry_run=False)
