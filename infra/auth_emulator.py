"""Users and ID tokens from the local Firebase Auth emulator, through its REST API (for the
tests, the benchmarks and anyone scripting the local stack)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass

import httpx

PASSWORD = "correct-horse-battery"


@dataclass(frozen=True)
class User:
    uid: str
    token: str
    email: str | None

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def raw(self) -> dict[str, str]:
        return {"Authorization": self.token}


class AuthEmulator:
    def __init__(self, host: str, project: str):
        self.project = project
        self.client = httpx.Client(base_url=f"http://{host}/identitytoolkit.googleapis.com/v1")

    def sign_up(self, *, anonymous: bool = False) -> User:
        """A new user: with an e-mail and password, or anonymous."""
        email = None if anonymous else f"user-{uuid.uuid4().hex[:12]}@example.com"
        body: dict[str, object] = {"returnSecureToken": True}
        if email:
            body.update(email=email, password=PASSWORD)
        reply = self.client.post("/accounts:signUp", params={"key": "any"}, json=body)
        reply.raise_for_status()
        data = reply.json()
        return User(uid=data["localId"], token=data["idToken"], email=email)

    def _update(self, uid: str, **changes: object) -> None:
        reply = self.client.post(
            f"/projects/{self.project}/accounts:update",
            headers={"Authorization": "Bearer owner"},
            json={"localId": uid, **changes},
        )
        reply.raise_for_status()

    def disable(self, user: User) -> None:
        self._update(user.uid, disableUser=True)

    def revoke(self, user: User) -> None:
        """Revoke every token issued so far (what a password change or sign-out-everywhere does).
        Token times are whole seconds, so wait for the next second first."""
        time.sleep(1.1)
        self._update(user.uid, validSince=str(int(time.time())))

    def with_claims(self, user: User, claims: dict[str, object]) -> User:
        """The user signed in again after setting custom claims, so the token carries them."""
        self._update(user.uid, customAttributes=json.dumps(claims))
        return self._signed_in_again(user)

    def with_verified_email(self, user: User) -> User:
        """The user signed in again after verifying the address (`email_verified` in the token)."""
        self._update(user.uid, emailVerified=True)
        return self._signed_in_again(user)

    def _signed_in_again(self, user: User) -> User:
        reply = self.client.post(
            "/accounts:signInWithPassword",
            params={"key": "any"},
            json={"email": user.email, "password": PASSWORD, "returnSecureToken": True},
        )
        reply.raise_for_status()
        return User(uid=user.uid, token=reply.json()["idToken"], email=user.email)

    def forged(self, uid: str, **overrides: object) -> str:
        """An unsigned token shaped like the emulator's, with claims overridden (expired,
        another project...): what an attacker or a stale client could send."""
        now = int(time.time())
        claims = {
            "iss": f"https://securetoken.google.com/{self.project}",
            "aud": self.project,
            "auth_time": now,
            "user_id": uid,
            "sub": uid,
            "iat": now,
            "exp": now + 3600,
            "firebase": {"identities": {}, "sign_in_provider": "password"},
            **overrides,
        }

        def encode(part: dict[str, object]) -> str:
            return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()

        return f"{encode({'alg': 'none', 'typ': 'JWT'})}.{encode(claims)}."
