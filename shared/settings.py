"""One typed settings object, read from the environment once per process.

Every environment variable Mnemo reads is declared here (ARCHITECTURE.md, "Configuration").
Production refuses to start with an emulator host or a development secret: emulator tokens are
unsigned, so honouring `FIREBASE_AUTH_EMULATOR_HOST` in production would let anyone in.

This is a plain pydantic model rather than pydantic-settings: that package costs a tenth of a
second of import time on every cold start and we only need `os.environ`.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEV_TOKEN_ENCRYPTION_KEY = "dev-only-token-encryption-key-not-for-production"

EMULATOR_HOST_VARIABLES = (
    "FIRESTORE_EMULATOR_HOST",
    "PUBSUB_EMULATOR_HOST",
    "FIREBASE_AUTH_EMULATOR_HOST",
)


class SettingsError(RuntimeError):
    """The environment describes a configuration Mnemo refuses to run with."""


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    environment: Literal["development", "production"] = "development"
    google_cloud_project: str = Field(default="demo-mnemo", min_length=1)
    port: int = Field(default=8080, ge=1, le=65535)
    realtime_url: str = ""
    firestore_emulator_host: str | None = None
    pubsub_emulator_host: str | None = None
    firebase_auth_emulator_host: str | None = None
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    llm_model: str = "gpt-4.1-mini"
    embedding_model: str = "text-embedding-3-small"
    deepgram_api_key: str | None = None
    deepgram_base_url: str | None = None
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
    app_redirect_url: str = "http://localhost:8080/"
    site_url: str = "https://mnemo.app/"
    # How long a verified user's account state (disabled, revoked, terms) is trusted before
    # Firebase Auth is asked again. Keeps token verification off the network on hot paths.
    auth_state_ttl_seconds: float = Field(default=300.0, ge=0)

    @property
    def production(self) -> bool:
        return self.environment == "production"

    @property
    def realtime_origin(self) -> str:
        """Where clients open WebSockets and SSE streams (the `live.` origin in production)."""
        return self.realtime_url or f"http://localhost:{self.port}"

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if not self.production:
            return self
        emulators = [
            name for name in EMULATOR_HOST_VARIABLES if getattr(self, name.lower()) is not None
        ]
        if emulators:
            raise SettingsError(
                f"ENVIRONMENT=production refuses emulator hosts: unset {', '.join(emulators)}"
            )
        if self.token_encryption_key == DEV_TOKEN_ENCRYPTION_KEY:
            raise SettingsError("ENVIRONMENT=production needs a real TOKEN_ENCRYPTION_KEY")
        if self.google_cloud_project.startswith("demo-"):
            raise SettingsError("ENVIRONMENT=production needs a real GOOGLE_CLOUD_PROJECT")
        if not self.realtime_url:
            raise SettingsError("ENVIRONMENT=production needs REALTIME_URL (the streaming origin)")
        return self

    @classmethod
    def from_environ(cls, environ: dict[str, str] | None = None) -> Settings:
        """Build settings from environment variables named like the fields, upper-cased."""
        environ = dict(os.environ if environ is None else environ)
        values = {
            name: environ[name.upper()]
            for name in cls.model_fields
            if environ.get(name.upper(), "") != ""
        }
        try:
            return cls.model_validate(values)
        except SettingsError:
            raise
        except ValueError as error:
            raise SettingsError(f"invalid configuration: {error}") from error


_settings: Settings | None = None


def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    global _settings
    if _settings is None:
        _settings = Settings.from_environ()
    return _settings
