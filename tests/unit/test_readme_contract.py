"""The README and local.settings.sample.json agree with the settings table and the scripts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from devtools.settings_doc import GENERATED, markdown_table, sample_settings
from shared.settings import SETTINGS_TABLE, load_settings

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.M | re.S)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def _table_block() -> str:
    match = re.search(
        r"<!-- settings-table:start -->\n(.*?)\n<!-- settings-table:end -->", README, re.S
    )
    assert match, "README has no settings-table markers"
    return match.group(1).strip()


def test_readme_settings_table_is_the_one_printed_from_the_code() -> None:
    assert _table_block() == markdown_table(), (
        "README settings table drifted: regenerate it with "
        "`.venv/bin/python -m devtools.settings_doc`"
    )


def test_readme_settings_table_names_every_setting_once() -> None:
    names = re.findall(r"^\| `([^`]+)` \|", _table_block(), re.M)

    assert names == [spec.name for spec in SETTINGS_TABLE]


def test_quickstart_has_exactly_the_two_commands() -> None:
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", _section("Quickstart"), re.S)
    commands = [line.strip() for block in blocks for line in block.splitlines() if line.strip()]

    assert commands == ["bash scripts/run-local.sh", "bash scripts/test.sh"]
    assert (REPO / "scripts" / "run-local.sh").is_file()
    assert (REPO / "scripts" / "test.sh").is_file()


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")

    assert re.search(r"^bash scripts/test\.sh$", ci, re.M)


def test_readme_says_the_local_host_is_for_development_and_keeps_func_start() -> None:
    assert "local development host" in README.lower()
    assert "`func start`" in README


def test_sample_settings_list_exactly_the_settings_table() -> None:
    sample = json.loads((REPO / "local.settings.sample.json").read_text(encoding="utf-8"))

    names = set(sample["Values"]) - {
        "FUNCTIONS_WORKER_RUNTIME",
        "PYTHON_ISOLATE_WORKER_DEPENDENCIES",
    }
    assert names == {spec.name for spec in SETTINGS_TABLE}
    assert sample["Values"]["FUNCTIONS_WORKER_RUNTIME"] == "python"


def test_sample_settings_isolate_the_workers_own_azure_functions() -> None:
    # Core Tools' worker bundles azure-functions 1.22-1.24, which cannot decode CloudEvents.
    sample = json.loads((REPO / "local.settings.sample.json").read_text(encoding="utf-8"))

    assert sample["Values"]["PYTHON_ISOLATE_WORKER_DEPENDENCIES"] == "1"


def test_sample_settings_file_is_the_generated_one() -> None:
    sample = json.loads((REPO / "local.settings.sample.json").read_text(encoding="utf-8"))

    assert sample == sample_settings(), (
        "local.settings.sample.json drifted: regenerate it with "
        "`.venv/bin/python -m devtools.settings_doc --sample > local.settings.sample.json`"
    )


def test_sample_settings_load_once_the_generated_ones_are_filled_in() -> None:
    values = dict(sample_settings()["Values"])  # type: ignore[call-overload]
    assert {name for name in GENERATED if values[name]} == set()
    values["KEY_ENCRYPTION_KEYS"] = "k1=" + "A" * 43 + "="
    values["APNS_APPS"] = '[{"bundleId": "com.example.app"}]'

    settings = load_settings(values)

    assert settings.storage_connection == "UseDevelopmentStorage=true"
    assert settings.queue_connection == "UseDevelopmentStorage=true"


def test_the_dead_letter_replay_keeps_the_function_key_out_of_urls_and_arguments() -> None:
    """A key in a URL or a command-line argument ends up in process lists and shell history."""
    guide = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    replay = guide[guide.index("**Replay**") :]
    sketch = replay[replay.index("```bash") : replay.index("```", replay.index("```bash") + 3)]
    assert "code=" not in sketch and "$key" not in sketch
    assert "-H @" in sketch and "x-functions-key: " in sketch
