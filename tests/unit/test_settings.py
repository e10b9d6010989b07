"""The settings table: read once into a frozen object; bad or missing settings are named.

Also the local run's settings: the sample, the generated key-encryption key, the merge order.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path

import pytest

from devtools.run_local import (
    DEV_SERVICES,
    Options,
    Plan,
    merge_settings,
    new_key_encryption_keys,
    prepare_local_settings,
    start_services,
)
from devtools.settings_doc import default_text, defaults, sample_settings
from shared.errors import SettingsError
from shared.settings import SETTINGS_TABLE, PreviewMode, Settings, load_settings

pytestmark = pytest.mark.unit

REQUIRED = {
    "STORAGE_CONNECTION": "UseDevelopmentStorage=true",
    "APNS_APPS": '[{"bundleId": "com.example.app", "teamId": "T", "keyId": "K"}]',
    "KEY_ENCRYPTION_KEYS": "k1=" + base64.b64encode(bytes(32)).decode(),
}

# Names other parts of the app rely on (APNs, preview, auth, ACS, renewal).
RESERVED = {
    "APNS_APPS",
    "APNS_SANDBOX_ORIGIN",
    "APNS_PRODUCTION_ORIGIN",
    "APNS_CA_FILE",
    "PREVIEW_MODE",
    "KEY_ENCRYPTION_KEYS",
    "AUTH_JWT_ISSUER",
    "AUTH_JWT_AUDIENCE",
    "AUTH_JWKS_URL",
    "EASY_AUTH_ENABLED",
    "ACS_CONNECTION_STRING",
    "RENEWAL_SCHEDULE",
    "RENEWAL_MAX_PER_HOUR",
}


def test_the_required_settings_alone_give_every_default() -> None:
    settings = load_settings(REQUIRED)

    assert settings.table_prefix == "pushrelay"
    assert settings.preview_mode is PreviewMode.ENCRYPTED
    assert settings.acs_token_scopes == ("chat", "voip")
    assert settings.easy_auth_enabled is False


def test_settings_are_frozen() -> None:
    settings = load_settings(REQUIRED)

    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.table_prefix = "other"  # type: ignore[misc]


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_a_missing_required_setting_is_named(name: str) -> None:
    env = {k: v for k, v in REQUIRED.items() if k != name}

    with pytest.raises(SettingsError, match=name):
        load_settings(env)


def test_a_blank_required_setting_counts_as_missing() -> None:
    with pytest.raises(SettingsError, match="KEY_ENCRYPTION_KEYS"):
        load_settings({**REQUIRED, "KEY_ENCRYPTION_KEYS": "  "})


def test_tools_may_load_without_the_required_settings() -> None:
    assert load_settings({}, require=False).storage_connection == ""


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("APNS_CONNECTIONS", "two"),
        ("APNS_REQUEST_TIMEOUT_SECONDS", "fast"),
        ("EASY_AUTH_ENABLED", "maybe"),
        ("PREVIEW_MODE", "loud"),
        ("ACS_TOKEN_LIFETIME_MINUTES", "30"),
        ("TABLE_PREFIX", "bad-prefix"),
        ("APNS_APPS", "not json"),
        ("APNS_APPS", "[]"),
        ("RENEWAL_SHARD_SIZE", "0"),
    ],
)
def test_a_malformed_setting_is_named(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings({**REQUIRED, name: value})


def test_values_are_parsed_to_their_types() -> None:
    settings = load_settings(
        {
            **REQUIRED,
            "APNS_CONNECTIONS": " 4 ",
            "APNS_RETRY_BUDGET_SECONDS": "7.5",
            "EASY_AUTH_ENABLED": "TRUE",
            "PREVIEW_MODE": "Plaintext",
            "DELIVERY_LOG_ADMINS": "alice, bob,,",
        }
    )

    assert settings.apns_connections == 4
    assert settings.apns_retry_budget_seconds == 7.5
    assert settings.easy_auth_enabled is True
    assert settings.preview_mode is PreviewMode.PLAINTEXT
    assert settings.delivery_log_admins == ("alice", "bob")


def test_every_row_has_a_unique_name_and_a_meaning() -> None:
    names = [spec.name for spec in SETTINGS_TABLE]

    assert len(names) == len(set(names))
    assert all(spec.meaning.strip() for spec in SETTINGS_TABLE)
    assert len(SETTINGS_TABLE) == len(dataclasses.fields(Settings))


def test_the_names_other_issues_need_are_reserved() -> None:
    assert RESERVED - {spec.name for spec in SETTINGS_TABLE} == set()


def test_every_default_written_as_text_reads_back_as_the_default() -> None:
    text = {k: v for k, v in defaults().items() if v != ""}

    settings = load_settings({**text, **REQUIRED})

    for spec in SETTINGS_TABLE:
        if spec.name not in REQUIRED and default_text(spec) != "":
            assert getattr(settings, spec.attribute) == spec.default, spec.name


# --- the local run's settings ------------------------------------------------------------------
def _sample(tmp_path: Path) -> Path:
    path = tmp_path / "sample.json"
    path.write_text(json.dumps(sample_settings()))
    return path


def test_first_run_copies_the_sample_with_a_fresh_key(tmp_path: Path) -> None:
    target = tmp_path / "local.settings.json"

    values, created = prepare_local_settings(target, _sample(tmp_path))

    assert created
    key_id, _, key = values["KEY_ENCRYPTION_KEYS"].partition("=")
    assert key_id and len(base64.b64decode(key, validate=True)) == 32
    assert json.loads(target.read_text())["Values"] == values


def test_later_runs_keep_the_key(tmp_path: Path) -> None:
    target = tmp_path / "local.settings.json"
    first, _ = prepare_local_settings(target, _sample(tmp_path))

    again, created = prepare_local_settings(target, _sample(tmp_path))

    assert not created
    assert again["KEY_ENCRYPTION_KEYS"] == first["KEY_ENCRYPTION_KEYS"]


def test_generated_keys_differ() -> None:
    assert new_key_encryption_keys() != new_key_encryption_keys()


def test_services_override_local_values() -> None:
    merged = merge_settings(
        {"B": "local", "C": "local", "AzureWebJobsStorage": "UseDevelopmentStorage=true"},
        [{"C": "service"}],
        "azurite-connection",
    )

    assert (merged["B"], merged["C"]) == ("local", "service")
    assert merged["AzureWebJobsStorage"] == "azurite-connection"
    assert merged["STORAGE_CONNECTION"] == "azurite-connection"


def test_settings_table_defaults_are_not_app_settings() -> None:
    # The host resolves %PURGE_SCHEDULE% from app settings only; a default would hide a function
    # that Azure refuses to start when the setting is missing.
    merged = merge_settings({}, [], "azurite-connection")

    assert "PURGE_SCHEDULE" not in merged and "RENEWAL_QUEUE" not in merged


def test_a_real_storage_account_is_kept() -> None:
    real = "DefaultEndpointsProtocol=https;AccountName=real;AccountKey=x"

    merged = merge_settings({"STORAGE_CONNECTION": real}, [], "azurite-connection")

    assert merged["STORAGE_CONNECTION"] == real


def test_services_whose_real_counterpart_is_configured_are_not_started(tmp_path: Path) -> None:
    plan = Plan()
    configured = {service.real_when: "configured" for service in DEV_SERVICES}

    start_services(Options(local_dir=tmp_path), configured, plan)

    assert plan.started == []
    assert len(plan.skipped) == len(DEV_SERVICES)
    assert all("the real service is used" in line for line in plan.skipped)


def test_services_without_a_module_are_skipped_and_said_so(tmp_path: Path) -> None:
    plan = Plan()
    options = Options(
        local_dir=tmp_path,
        skip=frozenset(s.name for s in DEV_SERVICES),
        extra_services=("devtools.no_such_service",),
    )

    start_services(options, {}, plan)

    assert plan.started == []
    assert "module devtools.no_such_service is absent" in plan.skipped[-1]
