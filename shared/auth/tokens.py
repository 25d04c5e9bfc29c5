"""Who is calling: Firebase ID tokens, verified once, for functions and WebSockets alike.

`authenticate()` only verifies and describes the caller; it has no side effects and no bypass.
The token's signature is checked locally (firebase-admin caches Google's certificates), once per
token: what a token says does not change, so a verified one is remembered until it expires.
Whether the account is disabled or its tokens revoked needs Firebase Auth, so that answer is
cached per user for `AUTH_STATE_TTL_SECONDS` instead of being fetched on every request.
Production also refuses anonymous users and users who have not accepted the terms of service
(docs/api.md, "Authentication"). An event loop calls `known_caller()` first: the same answer
when it needs no network (the token and the account known and fresh), so that it only goes to a
thread when it must.

Under `FIREBASE_AUTH_EMULATOR_HOST` firebase-admin accepts the emulator's unsigned tokens; the
settings refuse that variable in production.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from shared.core.clients import Lazy
from shared.core.errors import Forbidden, ServiceUnavailable, Unauthorized
from shared.core.settings import get_settings

if TYPE_CHECKING:
    from firebase_admin import App


class Access(StrEnum):
    """What a route demands of its caller."""

    PUBLIC = "none"
    USER = "user"
    ADMIN = "admin"


@dataclass(frozen=True)
class Caller:
    """A verified Firebase user."""

    uid: str
    email: str | None = None
    email_verified: bool = False  # an unverified address may be anybody's
    anonymous: bool = False
    admin: bool = False


def token_from_header(value: str | None) -> str | None:
    """The ID token in an `Authorization` header, raw or as `Bearer <token>`."""
    if not value:
        return None
    value = value.strip()
    scheme, _, rest = value.partition(" ")
    if rest and scheme.lower() == "bearer":
        value = rest.strip()
    return value or None


def _build_app(_: None) -> App:
    import firebase_admin

    return firebase_admin.initialize_app(
        options={"projectId": get_settings().google_cloud_project}, name="mnemo"
    )


# firebase-admin keeps the app by name, so it is built once per process (no key).
firebase_app: Lazy[None, App] = Lazy(_build_app)


def warm() -> None:
    """Import firebase-admin's token verifier and build its app now (for a long-lived service
    that would rather not pay for it in its first request)."""
    from firebase_admin import auth  # noqa: F401

    firebase_app()


@dataclass(frozen=True)
class _AccountState:
    disabled: bool
    tokens_valid_after_ms: int
    checked_at: float


_account_states: dict[str, _AccountState] = {}
_terms_accepted_at: dict[str, float] = {}


class _WouldWait(Exception):
    """Raised where `authenticate` would wait for the network, when it must not (`fetch=False`)."""


def _account_state(uid: str, fetch: bool = True) -> _AccountState:
    ttl = get_settings().auth_state_ttl_seconds
    state = _account_states.get(uid)
    if state is not None and time.monotonic() - state.checked_at < ttl:
        return state
    if not fetch:
        raise _WouldWait
    from firebase_admin import auth, exceptions

    try:
        user = auth.get_user(uid, app=firebase_app())
    except auth.UserNotFoundError as error:
        raise Unauthorized("this account no longer exists") from error
    except exceptions.FirebaseError as error:
        raise ServiceUnavailable("the identity service is unavailable; retry") from error
    state = _AccountState(
        disabled=user.disabled,
        tokens_valid_after_ms=user.tokens_valid_after_timestamp or 0,
        checked_at=time.monotonic(),
    )
    _account_states[uid] = state
    return state


def forget_account_state(uid: str) -> None:
    """Drop what this instance has cached about `uid` (after deleting or changing the account)."""
    _account_states.pop(uid, None)
    _terms_accepted_at.pop(uid, None)


def delete_account(uid: str) -> None:
    """Delete the Firebase Auth account (gone already is fine): its tokens are refused from now
    on here, and on other instances once their cached account state expires
    (`AUTH_STATE_TTL_SECONDS`)."""
    from firebase_admin import auth, exceptions

    try:
        auth.delete_user(uid, app=firebase_app())
    except auth.UserNotFoundError:
        pass
    except exceptions.FirebaseError as error:
        raise ServiceUnavailable("the identity service is unavailable; retry") from error
    finally:
        forget_account_state(uid)


def _has_accepted_terms(uid: str, fetch: bool = True) -> bool:
    # An acceptance is cached for the same TTL as the account state (an account deleted on
    # another instance loses it within the TTL); a refusal is always re-read, so a user who has
    # just accepted is let in at once.
    checked_at = _terms_accepted_at.get(uid)
    if (
        checked_at is not None
        and time.monotonic() - checked_at < get_settings().auth_state_ttl_seconds
    ):
        return True
    if not fetch:
        raise _WouldWait
    from shared.store.firestore import db

    snapshot = db().collection("users").document(uid).get(field_paths=["terms_accepted"])
    accepted = (snapshot.to_dict() or {}).get("terms_accepted") is True
    if accepted:
        _terms_accepted_at[uid] = time.monotonic()
    return accepted


@dataclass(frozen=True)
class _Verified:
    """What a verified token says."""

    caller: Caller
    issued_at: int
    expires_at: float  # time.time(), with the clock skew allowed


# Tokens verified by this instance, most recently used last; a client sends one for about an
# hour, so an instance seldom verifies the same token twice.
_verified: OrderedDict[str, _Verified] = OrderedDict()
_verified_lock = threading.Lock()
VERIFIED_TOKENS = 4096
CLOCK_SKEW_SECONDS = 10


def _verify(token: str, fetch: bool) -> _Verified:
    """The token's claims, checked (or remembered from an earlier check); `Unauthorized` if it is
    not a valid Firebase ID token."""
    with _verified_lock:
        found = _verified.get(token)
        if found is not None:
            if time.time() < found.expires_at:
                _verified.move_to_end(token)
                return found
            del _verified[token]
    if not fetch:  # firebase-admin may fetch Google's certificates
        raise _WouldWait
    from firebase_admin import auth

    try:
        claims = auth.verify_id_token(
            token, app=firebase_app(), clock_skew_seconds=CLOCK_SKEW_SECONDS
        )
    except auth.CertificateFetchError as error:
        raise ServiceUnavailable("cannot fetch the token signing keys; retry") from error
    except auth.ExpiredIdTokenError as error:
        raise Unauthorized("the token has expired") from error
    except (ValueError, auth.InvalidIdTokenError) as error:
        raise Unauthorized("the token is not a valid Firebase ID token") from error
    uid = claims.get("uid") or claims.get("sub")
    if not isinstance(uid, str) or not uid:
        raise Unauthorized("the token names no user")
    issued_at, expires_at = claims.get("iat"), claims.get("exp")
    firebase, email = claims.get("firebase"), claims.get("email")
    # Google signs real tokens; the emulator's are unsigned, so their claims may be anything.
    if (
        not isinstance(issued_at, int | float)
        or not isinstance(expires_at, int | float)
        or not isinstance(firebase, dict)
    ):
        raise Unauthorized("the token is not a valid Firebase ID token")
    verified = _Verified(
        Caller(
            uid=uid,
            email=email if isinstance(email, str) else None,
            email_verified=claims.get("email_verified") is True,
            anonymous=firebase.get("sign_in_provider") == "anonymous",
            admin=claims.get("admin") is True,
        ),
        issued_at=int(issued_at),
        expires_at=float(expires_at) + CLOCK_SKEW_SECONDS,
    )
    with _verified_lock:
        _verified[token] = verified
        if len(_verified) > VERIFIED_TOKENS:
            _verified.popitem(last=False)
    return verified


def verify_id_token(token: str, fetch: bool = True) -> Caller:
    """Verify a Firebase ID token and the account behind it; raise `Unauthorized` if not valid."""
    verified = _verify(token, fetch)
    state = _account_state(verified.caller.uid, fetch)
    if state.disabled:
        raise Unauthorized("this account is disabled")
    if verified.issued_at * 1000 < state.tokens_valid_after_ms:
        raise Unauthorized("the token has been revoked")
    return verified.caller


def authenticate(
    token: str | None, access: Access = Access.USER, *, require_terms: bool = True
) -> Caller:
    """The caller behind `token`, held to `access` and to production's stricter rules."""
    return _authenticate(token, access, require_terms, fetch=True)


def known_caller(token: str | None, access: Access = Access.USER) -> Caller | None:
    """`authenticate(token, access)` if it can answer without the network (this instance has
    verified the token and knows the account, freshly), else None: then call `authenticate` in
    a worker thread. For an event loop, which must not wait on the network."""
    try:
        return _authenticate(token, access, require_terms=True, fetch=False)
    except _WouldWait:
        return None


def _authenticate(token: str | None, access: Access, require_terms: bool, fetch: bool) -> Caller:
    if not token:
        raise Unauthorized("missing credentials: send a Firebase ID token in Authorization")
    caller = verify_id_token(token, fetch)
    if get_settings().production:
        if caller.anonymous:
            raise Unauthorized("anonymous accounts cannot use this API; sign in")
        if require_terms and not _has_accepted_terms(caller.uid, fetch):
            raise Unauthorized("accept the terms of service first (PATCH /v1/users/me)")
    if access is Access.ADMIN and not caller.admin:
        raise Forbidden("this route is for administrators")
    return caller
