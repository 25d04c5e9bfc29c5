from __future__ import annotations

import pytest

from shared.core.settings import DEV_TOKEN_ENCRYPTION_KEY, Settings, SettingsError

PRODUCTION = {
    "ENVIRONMENT": "production",
    "GOOGLE_CLOUD_PROJECT": "mnemo-prod",
    "TOKEN_ENCRYPTION_KEY": "a-real-key",
    "API_KEY_PEPPER": "a-real-pepper",
    "REALTIME_URL": "https://live.mnemo.app",
}


def test_development_defaults_match_the_configuration_table():
    settings = Settings.from_environ({})
    assert settings.environment == "development"
    assert settings.google_cloud_project == "demo-mnemo"
    assert settings.port == 8080
    assert settings.llm_model == "gpt-4.1-mini"
    assert settings.embedding_model == "text-embedding-3-small"
    assert settings.realtime_origin == "http://localhost:8080"
    assert settings.token_encryption_key == DEV_TOKEN_ENCRYPTION_KEY


def test_variables_are_read_by_their_upper_case_names_and_typed():
    settings = Settings.from_environ({"PORT": "9000", "LLM_MODEL": "m", "OPENAI_BASE_URL": ""})
    assert settings.port == 9000
    assert settings.llm_model == "m"
    assert settings.openai_base_url is None


def test_a_sound_production_configuration_starts():
    assert Settings.from_environ(PRODUCTION).production


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"FIRESTORE_EMULATOR_HOST": "127.0.0.1:8081"}, "FIRESTORE_EMULATOR_HOST"),
        ({"FIREBASE_AUTH_EMULATOR_HOST": "127.0.0.1:9099"}, "FIREBASE_AUTH_EMULATOR_HOST"),
        ({"PUBSUB_EMULATOR_HOST": "127.0.0.1:8085"}, "PUBSUB_EMULATOR_HOST"),
        ({"TOKEN_ENCRYPTION_KEY": ""}, "TOKEN_ENCRYPTION_KEY"),
        ({"TOKEN_ENCRYPTION_KEY": DEV_TOKEN_ENCRYPTION_KEY}, "TOKEN_ENCRYPTION_KEY"),
        ({"API_KEY_PEPPER": ""}, "API_KEY_PEPPER"),
        ({"GOOGLE_CLOUD_PROJECT": "demo-mnemo"}, "GOOGLE_CLOUD_PROJECT"),
        ({"REALTIME_URL": ""}, "REALTIME_URL"),
    ],
)
def test_production_refuses_emulators_and_development_secrets(change, complaint):
    with pytest.raises(SettingsError, match=complaint):
        Settings.from_environ({**PRODUCTION, **change})


@pytest.mark.parametrize(
    "environ",
    [
        {"PORT": "eighty"},
        {"PORT": "0"},
        {"ENVIRONMENT": "staging"},
        {"PLAID_ENV": "develop"},
        {"AUTH_STATE_TTL_SECONDS": "soon"},
    ],
)
def test_malformed_values_fail_fast_with_a_settings_error(environ):
    with pytest.raises(SettingsError, match="invalid configuration"):
        Settings.from_environ(environ)


def test_every_setting_is_in_the_readme_configuration_table():
    import dataclasses
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[3] / "README.md").read_text()
    table = readme.split("| variable | meaning |", 1)[1].split("\n\n", 1)[0]
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table))
    missing = {f.name.upper() for f in dataclasses.fields(Settings)} - documented
    assert not missing, f"settings missing from README's configuration table: {sorted(missing)}"
