"""Importing function_app is cheap: no settings, no network, no heavy SDKs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("azure.data.tables", "httpx", "cryptography")

# Runs in a fresh interpreter with no app settings in its environment and every way of opening
# a connection or resolving a name replaced by one that fails the import.
PROBE = """
import json, socket, sys

def no_network(*args, **kwargs):
    raise RuntimeError("importing function_app tried to use the network")

socket.socket.connect = no_network
socket.socket.connect_ex = no_network
socket.create_connection = no_network
socket.getaddrinfo = no_network

import function_app

loaded_after_import = sorted(sys.modules)
names = [f.get_function_name() for f in function_app.app.get_functions()]
print(json.dumps({"import": loaded_after_import, "index": sorted(sys.modules), "names": names}))
"""


def _probe() -> dict[str, list[str]]:
    settings_free_env = {
        k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "SYSTEMROOT")
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO,
        env=settings_free_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, list[str]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def probe() -> dict[str, list[str]]:
    return _probe()


def _heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]


def test_import_needs_no_settings_and_no_network(probe: dict[str, list[str]]) -> None:
    assert "function_app" in probe["import"]


def test_import_loads_neither_tables_httpx_nor_cryptography(probe: dict[str, list[str]]) -> None:
    assert _heavy(probe["import"]) == []


def test_indexing_the_functions_loads_none_of_them_either(probe: dict[str, list[str]]) -> None:
    assert _heavy(probe["index"]) == []


# What the storage side of a first invocation loads: the adapters and a connected lean client.
STORAGE_PROBE = """
import json, sys
from shared.storage import deliveries, devices, identities, registry_purge, renewal_schedule
from shared.storage import inbox, renewal_sweeps, token_proofs
from shared.storage.tables import Tables

tables = Tables.connect("UseDevelopmentStorage=true", "probe")
print(json.dumps(sorted(sys.modules)))
"""
SDK_STACK = ("aiohttp", "azure.data.tables", "azure.core", "yarl", "multidict")


def test_the_storage_adapters_on_the_lean_client_load_neither_aiohttp_nor_the_sdk() -> None:
    done = subprocess.run(
        [sys.executable, "-c", STORAGE_PROBE],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    assert [m for m in loaded if any(m == s or m.startswith(s + ".") for s in SDK_STACK)] == []
