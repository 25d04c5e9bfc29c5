"""Mnemo's deployables, read from the two files that declare them.

`infra/resources.yaml` lists the functions, topics, subscription policy, secrets and the realtime
service; `firebase.json`'s hosting rewrites map REST URLs to functions (it also holds the
emulators' ports and the Firestore rules and indexes). The local stack, the deploy, the functions'
OpenAPI document and the tests all read them through here, so nothing lists a function, topic or
route twice.
"""

from __future__ import annotations

import importlib
import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent  # the repository root; this is infra/deployables.py
RESOURCES_FILE = ROOT / "infra" / "resources.yaml"
FIREBASE_FILE = ROOT / "firebase.json"
DEAD_LETTER_SUFFIX = ".dead-letter"


@dataclass(frozen=True)
class Function:
    name: str
    source: str
    subscribe: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        """The dotted module name of the source file (`functions/users.py` -> `functions.users`)."""
        return self.source.removesuffix(".py").replace("/", ".")

    @property
    def event_driven(self) -> bool:
        return bool(self.subscribe)

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)


@dataclass(frozen=True)
class Rewrite:
    """A hosting rewrite: a URL glob and the function that serves it."""

    source: str
    function: str

    @property
    def pattern(self) -> re.Pattern[str]:
        return glob_pattern(self.source)


@dataclass(frozen=True)
class Topic:
    name: str
    dead_letter_topic: str | None
    schedule: str | None = None

    @property
    def every_seconds(self) -> int | None:
        """The period of `schedule` (`* * * * *` or `*/N * * * *`), for the local ticker."""
        if self.schedule is None:
            return None
        minute, *rest = self.schedule.split()
        step = "1" if minute == "*" else minute.removeprefix("*/") if minute[:2] == "*/" else ""
        if rest != ["*"] * 4 or not step.isdigit() or int(step) < 1:
            raise ValueError(f"topic {self.name}: schedule {self.schedule!r} is not every N min")
        return int(step) * 60


@dataclass(frozen=True)
class Subscription:
    """A push subscription that feeds one topic to one event-driven function."""

    name: str
    topic: str
    function: str
    dead_letter_topic: str | None


def glob_pattern(glob: str) -> re.Pattern[str]:
    """Firebase Hosting's glob: `**` matches across segments, `*` within one."""
    regex = ""
    for token in re.split(r"(\*\*|\*)", glob):
        regex += {"**": ".*", "*": "[^/]*"}.get(token) or re.escape(token)
    return re.compile(f"^{regex}/?$")


@cache
def resources() -> dict[str, Any]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when the wheel has it
    loaded: dict[str, Any] = yaml.load(RESOURCES_FILE.read_text(), Loader=loader)
    return loaded


@cache
def firebase_config() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(FIREBASE_FILE.read_text())
    return loaded


def functions() -> list[Function]:
    return [
        Function(name=name, source=spec["source"], subscribe=tuple(spec.get("subscribe", ())))
        for name, spec in resources()["functions"].items()
    ]


def function(name: str) -> Function:
    for candidate in functions():
        if candidate.name == name:
            return candidate
    raise KeyError(f"no function {name!r} in {RESOURCES_FILE.name}")


def rewrites() -> list[Rewrite]:
    return [
        Rewrite(source=rule["source"], function=rule["function"]["functionId"])
        for rule in firebase_config()["hosting"]["rewrites"]
    ]


def function_for_path(path: str) -> str | None:
    """The function Hosting would send `path` to: the first rewrite that matches."""
    for rewrite in rewrites():
        if rewrite.pattern.match(path):
            return rewrite.function
    return None


def topics() -> list[Topic]:
    declared = []
    for name, spec in resources()["topics"].items():
        dead_letter = f"{name}{DEAD_LETTER_SUFFIX}" if (spec or {}).get("dead_letter") else None
        declared.append(Topic(name, dead_letter, (spec or {}).get("schedule")))
        if dead_letter:
            declared.append(Topic(name=dead_letter, dead_letter_topic=None))
    return declared


def subscriptions() -> list[Subscription]:
    dead_letters = {topic.name: topic.dead_letter_topic for topic in topics()}
    return [
        Subscription(
            name=f"{topic}.{fn.name}",
            topic=topic,
            function=fn.name,
            dead_letter_topic=dead_letters[topic],
        )
        for fn in functions()
        for topic in fn.subscribe
    ]


def subscription_policy() -> dict[str, int]:
    policy: dict[str, int] = resources()["subscriptions"]
    return policy


MAX_ACK_DEADLINE_SECONDS = 600  # Pub/Sub's limit


def ack_deadline(function: str) -> int:
    """The ack deadline of the push subscription of `function` (deployed and local alike): at
    least its timeout, or Pub/Sub would redeliver (and count an attempt) while the first
    delivery is still being handled."""
    policy = subscription_policy()["ack_deadline_seconds"]
    timeout = resources()["functions"][function].get("timeout_seconds", 0)
    deadline = max(policy, timeout)
    if deadline > MAX_ACK_DEADLINE_SECONDS:
        raise ValueError(f"{function}: timeout {timeout} s exceeds Pub/Sub's ack deadline limit")
    return int(deadline)


def http_routers() -> dict[str, Any]:
    """Every HTTP function's `Router`, by function name (imports the function modules)."""
    return {fn.name: fn.load().router for fn in functions() if not fn.event_driven}


# The modules whose `router` declares the REST routes the realtime service serves, by service.
STREAMING_ROUTERS = {"realtime": "shared.chat.api"}


def streaming_routers() -> dict[str, Any]:
    """The REST routes that the realtime service serves (declared in `shared/`, so functions
    can describe them), by service name. Loaded by name, as a function's module is: the OpenAPI
    function reads their declarations and never runs their handlers, so it takes neither what
    the handlers import nor those imports' secrets."""
    return {
        service: importlib.import_module(module).router
        for service, module in STREAMING_ROUTERS.items()
    }
