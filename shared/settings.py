"""The app's settings: one declarative table, read once into a frozen object.

Every setting is a field of :class:`Settings`, declared with :func:`_setting` (name, default,
secret or not, required or not, meaning). The README's settings table and
``local.settings.sample.json`` are checked against :data:`SETTINGS_TABLE` by a test, and the
infra tests check that every required setting is set by the Bicep templates.

Raises :class:`shared.errors.SettingsError` naming the setting when one is missing or malformed.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, get_type_hints

from shared.errors import SettingsError


class PreviewMode(enum.StrEnum):
    """How a chat message's text travels in an alert."""

    ENCRYPTED = "encrypted"
    PLAINTEXT = "plaintext"
    NONE = "none"


class StorageClient(enum.StrEnum):
    """Which client talks to Table Storage (``shared.storage.tables``)."""

    LEAN = "lean"
    SDK = "sdk"


@dataclass(frozen=True)
class SettingSpec:
    """One row of the settings table."""

    name: str
    attribute: str
    kind: str
    default: object
    secret: bool
    required: bool
    meaning: str


def _setting(
    name: str,
    default: Any,
    meaning: str,
    *,
    secret: bool = False,
    required: bool = False,
) -> Any:
    """Declare one setting as a dataclass field; the metadata is the table row."""
    meta = {"name": name, "secret": secret, "required": required, "meaning": meaning}
    if isinstance(default, tuple | list):
        return field(default_factory=lambda: tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Settings:
    """Every setting the app reads. Built by :func:`load_settings`; never mutated."""

    # --- Storage ------------------------------------------------------------------------------
    storage_connection: str = _setting(
        "STORAGE_CONNECTION",
        "",
        "Table Storage for the app's state: a connection string (Azurite: "
        "UseDevelopmentStorage=true) or a table endpoint URL "
        "(https://ACCOUNT.table.core.windows.net) reached with managed identity.",
        secret=True,
        required=True,
    )
    table_prefix: str = _setting(
        "TABLE_PREFIX", "pushrelay", "Prefix of every table name (letters and digits only)."
    )
    storage_client: StorageClient = _setting(
        "STORAGE_CLIENT",
        StorageClient.LEAN,
        "Table Storage client: lean (our own, a fraction of the SDK's CPU per request; "
        "docs/performance.md) or sdk (azure-data-tables, the fallback).",
    )
    queue_connection: str = _setting(
        "AzureWebJobsStorage",
        "",
        "Storage for the Functions host and the renewal queue (the host's own setting; in Azure "
        "AzureWebJobsStorage__accountName with managed identity).",
        secret=True,
    )
    renewal_queue: str = _setting(
        "RENEWAL_QUEUE", "renewal-shards", "Storage queue that carries renewal shards to workers."
    )
    # --- APNs ---------------------------------------------------------------------------------
    apns_apps: str = _setting(
        "APNS_APPS",
        "",
        "JSON list of the iOS apps pushed to: each {bundleId, teamId, keyId, privateKey (.p8 PEM "
        "text) or privateKeyFile} or {bundleId, p12 (base64) or p12File, p12Password}. Empty: "
        "the local run starts the APNs simulator and fills this in.",
        secret=True,
        required=True,
    )
    apns_sandbox_origin: str = _setting(
        "APNS_SANDBOX_ORIGIN",
        "https://api.sandbox.push.apple.com:443",
        "APNs development endpoint (port 443 or 2197); overridden to point at the simulator.",
    )
    apns_production_origin: str = _setting(
        "APNS_PRODUCTION_ORIGIN",
        "https://api.push.apple.com:443",
        "APNs production endpoint (port 443 or 2197); overridden to point at the simulator.",
    )
    apns_ca_file: str = _setting(
        "APNS_CA_FILE",
        "",
        "Extra CA bundle to trust for APNs (the simulator's CA); empty: system CAs.",
    )
    apns_connections: int = _setting(
        "APNS_CONNECTIONS", 2, "HTTP/2 connections per APNs environment and credential."
    )
    apns_request_timeout_seconds: float = _setting(
        "APNS_REQUEST_TIMEOUT_SECONDS", 10.0, "Deadline for one APNs request (seconds)."
    )
    apns_idle_timeout_seconds: float = _setting(
        "APNS_IDLE_TIMEOUT_SECONDS",
        180.0,
        "Close an idle APNs connection after this long; under Azure's 4-minute idle NAT drop.",
    )
    apns_retry_budget_seconds: float = _setting(
        "APNS_RETRY_BUDGET_SECONDS",
        12.0,
        "Time one event may spend retrying APNs; well under Event Grid's 30 s response timeout.",
    )
    # --- Chat push ----------------------------------------------------------------------------
    preview_mode: PreviewMode = _setting(
        "PREVIEW_MODE",
        PreviewMode.ENCRYPTED,
        "encrypted (default: preview only for devices with a live key), plaintext, or none.",
    )
    preview_key_lifetime_minutes: int = _setting(
        "PREVIEW_KEY_LIFETIME_MINUTES",
        45,
        "How long an uploaded preview key stays live; the app keeps it as long (keyExpiresAt). "
        "Longer: fewer renewal wakes, more messages per key (docs/ios.md section 6).",
    )
    key_encryption_keys: str = _setting(
        "KEY_ENCRYPTION_KEYS",
        "",
        "Keys that encrypt preview keys at rest: 'id=base64(32 bytes)' comma-separated, the first "
        "encrypts, all decrypt (rotation).",
        secret=True,
        required=True,
    )
    generic_title: str = _setting(
        "NOTIFICATION_GENERIC_TITLE", "New message", "Alert title when no sender name is shown."
    )
    generic_body: str = _setting(
        "NOTIFICATION_GENERIC_BODY",
        "You have a new message",
        "Alert body when no preview may be shown.",
    )
    notification_sound: str = _setting(
        "NOTIFICATION_SOUND", "default", "Alert sound name; empty for silent alerts."
    )
    notification_category: str = _setting(
        "NOTIFICATION_CATEGORY", "", "UNNotificationCategory identifier for chat alerts."
    )
    bad_token_remove_after: int = _setting(
        "BAD_TOKEN_REMOVE_AFTER",
        3,
        "Remove a device after this many BadDeviceToken/DeviceTokenNotForTopic answers over time.",
    )
    config_error_threshold: int = _setting(
        "CONFIG_ERROR_THRESHOLD",
        5,
        "Devices of this many users of one app failing with the same token/topic reason at once "
        "are a configuration error: alert and delete nothing (one user's many devices count once).",
    )
    delivery_retention_days: int = _setting(
        "DELIVERY_RETENTION_DAYS", 7, "Days the delivery log keeps records."
    )
    purge_schedule: str = _setting(
        "PURGE_SCHEDULE", "0 17 3 * * *", "NCRONTAB schedule of the purge of old records."
    )
    delivery_log_admins: tuple[str, ...] = _setting(
        "DELIVERY_LOG_ADMINS",
        (),
        "Who may read the delivery log over HTTP, comma-separated: 'ISSUER SUBJECT' (SUBJECT may "
        "be the caller's object id, oid) or a bare SUBJECT, meaning one at AUTH_JWT_ISSUER.",
    )
    # --- Calls --------------------------------------------------------------------------------
    call_max_age_seconds: float = _setting(
        "CALL_MAX_AGE_SECONDS", 20.0, "An IncomingCall event older than this is dropped."
    )
    # --- Renewal ------------------------------------------------------------------------------
    renewal_schedule: str = _setting(
        "RENEWAL_SCHEDULE", "0 */5 * * * *", "NCRONTAB schedule of the renewal sweep."
    )
    renewal_lead_minutes: int = _setting(
        "RENEWAL_LEAD_MINUTES", 10, "Wake a device this long before its preview key expires."
    )
    renewal_max_per_hour: int = _setting(
        "RENEWAL_MAX_PER_HOUR",
        2,
        "Background pushes (renewal and withdraw) per device per hour; Apple: two or three.",
    )
    renewal_min_spacing_minutes: int = _setting(
        "RENEWAL_MIN_SPACING_MINUTES", 20, "Minimum time between two background pushes to a device."
    )
    renewal_stale_after: int = _setting(
        "RENEWAL_STALE_AFTER",
        6,
        "Unanswered renewal pushes after which a device is marked stale and no longer woken.",
    )
    renewal_shard_size: int = _setting(
        "RENEWAL_SHARD_SIZE", 200, "Devices per renewal queue message."
    )
    renewal_catch_up_hours: int = _setting(
        "RENEWAL_CATCH_UP_HOURS", 6, "How far back the sweep looks for buckets it missed."
    )
    device_stale_days: int = _setting(
        "DEVICE_STALE_DAYS", 30, "Registrations not renewed for this many days are purged."
    )
    inbox_row_schema: int = _setting(
        "INBOX_ROW_SCHEMA",
        1,
        "How inbox rows are written: 1, what versions before schema 2 read (safe to roll back), "
        "or 2, id lists as text, decoded per thread (a recipient's unread backlog no longer "
        "costs every chat event); set 2 once no instance runs an older version. Both are read.",
    )
    max_devices_per_user: int = _setting(
        "MAX_DEVICES_PER_USER",
        10,
        "Registrations one user may hold (alert and VoIP tokens alike); a new one past it removes "
        "the user's least recently renewed registration.",
    )
    # --- Caller authentication ----------------------------------------------------------------
    auth_jwt_issuer: str = _setting(
        "AUTH_JWT_ISSUER", "", "Expected 'iss' of the app's identity-provider JWTs."
    )
    auth_jwt_audience: str = _setting(
        "AUTH_JWT_AUDIENCE", "", "Expected 'aud' of the app's identity-provider JWTs."
    )
    auth_jwks_url: str = _setting("AUTH_JWKS_URL", "", "JWKS URL of the app's identity provider.")
    auth_jwt_algorithms: tuple[str, ...] = _setting(
        "AUTH_JWT_ALGORITHMS", ("RS256", "ES256"), "Allowed JWT signature algorithms."
    )
    auth_jwt_leeway_seconds: int = _setting(
        "AUTH_JWT_LEEWAY_SECONDS", 60, "Clock leeway for exp/nbf."
    )
    easy_auth_enabled: bool = _setting(
        "EASY_AUTH_ENABLED",
        False,
        "Trust App Service Easy Auth's X-MS-CLIENT-PRINCIPAL headers (only when Easy Auth is on).",
    )
    max_request_body_bytes: int = _setting(
        "MAX_REQUEST_BODY_BYTES", 16384, "Largest accepted HTTP request body."
    )
    # --- Logging ------------------------------------------------------------------------------
    library_log_level: str = _setting(
        "LIBRARY_LOG_LEVEL",
        "WARNING",
        "Level of the Azure SDK and HTTP libraries' loggers (azure, httpx, httpcore, aiohttp, h2): "
        "at INFO they log every request, storage URLs with ACS user ids included.",
    )
    # --- ACS identity -------------------------------------------------------------------------
    acs_connection_string: str = _setting(
        "ACS_CONNECTION_STRING",
        "",
        "endpoint=https://RES.communication.azure.com/;accesskey=BASE64 (HMAC signing). Empty: "
        "use ACS_ENDPOINT with managed identity.",
        secret=True,
    )
    acs_endpoint: str = _setting(
        "ACS_ENDPOINT", "", "ACS endpoint reached with managed identity when no connection string."
    )
    acs_resource_id: str = _setting(
        "ACS_RESOURCE_ID",
        "",
        "ARM id of the ACS resource whose events are acted on (/subscriptions/.../providers/"
        "Microsoft.Communication/communicationServices/NAME); an event whose topic or source "
        "differs (without case) is acknowledged and logged. Empty: no check (a warning).",
    )
    acs_ca_file: str = _setting(
        "ACS_CA_FILE", "", "Extra CA bundle to trust for ACS (the local ACS identity service)."
    )
    acs_token_scopes: tuple[str, ...] = _setting(
        "ACS_TOKEN_SCOPES", ("chat", "voip"), "Scopes of issued ACS user access tokens."
    )
    acs_token_lifetime_minutes: int = _setting(
        "ACS_TOKEN_LIFETIME_MINUTES", 1440, "Lifetime of issued ACS tokens (60-1440)."
    )
    token_rate_limit_per_minute: int = _setting(
        "TOKEN_RATE_LIMIT_PER_MINUTE", 10, "Token requests per caller per minute."
    )


def _specs() -> tuple[SettingSpec, ...]:
    hints = get_type_hints(Settings)
    rows: list[SettingSpec] = []
    for f in dataclasses.fields(Settings):
        default: object = f.default
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        rows.append(
            SettingSpec(
                name=f.metadata["name"],
                attribute=f.name,
                kind=_kind_name(hints[f.name]),
                default=default,
                secret=f.metadata["secret"],
                required=f.metadata["required"],
                meaning=f.metadata["meaning"],
            )
        )
    return tuple(rows)


def _kind_name(tp: object) -> str:
    if tp is bool:
        return "bool"
    if tp is int:
        return "int"
    if tp is float:
        return "float"
    if tp is str:
        return "string"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + "|".join(str(m.value) for m in tp)
    return "list"


SETTINGS_TABLE: Final[tuple[SettingSpec, ...]] = _specs()

LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")  # LIBRARY_LOG_LEVEL's
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _parse(spec: SettingSpec, raw: str, tp: object) -> object:
    text = raw.strip()
    if tp is str:
        return raw
    if tp is bool:
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise SettingsError(f"setting {spec.name} must be true or false, got {text!r}")
    if tp is int:
        try:
            return int(text)
        except ValueError:
            raise SettingsError(f"setting {spec.name} must be a whole number") from None
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise SettingsError(f"setting {spec.name} must be a number") from None
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(text.lower())
        except ValueError:
            raise SettingsError(f"setting {spec.name} must be {spec.kind}, got {text!r}") from None
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _check(s: Settings) -> None:
    if not 60 <= s.acs_token_lifetime_minutes <= 1440:
        raise SettingsError("setting ACS_TOKEN_LIFETIME_MINUTES must be between 60 and 1440")
    if not s.table_prefix.isalnum() or not s.table_prefix[:1].isalpha():
        raise SettingsError(
            "setting TABLE_PREFIX must be letters and digits, starting with a letter"
        )
    if s.apns_apps.strip():
        try:
            apps = json.loads(s.apns_apps)
        except ValueError:
            raise SettingsError("setting APNS_APPS must be a JSON list") from None
        if not isinstance(apps, list) or not apps:
            raise SettingsError("setting APNS_APPS must be a non-empty JSON list")
    if s.library_log_level.strip().upper() not in LOG_LEVELS:
        raise SettingsError(
            "setting LIBRARY_LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL"
        )
    if s.inbox_row_schema not in (1, 2):
        raise SettingsError("setting INBOX_ROW_SCHEMA must be 1 or 2")
    for name, value in (
        ("APNS_CONNECTIONS", s.apns_connections),
        ("RENEWAL_MAX_PER_HOUR", s.renewal_max_per_hour),
        ("RENEWAL_SHARD_SIZE", s.renewal_shard_size),
        ("PREVIEW_KEY_LIFETIME_MINUTES", s.preview_key_lifetime_minutes),
        ("MAX_REQUEST_BODY_BYTES", s.max_request_body_bytes),
        ("MAX_DEVICES_PER_USER", s.max_devices_per_user),
    ):
        if value < 1:
            raise SettingsError(f"setting {name} must be at least 1")


def load_settings(env: Mapping[str, str], *, require: bool = True) -> Settings:
    """Read every setting from ``env`` into a frozen :class:`Settings`.

    With ``require`` false, missing required settings are tolerated (tools and tests that need
    only part of the app). Raises :class:`SettingsError` naming the first bad or missing setting.
    """
    hints = get_type_hints(Settings)
    values: dict[str, object] = {}
    for spec in SETTINGS_TABLE:
        raw = env.get(spec.name)
        if raw is None or (raw.strip() == "" and spec.required):
            if spec.required and require:
                raise SettingsError(f"setting {spec.name} is required: {spec.meaning}")
            continue
        values[spec.attribute] = _parse(spec, raw, hints[spec.attribute])
    settings = Settings(**values)  # type: ignore[arg-type]
    _check(settings)
    return settings
