"""One local stack per test session (emulators on free ports + the gateway), shared by all tests.

It runs on free ports, so `make test` works while `make run` is up, and stops when pytest is
interrupted, terminated (SIGTERM, SIGHUP) or killed. The test process itself talks
to the same emulators (Firestore reads, Auth users) through the standard environment variables.

Every test that needs the stack is marked `emulators`; the others (`make test-unit`) run in this
process alone, the gateway's routing included (`gateway`).
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from infra.auth_emulator import AuthEmulator, User
from infra.emulators import PROJECT
from infra.local import LocalStack
from infra.ports import Ports
from infra.signals import STOP_SIGNALS, handling, interrupt
from shared.auth import tokens
from shared.core import settings as settings_module
from shared.core.clients import Lazy
from tests.support.deepgram_double import DeepgramDouble
from tests.support.openai_double import OpenAIDouble


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `emulators` every test that needs the stack, directly or through another fixture
    (`make test-unit` deselects them). Tests that start a stack of their own mark themselves."""
    for item in items:
        if "stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.emulators)


@pytest.fixture(scope="session")
def deepgram_double() -> Iterator[DeepgramDouble]:
    """The Deepgram-protocol server the stack's realtime service transcribes with."""
    with DeepgramDouble() as double:
        yield double


@pytest.fixture
def deepgram(deepgram_double: DeepgramDouble) -> DeepgramDouble:
    """The stack's Deepgram double, with no script and no connections yet."""
    deepgram_double.reset()
    return deepgram_double


@pytest.fixture(scope="session")
def openai_double() -> Iterator[OpenAIDouble]:
    """The OpenAI-compatible server the stack's functions and chat call."""
    with OpenAIDouble() as double:
        yield double


@pytest.fixture
def openai(openai_double: OpenAIDouble) -> OpenAIDouble:
    """The stack's OpenAI double, with no script and no requests yet."""
    openai_double.reset()
    return openai_double


@pytest.fixture(scope="session")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    deepgram_double: DeepgramDouble,
    openai_double: OpenAIDouble,
) -> Iterator[LocalStack]:
    saved = dict(os.environ)
    local = LocalStack(
        Ports.free(),
        Path(tmp_path_factory.mktemp("stack")),
        gateway_env={
            "DEEPGRAM_API_KEY": deepgram_double.api_key,
            "DEEPGRAM_BASE_URL": deepgram_double.url,
            # A stalled provider handshake counts as a failed attempt after this long.
            "STT_CONNECT_TIMEOUT_SECONDS": "1",
            "OPENAI_API_KEY": openai_double.api_key,
            "OPENAI_BASE_URL": openai_double.url,
            # A stalled language model fails the attempt after this long.
            "LLM_TIMEOUT_SECONDS": "2",
        },
        scheduled=False,  # the tests tick the sweep themselves
    )
    # SIGTERM (a CI job's timeout) and SIGHUP end pytest without its teardown: while the stack is
    # up they interrupt as Ctrl-C does, so this `finally` stops it. After a SIGKILL, its guard does.
    with handling(STOP_SIGNALS, interrupt):
        local.start()
        os.environ.update(local.client_env())
        try:
            yield local
        finally:
            with handling(STOP_SIGNALS, signal.SIG_IGN):  # a second signal must not cut it short
                local.stop()
            os.environ.clear()
            os.environ.update(saved)


@pytest.fixture(autouse=True)
def isolated_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test reads settings afresh from an environment without production leftovers."""
    monkeypatch.delenv("ENVIRONMENT", raising=False)
    monkeypatch.setattr(settings_module, "_settings", None)
    yield


@pytest.fixture(scope="session")
def auth_emulator(stack: LocalStack) -> Iterator[AuthEmulator]:
    emulator = AuthEmulator(stack.client_env()["FIREBASE_AUTH_EMULATOR_HOST"], PROJECT)
    yield emulator
    emulator.client.close()


@pytest.fixture
def user(auth_emulator: AuthEmulator) -> User:
    return auth_emulator.sign_up()


@pytest.fixture(scope="session")
def api(stack: LocalStack) -> Iterator[httpx.Client]:
    """An HTTP client for the stack's one port."""
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def firestore(stack: LocalStack):  # type: ignore[no-untyped-def]
    from google.cloud import firestore as firestore_sdk

    return firestore_sdk.Client(project=PROJECT)


@pytest.fixture(scope="session")
def gateway() -> Iterator[httpx.Client]:
    """The stack's one port as an app in this process, with no emulator behind it: the same
    routing to the same functions (through functions-framework) and to the realtime service,
    for requests whose answer needs no stored data and no account."""
    from starlette.testclient import TestClient

    from infra.gateway import app

    # Not entered as a context manager: no lifespan, so the realtime service warms no clients.
    client = TestClient(app, base_url="http://localhost", raise_server_exceptions=False)
    yield client
    client.close()


@pytest.fixture
def unreachable_auth(monkeypatch: pytest.MonkeyPatch) -> Iterator[AuthEmulator]:
    """firebase-admin as under the Auth emulator (it checks the emulator's unsigned tokens in
    this process), with nothing listening at the emulator's address: a token is refused or let
    through on what it says alone, and a request that looks an account up gets a 503. Yields an
    `AuthEmulator` for its forged tokens only; there is no emulator to sign up with."""
    import firebase_admin

    from infra.ports import free_port

    host = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("FIREBASE_AUTH_EMULATOR_HOST", host)
    # An app of its own: the shared one keeps its Auth client, made for the stack's emulator.
    app = firebase_admin.initialize_app(
        options={"projectId": PROJECT}, name=f"unreachable-{uuid.uuid4().hex}"
    )
    monkeypatch.setattr(tokens, "firebase_app", Lazy(lambda _: app))
    forger = AuthEmulator(host, PROJECT)
    try:
        yield forger
    finally:
        forger.client.close()
        firebase_admin.delete_app(app)
