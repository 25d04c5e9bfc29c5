"""`shared.auth` in this process, against the Auth emulator (or none, where none is needed)."""

from __future__ import annotations

import time
import uuid
from types import SimpleNamespace

import firebase_admin
import firebase_admin.auth
import pytest

from shared.auth import tokens
from shared.auth.tokens import Access, authenticate, token_from_header
from shared.core import settings as settings_module
from shared.core.errors import Forbidden, ServiceUnavailable, Unauthorized
from shared.core.settings import Settings


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("Bearer", "Bearer"),
        ("abc.def.ghi", "abc.def.ghi"),
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer   abc.def.ghi ", "abc.def.ghi"),
    ],
)
def test_the_token_is_read_raw_or_after_bearer(header, token):
    assert token_from_header(header) == token


@pytest.fixture
def get_user_calls(monkeypatch):
    """Counts the calls that reach Firebase Auth (the real function still answers)."""
    calls = []
    real = firebase_admin.auth.get_user

    def counting(uid, app=None):
        calls.append(uid)
        return real(uid, app=app)

    monkeypatch.setattr(firebase_admin.auth, "get_user", counting)
    return calls


def test_a_verified_account_is_not_looked_up_again_within_the_ttl(stack, user, get_user_calls):
    for _ in range(5):
        assert authenticate(user.token).uid == user.uid
    assert get_user_calls == [user.uid]


@pytest.fixture
def verify_calls(monkeypatch):
    """Counts the token checks firebase-admin makes (the real function still answers)."""
    calls = []
    real = firebase_admin.auth.verify_id_token

    def counting(token, *args, **kwargs):
        calls.append(token)
        return real(token, *args, **kwargs)

    monkeypatch.setattr(firebase_admin.auth, "verify_id_token", counting)
    return calls


def test_a_token_is_verified_once_and_then_known_until_it_expires(
    stack, user, verify_calls, get_user_calls, monkeypatch
):
    assert tokens.known_caller(user.token) is None  # never seen: authenticate in a thread
    assert authenticate(user.token).uid == user.uid
    assert [tokens.known_caller(user.token).uid for _ in range(3)] == [user.uid] * 3
    assert authenticate(user.token).uid == user.uid
    assert verify_calls == [user.token] and get_user_calls == [user.uid]
    with pytest.raises(Forbidden):  # what it knows is held to the route as ever
        tokens.known_caller(user.token, Access.ADMIN)

    # Two hours on (the token lasts one) for shared.auth's clock alone: firebase-admin's clock
    # has not moved, so the token passes when it is checked again.
    later = SimpleNamespace(time=lambda: time.time() + 7200, monotonic=time.monotonic)
    monkeypatch.setattr(tokens, "time", later)
    assert tokens.known_caller(user.token) is None
    assert authenticate(user.token).uid == user.uid
    assert verify_calls == [user.token, user.token]


def test_a_known_token_of_an_account_not_looked_up_lately_goes_to_the_thread(
    stack, auth_emulator, monkeypatch, get_user_calls
):
    monkeypatch.setattr(settings_module, "_settings", Settings(auth_state_ttl_seconds=0))
    user = auth_emulator.sign_up()
    assert authenticate(user.token).uid == user.uid
    assert tokens.known_caller(user.token) is None  # the account's state is not fresh
    assert get_user_calls == [user.uid]


def test_a_disabled_account_is_refused_once_its_cached_state_expires(
    stack, auth_emulator, monkeypatch, get_user_calls
):
    monkeypatch.setattr(settings_module, "_settings", Settings(auth_state_ttl_seconds=0))
    user = auth_emulator.sign_up()
    assert authenticate(user.token).uid == user.uid
    auth_emulator.disable(user)
    with pytest.raises(Unauthorized, match="disabled"):
        authenticate(user.token)
    assert get_user_calls == [user.uid, user.uid]


def test_the_admin_claim_opens_admin_routes_and_nothing_else_does(stack, auth_emulator):
    user = auth_emulator.sign_up()
    with pytest.raises(Forbidden):
        authenticate(user.token, Access.ADMIN)
    impostor = auth_emulator.with_claims(user, {"admin": "yes"})
    with pytest.raises(Forbidden):
        authenticate(impostor.token, Access.ADMIN)
    admin = auth_emulator.with_claims(user, {"admin": True})
    caller = authenticate(admin.token, Access.ADMIN)
    assert caller.admin and caller.uid == user.uid


def test_forgetting_an_account_makes_the_next_request_ask_again(stack, user, get_user_calls):
    authenticate(user.token)
    tokens.forget_account_state(user.uid)
    authenticate(user.token)
    assert get_user_calls == [user.uid, user.uid]


def test_an_unreachable_identity_service_is_503_not_a_crash(unreachable_auth):
    token = unreachable_auth.forged(f"uid-{uuid.uuid4().hex}")  # a valid token, checked here
    with pytest.raises(ServiceUnavailable):
        authenticate(token)


@pytest.fixture
def production(monkeypatch):
    """Production rules over the emulators (production itself refuses emulator hosts)."""
    settings = Settings()
    object.__setattr__(settings, "environment", "production")
    monkeypatch.setattr(settings_module, "_settings", settings)


def test_production_wants_the_terms_accepted_whatever_else_the_profile_holds(
    production, stack, auth_emulator, firestore
):
    never = auth_emulator.sign_up()
    with pytest.raises(Unauthorized, match="terms"):
        authenticate(never.token)
    named = auth_emulator.sign_up()
    firestore.collection("users").document(named.uid).set({"name": "Ada"})
    with pytest.raises(Unauthorized, match="terms"):
        authenticate(named.token)
    assert authenticate(named.token, require_terms=False).uid == named.uid
    firestore.collection("users").document(named.uid).update({"terms_accepted": True})
    assert authenticate(named.token).uid == named.uid
    anonymous = auth_emulator.sign_up(anonymous=True)
    with pytest.raises(Unauthorized, match="anonymous"):
        authenticate(anonymous.token, require_terms=False)
