"""Certificate auth: .p12 into an SSLContext, expiry exposed and warned about."""

from __future__ import annotations

import logging
import ssl
from datetime import timedelta

import pytest

from shared.apns.certificate import CertificateCredential, certificate_topic, load_p12
from shared.apns.errors import CredentialError
from tests.unit.apns.keys import new_p12, utc

pytestmark = pytest.mark.unit

NOW = utc(2026, 1, 1)


def test_p12_loads_into_an_h2_client_context() -> None:
    not_after = NOW + timedelta(days=200)
    data = new_p12("com.example.chat", not_after, b"secret")
    context, expiry = load_p12(data, b"secret", now=lambda: NOW)
    assert isinstance(context, ssl.SSLContext)
    assert expiry == not_after
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_p12_without_password_loads() -> None:
    data = new_p12("com.example.chat", NOW + timedelta(days=200), None)
    assert load_p12(data, None, now=lambda: NOW)[1] == NOW + timedelta(days=200)


def test_wrong_password_is_a_credential_error() -> None:
    data = new_p12("com.example.chat", NOW + timedelta(days=200), b"secret")
    with pytest.raises(CredentialError):
        load_p12(data, b"wrong", now=lambda: NOW)


def test_expiry_within_thirty_days_is_warned(caplog: pytest.LogCaptureFixture) -> None:
    data = new_p12("com.example.chat", NOW + timedelta(days=29), None)
    with caplog.at_level(logging.WARNING, logger="shared.apns.certificate"):
        load_p12(data, None, now=lambda: NOW)
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "com.example.chat" in caplog.records[0].getMessage()


def test_distant_expiry_is_not_warned(caplog: pytest.LogCaptureFixture) -> None:
    data = new_p12("com.example.chat", NOW + timedelta(days=31), None)
    with caplog.at_level(logging.WARNING, logger="shared.apns.certificate"):
        load_p12(data, None, now=lambda: NOW)
    assert caplog.records == []


def test_expired_certificate_is_logged_as_error(caplog: pytest.LogCaptureFixture) -> None:
    data = new_p12("com.example.chat", NOW - timedelta(days=1), None)
    with caplog.at_level(logging.WARNING, logger="shared.apns.certificate"):
        load_p12(data, None, now=lambda: NOW)
    assert [r.levelno for r in caplog.records] == [logging.ERROR]


def test_certificate_topic_is_the_subject_uid() -> None:
    data = new_p12("com.example.chat", NOW + timedelta(days=100), b"pw")
    assert certificate_topic(data, b"pw") == "com.example.chat"


def test_missing_ca_file_is_a_credential_error() -> None:
    data = new_p12("com.example.chat", NOW + timedelta(days=100), None)
    with pytest.raises(CredentialError):
        load_p12(data, None, ca_file="/nonexistent/ca.pem", now=lambda: NOW)


def test_password_never_appears_in_repr() -> None:
    credential = CertificateCredential(b"\x30\x82", b"hunter2")
    assert "hunter2" not in repr(credential)
