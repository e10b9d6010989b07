"""Preview keys at rest: AES-GCM wrapping, binding to the device, KEK rotation."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable

import pytest

from shared.domain.key_wrap import KeyUnwrapError, KeyWrapper, WrappedKey
from shared.errors import SettingsError

pytestmark = pytest.mark.unit

KEY = bytes(range(64))
OLD = base64.b64encode(b"\x01" * 32).decode()
NEW = base64.b64encode(b"\x02" * 32).decode()
USER = "8:acs:res_0001"
DEVICE = "ab" * 32


def counter_bytes() -> Callable[[int], bytes]:
    state = {"n": 0}

    def draw(n: int) -> bytes:
        state["n"] += 1
        return state["n"].to_bytes(n, "big")

    return draw


def wrapper(setting: str) -> KeyWrapper:
    return KeyWrapper.from_setting(setting, counter_bytes())


def test_a_wrapped_key_unwraps_to_the_original() -> None:
    kw = wrapper(f"k1={OLD}")
    wrapped = kw.wrap(KEY, user_id=USER, device_id=DEVICE)
    assert kw.unwrap(wrapped, user_id=USER, device_id=DEVICE) == KEY


def test_the_stored_text_round_trips_and_names_its_kek() -> None:
    kw = wrapper(f"k1={OLD}")
    text = kw.wrap(KEY, user_id=USER, device_id=DEVICE).to_text()
    assert text.startswith("k1:")
    assert kw.unwrap(WrappedKey.from_text(text), user_id=USER, device_id=DEVICE) == KEY


def test_the_stored_text_does_not_contain_the_key() -> None:
    text = wrapper(f"k1={OLD}").wrap(KEY, user_id=USER, device_id=DEVICE).to_text()
    assert base64.b64encode(KEY).decode() not in text
    assert KEY not in base64.b64decode(text.split(":", 1)[1])


def test_a_key_copied_to_another_device_does_not_unwrap() -> None:
    kw = wrapper(f"k1={OLD}")
    wrapped = kw.wrap(KEY, user_id=USER, device_id=DEVICE)
    with pytest.raises(KeyUnwrapError):
        kw.unwrap(wrapped, user_id=USER, device_id="cd" * 32)


def test_a_key_copied_to_another_user_does_not_unwrap() -> None:
    kw = wrapper(f"k1={OLD}")
    wrapped = kw.wrap(KEY, user_id=USER, device_id=DEVICE)
    with pytest.raises(KeyUnwrapError):
        kw.unwrap(wrapped, user_id="8:acs:res_0002", device_id=DEVICE)


def test_a_tampered_key_does_not_unwrap() -> None:
    kw = wrapper(f"k1={OLD}")
    wrapped = kw.wrap(KEY, user_id=USER, device_id=DEVICE)
    flipped = bytes([wrapped.sealed[0]]) + bytes([wrapped.sealed[1] ^ 1]) + wrapped.sealed[2:]
    with pytest.raises(KeyUnwrapError):
        kw.unwrap(WrappedKey("k1", flipped), user_id=USER, device_id=DEVICE)


def test_after_rotation_new_keys_use_the_first_kek_and_old_ones_still_unwrap() -> None:
    before = wrapper(f"k1={OLD}").wrap(KEY, user_id=USER, device_id=DEVICE)
    rotated = wrapper(f"k2={NEW}, k1={OLD}")
    assert rotated.wrap(KEY, user_id=USER, device_id=DEVICE).key_id == "k2"
    assert rotated.unwrap(before, user_id=USER, device_id=DEVICE) == KEY


def test_a_key_under_a_retired_kek_no_longer_unwraps() -> None:
    before = wrapper(f"k1={OLD}").wrap(KEY, user_id=USER, device_id=DEVICE)
    with pytest.raises(KeyUnwrapError, match="k1"):
        wrapper(f"k2={NEW}").unwrap(before, user_id=USER, device_id=DEVICE)


def test_nonces_are_not_reused_between_wraps() -> None:
    kw = wrapper(f"k1={OLD}")
    a = kw.wrap(KEY, user_id=USER, device_id=DEVICE)
    b = kw.wrap(KEY, user_id=USER, device_id=DEVICE)
    assert a.sealed[:12] != b.sealed[:12]
    assert a.sealed != b.sealed


@pytest.mark.parametrize(
    "setting",
    [
        "",
        "k1",
        "k1=notbase64!",
        f"k1={base64.b64encode(b'short').decode()}",
        f"k1={OLD},k1={NEW}",
        f"bad id={OLD}",
    ],
)
def test_a_malformed_kek_setting_is_refused(setting: str) -> None:
    with pytest.raises(SettingsError, match="KEY_ENCRYPTION_KEYS"):
        KeyWrapper.from_setting(setting)


@pytest.mark.parametrize("text", ["", "k1", "k1:!!!", "k1:AAAA", "bad id:AAAAAAAAAAAAAAAAAAAA"])
def test_malformed_stored_text_is_refused(text: str) -> None:
    with pytest.raises(KeyUnwrapError):
        WrappedKey.from_text(text)


def test_repr_shows_no_key_material(caplog: pytest.LogCaptureFixture) -> None:
    kw = wrapper(f"k1={OLD}")
    wrapped = kw.wrap(KEY, user_id=USER, device_id=DEVICE)
    logging.getLogger("test").warning("%r %r", kw, wrapped)
    assert OLD not in caplog.text
    assert base64.b64encode(wrapped.sealed).decode() not in caplog.text
    assert repr(wrapped.sealed) not in caplog.text
