"""Render the settings table (``shared.settings.SETTINGS_TABLE``) for people.

``python -m devtools.settings_doc`` prints the README's settings table, so the README never
drifts from the code (a test compares them); ``--sample`` prints ``local.settings.sample.json``.
"""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Iterable

from shared.settings import SETTINGS_TABLE, SettingSpec

# Settings the local run fills in itself; the sample leaves them empty on purpose.
GENERATED = {"KEY_ENCRYPTION_KEYS", "APNS_APPS"}
# The ACS resource id the sample events (tests/samples, Microsoft's documented examples) carry
# as their topic/source, so that the local run acts on them.
SAMPLES_ACS_RESOURCE_ID = (
    "/subscriptions/{subscription-id}/resourceGroups/{group-name}/providers/"
    "Microsoft.Communication/communicationServices/{communication-services-resource-name}"
)
# The Functions host's own settings in local.settings.json, not the app's. Under Core Tools the
# worker's bundled azure-functions (1.22-1.24) is loaded before ours unless dependencies are
# isolated, and CloudEvent decoding arrived in 1.25: without it a CloudEvents-schema event
# reaches the app with no type and is dropped as malformed.
HOST_VALUES = {
    "FUNCTIONS_WORKER_RUNTIME": "python",
    "PYTHON_ISOLATE_WORKER_DEPENDENCIES": "1",
}
LOCAL_VALUES = {
    "ACS_RESOURCE_ID": SAMPLES_ACS_RESOURCE_ID,
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "STORAGE_CONNECTION": "UseDevelopmentStorage=true",
}


def default_text(spec: SettingSpec) -> str:
    """A setting's default written as the string an app setting holds."""
    value = spec.default
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    return "" if value is None else str(value)


def defaults() -> dict[str, str]:
    """Every setting's default as app-setting text (empty strings included)."""
    return {spec.name: default_text(spec) for spec in SETTINGS_TABLE}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Iterable[SettingSpec] = SETTINGS_TABLE) -> str:
    """The README's settings table (Markdown), one row per setting, in declaration order."""
    lines = [
        "| setting | type | default | secret | required | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for spec in rows:
        default = default_text(spec)
        lines.append(
            "| "
            + " | ".join(
                [
                    f"`{spec.name}`",
                    _cell(spec.kind),
                    f"`{_cell(default)}`" if default else "",
                    "yes" if spec.secret else "",
                    "yes" if spec.required else "",
                    _cell(spec.meaning),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def sample_settings() -> dict[str, object]:
    """The content of ``local.settings.sample.json``: every setting, local values filled in."""
    values: dict[str, str] = dict(HOST_VALUES)
    for spec in SETTINGS_TABLE:
        if spec.name in LOCAL_VALUES:
            values[spec.name] = LOCAL_VALUES[spec.name]
        elif spec.name in GENERATED:
            values[spec.name] = ""
        else:
            values[spec.name] = default_text(spec)
    return {
        "IsEncrypted": False,
        "Values": values,
        "Host": {"LocalHttpPort": 7071, "CORS": "*"},
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--sample" in args:
        sys.stdout.write(json.dumps(sample_settings(), indent=2) + "\n")
    else:
        sys.stdout.write(markdown_table() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
