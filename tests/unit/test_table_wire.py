"""shared.storage.table_wire: signing, URLs, values, batches and errors, byte for byte.

Known answers come from outside our code: signatures computed with ``openssl dgst -sha256 -mac
HMAC`` over strings built by hand from the documented Shared Key rules, and requests the
azure-data-tables SDK 12.7 sent (captured off the wire against a local server, Azurite's public
development key), which work against the real service.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.storage import table_wire as wire
from shared.storage.table_client import DEVELOPMENT_KEY, SharedKey

pytestmark = pytest.mark.unit

# --- signing: the documented algorithm, computed with openssl -------------------------------------

# printf 'pushrelay-known-answer-key-32by!' | base64
KEY_B64 = "cHVzaHJlbGF5LWtub3duLWFuc3dlci1rZXktMzJieSE="
DATE = "Sun, 11 Oct 2009 21:49:13 GMT"


def test_the_shared_key_string_is_verb_md5_type_date_resource() -> None:
    text = wire.shared_key_string("PUT", "application/json", DATE, "/myaccount/t()")
    assert text == "PUT\n\napplication/json\nSun, 11 Oct 2009 21:49:13 GMT\n/myaccount/t()"


def test_shared_key_signature_matches_openssl() -> None:
    # printf 'GET\n\n\nSun, 11 Oct 2009 21:49:13 GMT\n/myaccount/mytable()' | openssl dgst
    #   -sha256 -mac HMAC -macopt 'key:pushrelay-known-answer-key-32by!' -binary | base64
    text = wire.shared_key_string("GET", "", DATE, "/myaccount/mytable()")
    key = base64.b64decode(KEY_B64)
    assert wire.signature(key, text) == "Riy4mttyCnH8daqZQ0hWiwDeoU4z6iPiFQWo+jB0TC8="


def test_shared_key_lite_signature_matches_openssl() -> None:
    # printf 'Sun, 11 Oct 2009 21:49:13 GMT\n/myaccount/mytable()' | openssl dgst ... | base64
    text = wire.shared_key_lite_string(DATE, "/myaccount/mytable()")
    key = base64.b64decode(KEY_B64)
    assert wire.signature(key, text) == "enX8lSOen/x6wyLWUrnDPDASsqpWLp2dOClWABXUFIM="


def test_the_canonical_resource_is_the_account_then_the_encoded_path() -> None:
    # Path-style (Azurite) URLs carry the account in the path as well: it appears twice.
    path = "/devstoreaccount1/t(PartitionKey='a%7Cb',RowKey='1')"
    assert wire.canonical_resource("devstoreaccount1", path) == "/devstoreaccount1" + path


# --- signing: what the SDK sent -------------------------------------------------------------------

ODD_PK = "m|8:acs:ab%2Fc|19:x@thread.v2 é'q~!*()"
ODD_RK = "row's #1"
# The path azure-data-tables 12.7 put on the wire for these keys (its aiohttp transport).
SDK_PATH = (
    "/devstoreaccount1/mytable(PartitionKey='m%7C8:acs:ab%252Fc%7C19:x@thread.v2%20%C3%A9''q~!*()',"
    "RowKey='row''s%20%231')"
)
SDK_DATE = "Wed, 02 Dec 2026 14:24:21 GMT"


def _authorize(method: str, content_type: str, path: str) -> str:
    auth = SharedKey("devstoreaccount1", DEVELOPMENT_KEY)
    return asyncio.run(auth.authorization(method, content_type, SDK_DATE, path))


@pytest.mark.parametrize(
    ("method", "content_type", "path", "sdk_signature"),
    [
        ("GET", "", SDK_PATH, "o533TNaLvMiqVCEu3dXaShum/4UXu+BkLhfbWV+Yfd0="),
        ("PATCH", "application/json", SDK_PATH, "/hquAAsG/jlBKP0T9L7Zub4xmvcmROQ1ZhEjow5pGSY="),
        ("PUT", "application/json", SDK_PATH, "o2hu7w33tNJkVQgLsFzS6kOOBlTw17OCrESiZhjJwYI="),
        ("DELETE", "", SDK_PATH, "35j1MZssDemjTyMf2RBWkbDMzRkjeAXAKyJjL2OCoPE="),
        ("GET", "", "/devstoreaccount1/mytable()", "CClJKuE1V1xaIMG9Ap9sYQjskxUe7l+Ru5kWol1oOxw="),
        (
            "POST",
            "application/json;odata=nometadata",
            "/devstoreaccount1/mytable",
            "NhV28OpB/v93zxCzEq8xmqsfz+vMCFXeM0svflQpQKc=",
        ),
        (
            "POST",
            "application/json;odata=nometadata",
            "/devstoreaccount1/Tables",
            "98jDxmwOo/3mPx44dngtcvylTu12HrZbsnm0Nmty7ZQ=",
        ),
    ],
)
def test_our_signer_reproduces_the_sdks_authorization(
    method: str, content_type: str, path: str, sdk_signature: str
) -> None:
    assert _authorize(method, content_type, path) == f"SharedKey devstoreaccount1:{sdk_signature}"


def test_keys_are_escaped_in_the_path_as_the_sdk_sends_them() -> None:
    assert "/devstoreaccount1/" + wire.entity_path("mytable", ODD_PK, ODD_RK) == SDK_PATH


@given(st.text())
def test_every_key_is_quoted_as_urllib_quotes_it_with_the_sdks_safe_characters(key: str) -> None:
    # The fast paths (nothing to escape; ASCII through one translate table) agree with
    # urllib.parse.quote over the same safe set, which the SDK's wire format follows.
    assert wire.quote_key(key) == quote(key.replace("'", "''"), safe="!$&'()*,;=:@")


def test_a_filter_is_encoded_as_the_sdk_sends_it() -> None:
    text = wire.substitute("PartitionKey eq @pk and RowKey ge @lo", {"pk": ODD_PK, "lo": "a'b"})
    query = wire.query_string(text, select=["RowKey", "x"], top=5)
    assert query == (
        "?$top=5&$select=RowKey,x&$filter=PartitionKey%20eq%20"
        "'m%7C8:acs:ab%252Fc%7C19:x@thread.v2%20%C3%A9''q~!*()'%20and%20RowKey%20ge%20'a''b'"
    )


def test_continuation_tokens_are_passed_back_encoded() -> None:
    query = wire.query_string("PartitionKey eq 'p'", continuation=("1!8!cA--", "a+b/c="))
    assert query.endswith("&NextPartitionKey=1%218%21cA--&NextRowKey=a%2Bb%2Fc%3D")


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("it's", "'it''s'"),
        (7, "7"),
        (2**31, "2147483648L"),
        (True, "true"),
        (datetime(2024, 5, 1, 12, 0, tzinfo=UTC), "datetime'2024-05-01T12:00:00.000000Z'"),
        (uuid.UUID(int=1), "guid'00000000-0000-0000-0000-000000000001'"),
        (b"\x01\xff", "X'01ff'"),
    ],
)
def test_filter_parameters_become_odata_literals(value: object, literal: str) -> None:
    assert wire.substitute("x eq @v", {"v": value}) == f"x eq {literal}"


def test_a_parameter_value_is_never_substituted_again() -> None:
    assert wire.substitute("a eq @a and b eq @b", {"a": "@b", "b": "x"}) == "a eq '@b' and b eq 'x'"


def test_a_missing_parameter_is_an_error() -> None:
    with pytest.raises(KeyError):
        wire.substitute("a eq @a", {"b": 1})


# --- values ---------------------------------------------------------------------------------------


def test_values_json_cannot_type_are_annotated() -> None:
    body = json.loads(
        wire.encode_entity(
            {
                "PartitionKey": "p",
                "RowKey": "r",
                "small": 7,
                "big": 2**40,
                "explicit": wire.Typed(5, "Edm.Int64"),
                "at": datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2))),
                "blob": b"\x00\x01",
                "id": uuid.UUID(int=2),
                "ratio": 2.0,
                "flag": True,
                "gone": None,
            }
        )
    )
    assert body == {
        "PartitionKey": "p",
        "RowKey": "r",
        "small": 7,
        "big": "1099511627776",
        "big@odata.type": "Edm.Int64",
        "explicit": "5",
        "explicit@odata.type": "Edm.Int64",
        "at": "2024-01-02T01:04:05.678901Z",
        "at@odata.type": "Edm.DateTime",
        "blob": "AAE=",
        "blob@odata.type": "Edm.Binary",
        "id": "00000000-0000-0000-0000-000000000002",
        "id@odata.type": "Edm.Guid",
        "ratio": 2.0,
        "ratio@odata.type": "Edm.Double",
        "flag": True,
    }


def test_enums_are_stored_as_their_values() -> None:
    from shared.storage.tables import UpdateMode

    assert json.loads(wire.encode_entity({"mode": UpdateMode.MERGE})) == {"mode": "merge"}


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (datetime(2024, 1, 1), ValueError),
        (2**63, ValueError),
        (wire.Typed(2**31, "Edm.Int32"), ValueError),
        ([1, 2], TypeError),
        (wire.Typed(1, "Edm.Nonsense"), ValueError),
    ],
)
def test_values_table_storage_cannot_hold_are_refused(value: object, error: type) -> None:
    with pytest.raises(error):
        wire.encode_entity({"x": value})


def test_non_finite_doubles_are_sent_as_the_documented_strings() -> None:
    body = json.loads(wire.encode_entity({"a": float("nan"), "b": float("-inf")}))
    assert (body["a"], body["b"], body["b@odata.type"]) == ("NaN", "-Infinity", "Edm.Double")


# What Azurite answered to a point read of an entity the SDK wrote (minimal metadata).
AZURITE_ENTITY = (
    b'{"odata.metadata":"http://127.0.0.1:55355/devstoreaccount1/$metadata#mytable/@Element",'
    b'"odata.etag":"W/\\"datetime\'2026-12-02T14%3A24%3A54.2805855Z\'\\"",'
    b'"PartitionKey":"m|8:acs:ab%2Fc|19:x@thread.v2~!","RowKey":"row-1","a":1,"f":1.5,'
    b'"g":2.0,"big@odata.type":"Edm.Int64","big":"1099511627776","d@odata.type":"Edm.DateTime",'
    b'"d":"2024-01-02T03:04:05.678901Z","b@odata.type":"Edm.Binary","b":"AAE=","t":true,'
    b'"u":"h\xc3\xa9llo","Timestamp":"2026-12-02T14:24:54.2805855Z"}'
)


def test_a_read_entity_gets_its_types_back_and_its_metadata_apart() -> None:
    entity = wire.decode_entity(json.loads(AZURITE_ENTITY))
    assert dict(entity) == {
        "PartitionKey": "m|8:acs:ab%2Fc|19:x@thread.v2~!",
        "RowKey": "row-1",
        "a": 1,
        "f": 1.5,
        "g": 2.0,
        "big": 2**40,
        "d": datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        "b": b"\x00\x01",
        "t": True,
        "u": "héllo",
    }
    assert entity.metadata == {
        "etag": "W/\"datetime'2026-12-02T14%3A24%3A54.2805855Z'\"",
        "timestamp": "2026-12-02T14:24:54.2805855Z",
    }


def test_the_services_seven_digit_times_and_guids_read_back() -> None:
    # The shape of the Query Entities example in Microsoft's REST reference.
    entity = wire.decode_entity(
        {
            "odata.etag": "W/\"datetime'2013-08-22T00%3A20%3A16.3134645Z'\"",
            "PartitionKey": "mypartitionkey",
            "RowKey": "myrowkey",
            "Timestamp": "2013-08-22T00:20:16.3134645Z",
            "CustomerCode@odata.type": "Edm.Guid",
            "CustomerCode": "c9da6455-213d-42c9-9a79-3e9149a57833",
            "CustomerSince@odata.type": "Edm.DateTime",
            "CustomerSince": "2008-07-10T00:00:00Z",
            "AmountDue": 200.23,
        }
    )
    assert entity["CustomerCode"] == uuid.UUID("c9da6455-213d-42c9-9a79-3e9149a57833")
    assert entity["CustomerSince"] == datetime(2008, 7, 10, tzinfo=UTC)
    assert "Timestamp" not in entity


def test_values_round_trip_through_the_wire_format() -> None:
    original = {
        "PartitionKey": "p",
        "RowKey": "r",
        "n": -(2**62),
        "at": datetime(2030, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        "raw": bytes(range(256)),
        "id": uuid.uuid4(),
        "x": 0.1,
        "s": "",
    }
    assert dict(wire.decode_entity(json.loads(wire.encode_entity(original)))) == original


# --- batches --------------------------------------------------------------------------------------


def test_a_changeset_is_encoded_as_the_sdk_encodes_it() -> None:
    requests = [
        wire.SubRequest("POST", "t", (("Accept", wire.MINIMAL_METADATA),), b'{"a":1}'),
        wire.SubRequest("DELETE", "t(PartitionKey='p',RowKey='2')", (("If-Match", "*"),), b""),
    ]
    content_type, body = wire.encode_batch("http://h/acct", requests, boundary="B")
    assert content_type == "multipart/mixed; boundary=batch_B"
    assert body == (
        b"--batch_B\r\nContent-Type: multipart/mixed; boundary=changeset_B\r\n\r\n"
        b"--changeset_B\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
        b"Content-ID: 0\r\n\r\nPOST http://h/acct/t HTTP/1.1\r\n"
        b"Accept: application/json;odata=minimalmetadata\r\nContent-Type: application/json\r\n"
        b'Content-Length: 7\r\n\r\n{"a":1}\r\n'
        b"--changeset_B\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
        b"Content-ID: 1\r\n\r\nDELETE http://h/acct/t(PartitionKey='p',RowKey='2') HTTP/1.1\r\n"
        b"If-Match: *\r\n\r\n\r\n"
        b"--changeset_B--\r\n\r\n--batch_B--\r\n"
    )


# Azurite's answers to the SDK's transactions (captured), and the failure shape of the REST docs.
OK_ANSWER = (
    b"--batchresponse_67fd\r\nContent-Type: multipart/mixed; boundary=changesetresponse_3244\r\n"
    b"\r\n--changesetresponse_3244\r\nContent-Type: application/http\r\n"
    b"Content-Transfer-Encoding: binary\r\n\r\nHTTP/1.1 201 Created\r\n"
    b"X-Content-Type-Options: nosniff\r\nCache-Control: no-cache\r\nDataServiceVersion: 3.0;\r\n"
    b"Location: http://127.0.0.1:35037/devstoreaccount1/mytable(PartitionKey='p',RowKey='1')\r\n"
    b"ETag: W/\"datetime'2026-12-02T14%3A24%3A54.3196254Z'\"\r\n\r\n\r\n"
    b"--changesetresponse_3244\r\nContent-Type: application/http\r\n"
    b"Content-Transfer-Encoding: binary\r\n\r\nHTTP/1.1 204 No Content\r\n"
    b"ETag: W/\"datetime'2026-12-02T14%3A24%3A54.3196259Z'\"\r\n\r\n\r\n"
    b"--changesetresponse_3244\r\nContent-Type: application/http\r\n"
    b"Content-Transfer-Encoding: binary\r\n\r\nHTTP/1.1 204 No Content\r\n"
    b"DataServiceVersion: 1.0;\r\n\r\n\r\n"
    b"--changesetresponse_3244--\r\n--batchresponse_67fd--\r\n"
)
FAILED_ANSWER = (
    b"--batchresponse_cb87\r\nContent-Type: multipart/mixed; boundary=changesetresponse_fde9\r\n"
    b"\r\n--changesetresponse_fde9\r\nContent-Type: application/http\r\n"
    b"Content-Transfer-Encoding: binary\r\n\r\nHTTP/1.1 409 Conflict\r\nContent-ID: 2\r\n"
    b"DataServiceVersion: 3.0;\r\n"
    b"Content-Type: application/json;odata=minimalmetadata;charset=utf-8\r\n\r\n"
    b'{"odata.error":{"code":"EntityAlreadyExists","message":{"lang":"en-US",'
    b'"value":"1:The specified entity already exists.\\nRequestId:e430ef15\\nTime:2026-12-02"}}}'
    b"\r\n--changesetresponse_fde9--\r\n--batchresponse_cb87--\r\n"
)


def test_a_transactions_answers_are_read_in_order_with_their_etags() -> None:
    parts = wire.decode_batch("multipart/mixed; boundary=batchresponse_67fd", OK_ANSWER)
    assert [p.status for p in parts] == [201, 204, 204]
    assert parts[0].headers["etag"] == "W/\"datetime'2026-12-02T14%3A24%3A54.3196254Z'\""
    assert "etag" not in parts[2].headers


def test_a_failed_transaction_names_the_operation_that_failed() -> None:
    (part,) = wire.decode_batch("multipart/mixed; boundary=batchresponse_cb87", FAILED_ANSWER)
    error = wire.parse_error(part.body)
    assert (part.status, error.code) == (409, "EntityAlreadyExists")
    assert error.message == "1:The specified entity already exists."
    assert wire.failed_index(error.message) == 1


def test_a_batch_answer_without_a_boundary_is_malformed() -> None:
    with pytest.raises(ValueError):
        wire.decode_batch("multipart/mixed", OK_ANSWER)


# --- errors ---------------------------------------------------------------------------------------


def test_an_error_body_gives_its_code_and_first_message_line() -> None:
    body = (
        b'{"odata.error":{"code":"UpdateConditionNotSatisfied","message":{"lang":"en-US",'
        b'"value":"The update condition specified in the request was not satisfied.\\n'
        b'RequestId:cb10\\nTime:2026-12-02T14:24:54.297Z"}}}'
    )
    assert wire.parse_error(body) == (
        "UpdateConditionNotSatisfied",
        "The update condition specified in the request was not satisfied.",
    )


def test_an_xml_error_body_falls_back_to_the_error_code_header() -> None:
    body = b"<?xml version='1.0'?><Error><Code>AuthorizationFailure</Code></Error>"
    assert wire.parse_error(body, "AuthorizationFailure").code == "AuthorizationFailure"
