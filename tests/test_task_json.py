"""The worker's decoder of JSON task bodies (portal.celery.decode_json): the values kombu's own
decoder gives, for every body, through kombu's registry as Celery calls it."""

from __future__ import annotations

import datetime
import decimal
import uuid
import zlib

import orjson
import pytest
from kombu import serialization
from kombu.utils import json as kombu_json

from portal.celery import _long_integer, decode_json

EVENT = {
    "request_id": "req_0123456789abcdef",
    "account": 1,
    "key": 2,
    "model": "gpt-4o",
    "cost": "0.000692500",
    "started_at": 1733350000.123456,
    "ttfb_ms": None,
    "estimated": False,
    "attempts": [["demo", "gpt-4o", "timeout"]],
}

BODIES = [
    # A usage batch as the relay sends it (orjson, no markers).
    orjson.dumps([[[EVENT, dict(EVENT, request_id="req_2")]], {}, {"callbacks": None}]),
    # kombu's own encoding of datetimes, decimals and UUIDs: markers the hook turns back.
    kombu_json.dumps(
        [
            [datetime.datetime(2026, 12, 4, 22, 0, tzinfo=datetime.UTC)],
            {"amount": decimal.Decimal("12.50"), "id": uuid.UUID(int=7)},
            {},
        ]
    ).encode(),
    # A marker's key behind escapes: still a marker.
    b'{"\\u005f_type__": "decimal", "__value__": "1.5"}',
    # Non-ASCII as kombu writes it (escaped) and as orjson writes it (UTF-8).
    kombu_json.dumps({"name": "Jos\u00e9 \U0001f600"}).encode(),
    orjson.dumps({"name": "Jos\u00e9 \U0001f600"}),
    # What orjson refuses and the standard library reads.
    b'{"big": 123456789012345678901234567890, "nan": NaN, "inf": -Infinity}',
    b'[1.5e300, 1e400, -0.0, 0.1, 1e-7, true, false, null, "", {}]',
    b'{"a": 1, "a": 2}',
    # Integers beyond 64 bits (orjson would read floats), wherever a number can start.
    b'{"n": 12345678901234567890123}',
    b"[-9223372036854775809]",
    b"[1, \n 99999999999999999999]",
    b"  -99999999999999999999",
    # Long digit runs that are no integer: in strings, a fraction, an exponent.
    b'{"id": "req_1234567890123456789012", "note": "at:1234567890123456789012"}',
    b"[1.12345678901234567890123, 1e0000000000000000001, 18446744073709551615]",
]


def _same(a: object, b: object) -> bool:
    # NaN is not equal to itself: compare the shapes by repr.
    return repr(a) == repr(b)


@pytest.mark.parametrize("body", BODIES)
def test_decodes_as_kombu_does(body: bytes) -> None:
    expected = kombu_json.loads(body)
    assert _same(decode_json(body), expected)
    assert _same(decode_json(body.decode()), expected)
    assert _same(decode_json(memoryview(body)), expected)
    assert _same(decode_json(bytearray(body)), expected)


def test_markers_still_become_values() -> None:
    body = kombu_json.dumps({"when": datetime.date(2026, 12, 4), "n": decimal.Decimal("3.10")})
    assert decode_json(body.encode()) == {
        "when": datetime.date(2026, 12, 4),
        "n": decimal.Decimal("3.10"),
    }


@pytest.mark.parametrize("body", [b"{", b'{"a": 1} x', b"\xff\xfe", b'{"a": "\xc3"}'])
def test_bad_bodies_fail_as_kombu_fails(body: bytes) -> None:
    with pytest.raises(Exception) as kombu_error:
        kombu_json.loads(body)
    with pytest.raises(type(kombu_error.value)):
        decode_json(body)


def test_registered_for_application_json_and_the_encoder_unchanged() -> None:
    """What a worker runs: kombu's registry, with a compressed body as the relay sends it."""
    body = orjson.dumps([[[EVENT]], {}, {}])
    assert serialization.loads(
        zlib.decompress(zlib.compress(body)), "application/json", "utf-8"
    ) == [[[EVENT]], {}, {}]
    content_type, encoding, encoded = serialization.dumps({"x": 1}, serializer="json")
    assert (content_type, encoding) == ("application/json", "utf-8")
    assert encoded == kombu_json.dumps({"x": 1})


@pytest.mark.parametrize(
    ("body", "long"),
    [
        (b'{"n": 1234567890123456789}', True),
        (b'{"n":-1234567890123456789}', True),
        (b"[0,\t1234567890123456789]", True),
        (b"1234567890123456789", True),
        (b'{"n": 123456789012345678}', False),  # 18 digits: within 64 bits
        (b'{"id": "req_e1234567890123456789aa"}', False),
        (b'{"x": 0.12345678901234567890}', False),
        (b'{"x": 1e1234567890123456789}', False),
    ],
)
def test_long_integers_are_found_where_a_number_starts(body: bytes, long: bool) -> None:
    assert _long_integer(body) is long
