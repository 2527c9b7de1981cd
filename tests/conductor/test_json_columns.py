"""JSON columns are read (``conductor.db.engine.json_value``, both drivers) exactly as the
standard library reads their UTF-8 text, whichever JSON library does the work: the same
values (1 and 1.0, long integers, -0.0 told apart), the same errors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings

from conductor.db.engine import json_text, json_value
from tests.transport.test_wire_codec import _bodies, _values


def _reference(text: str) -> Any:
    return json.JSONDecoder().decode(text)


def _outcome(read: Any, data: Any) -> tuple[str, str]:
    try:
        return "value", repr(read(data))  # repr tells apart what == does not
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError alike
        return type(exc).__name__, str(exc)


def _check(body: bytes) -> None:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        expected = (type(exc).__name__, str(exc))
    else:
        expected = _outcome(_reference, text)
        assert _outcome(json_value, text) == expected  # SQLite gives the text
    assert _outcome(json_value, body) == expected  # psycopg gives the bytes
    assert _outcome(json_value, memoryview(body)) == expected


@settings(max_examples=1500, deadline=None)
@given(_bodies | _values.map(lambda v: json.dumps(v).encode("utf-8", "surrogatepass")))
def test_a_json_column_reads_what_the_stdlib_reads_or_fails_alike(body: bytes) -> None:
    _check(body)


@pytest.mark.parametrize(
    "body",
    [
        b"18446744073709551616",
        b"[18446744073709551615, -9223372036854775809]",
        b'{"a":123456789012345678,"b":1}',  # 19 digits in all
        b'{"a":12345678901234567,"b":1}',
        b"[1e400, 2e308, 5e-325, 4.9e-324, -0.0, 0.30000000000000004]",
        b'["\\ud800", "\\ud83d\\ude00", "\\u0000", "\x7f"]',
        b'{"a":1,"b":2,"a":3}',
        b" [1] \n",
        b"\xef\xbb\xbf[1]",
        b"NaN",
        b"[1,]",
        b'["\xff"]',
        b"",
    ],
)
def test_edges_of_what_orjson_reads_go_the_stdlibs_way(body: bytes) -> None:
    _check(body)


@settings(max_examples=300, deadline=None)
@given(_values)
def test_what_we_store_reads_back_as_the_stdlib_reads_it(value: Any) -> None:
    try:
        text = json_text(value)
    except Exception:  # noqa: BLE001 - not storable: nothing to read
        return
    assert repr(json_value(text)) == repr(_reference(text))
    assert repr(json_value(text.encode())) == repr(_reference(text))


def test_numbers_sqlite_gives_back_as_numbers_are_their_own_value() -> None:
    assert json_value(5) == 5 and type(json_value(5)) is int
    assert json_value(2.5) == 2.5
    assert json_value(True) is True


def test_a_text_with_a_lone_surrogate_is_the_stdlibs_to_read() -> None:
    text = '["\ud800", 1]'
    assert repr(json_value(text)) == repr(_reference(text))
