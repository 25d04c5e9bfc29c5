"""One typed settings object, read from the environment once per process.

Every environment variable Mnemo reads is declared here (the README's configuration table lists
them, and a test holds the two together).
Production refuses to start with an emulator host or a development secret: emulator tokens are
unsigned, so honouring `FIREBASE_AUTH_EMULATOR_HOST` in production would let anyone in.

A frozen dataclass with a small typed parser rather than pydantic(-settings): settings are read
on every cold start, and building a pydantic model class costs more than this whole module.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

DEV_TOKEN_ENCRYPTION_KEY = "dev-only-token-encryption-key-not-for-production"
DEV_API_KEY_PEPPER = "dev-only-api-key-pepper-not-for-production"

EMULATOR_HOST_VARIABLES = (
    "FIRESTORE_EMULATOR_HOST",
    "PUBSUB_EMULATOR_HOST",
    "FIREBASE_AUTH_EMULATOR_HOST",
)


class SettingsError(RuntimeError):
    """The environment describes a configuration Mnemo refuses to run with."""


@dataclass(frozen=True)
class Settings:
    environment: Literal["development", "production"] = "development"
    google_cloud_project: str = "demo-mnemo"
    port: int = 8080
    realtime_url: str = ""
    firestore_emulator_host: str | None = None
    pubsub_emulator_host: str | None = None
    firebase_auth_emulator_host: str | None = None
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    llm_model: str = "gpt-4.1-mini"
    embedding_model: str = "text-embedding-3-small"
    # One language-model request's limit; two of them fit in the timeout (and ack deadline) of
    # the functions that make them (infra/resources.yaml: process_conversation, 180 s).
    llm_timeout_seconds: float = 45.0
    deepgram_api_key: str | None = None
    deepgram_base_url: str | None = None
    # How long opening a speech-to-text stream may take before it counts as a failed attempt.
    stt_connect_timeout_seconds: float = 10.0
    plaid_client_id: str | None = None
    plaid_secret: str | None = None
    plaid_env: Literal["sandbox", "production"] = "sandbox"
    plaid_base_url: str | None = None
    google_oauth_client_id: str | None = None
    google_oauth_client_secret: str | None = None
    google_oauth_auth_url: str | None = None
    google_oauth_token_url: str | None = None
    google_api_base_url: str | None = None
    oauth_redirect_base: str | None = None
    token_encryption_key: str = DEV_TOKEN_ENCRYPTION_KEY
    # The HMAC key under which API keys are stored (shared.auth.keys).
    api_key_pepper: str = DEV_API_KEY_PEPPER
    app_redirect_url: str = "http://localhost:8080/"
    site_url: str = "https://mnemo.app/"
    # How long a verified user's account state (disabled, revoked) is trusted before Firebase
    # Auth is asked again. Keeps token verification off the network on hot paths.
    auth_state_ttl_seconds: float = 300.0
    # Browser origins allowed to call the API (comma-separated `scheme://host[:port]`). In
    # development any http://localhost and http://127.0.0.1 origin is allowed as well.
    cors_allowed_origins: str = ""

    @property
    def production(self) -> bool:
        return self.environment == "production"

    @property
    def realtime_origin(self) -> str:
        """Where clients open WebSockets and SSE streams (the `live.` origin in production)."""
        return self.realtime_url or f"http://localhost:{self.port}"

    @property
    def allowed_origins(self) -> tuple[str, ...]:
        """`CORS_ALLOWED_ORIGINS`, one origin each."""
        return tuple(o.strip() for o in self.cors_allowed_origins.split(",") if o.strip())

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise SettingsError(f"invalid configuration: PORT {self.port} is not a port")
        if self.auth_state_ttl_seconds < 0:
            raise SettingsError("invalid configuration: AUTH_STATE_TTL_SECONDS is negative")
        if self.llm_timeout_seconds <= 0:
            raise SettingsError("invalid configuration: LLM_TIMEOUT_SECONDS must be > 0")
        if self.stt_connect_timeout_seconds <= 0:
            raise SettingsError("invalid configuration: STT_CONNECT_TIMEOUT_SECONDS must be > 0")
        for origin in self.allowed_origins:
            if origin == "*" or "://" not in origin or origin.endswith("/"):
                raise SettingsError(
                    f"invalid configuration: CORS_ALLOWED_ORIGINS has {origin!r}; list origins "
                    "as scheme://host[:port], never *"
                )
        if not self.production:
            return
        emulators = [
            name for name in EMULATOR_HOST_VARIABLES if getattr(self, name.lower()) is not None
        ]
        if emulators:
            raise SettingsError(
                f"ENVIRONMENT=production refuses emulator hosts: unset {', '.join(emulators)}"
            )
        if self.token_encryption_key == DEV_TOKEN_ENCRYPTION_KEY:
            raise SettingsError("ENVIRONMENT=production needs a real TOKEN_ENCRYPTION_KEY")
        if self.api_key_pepper == DEV_API_KEY_PEPPER:
            raise SettingsError("ENVIRONMENT=production needs a real API_KEY_PEPPER")
        if self.google_cloud_project.startswith("demo-"):
            raise SettingsError("ENVIRONMENT=production needs a real GOOGLE_CLOUD_PROJECT")
        if not self.realtime_url:
            raise SettingsError("ENVIRONMENT=production needs REALTIME_URL (the streaming origin)")

    @classmethod
    def from_environ(cls, environ: typing.Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables named like the fields, upper-cased.
        An empty variable counts as unset."""
        environ = os.environ if environ is None else environ
        hints = typing.get_type_hints(cls)
        values = {
            field.name: _parse(field.name.upper(), environ[field.name.upper()], hints[field.name])
            for field in dataclasses.fields(cls)
            if environ.get(field.name.upper(), "") != ""
        }
        return cls(**values)


def _parse(name: str, raw: str, kind: Any) -> Any:
    if get_origin(kind) is Literal:
        if raw not in get_args(kind):
            allowed = ", ".join(get_args(kind))
            raise SettingsError(f"invalid configuration: {name}={raw!r}; expected one of {allowed}")
        return raw
    for target in (int, float):
        if kind is target:
            try:
                return target(raw)
            except ValueError:
                raise SettingsError(
                    f"invalid configuration: {name}={raw!r} is not a {target.__name__}"
                ) from None
    return raw


_settings: Settings | None = None


def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    global _settings
    if _settings is None:
        _settings = Settings.from_environ()
    return _settings
