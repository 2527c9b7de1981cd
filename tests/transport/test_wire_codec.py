"""The wire codec (``transport._wire.encode``/``decode``) behaves exactly like the
standard library's JSON with ``allow_nan=False`` on the way out and strict UTF-8 on the
way in, whatever JSON library does the work: same values, same refusals, same error types.
"""

from __future__ import annotations

import datetime
import enum
import json
import math
import uuid
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transport import _wire
from transport.exceptions import MessageDeliveryFailure, MessageTooLarge

_reference_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _reference_encode(value: Any) -> bytes | None:
    """What the stdlib encoder writes for ``value``, None when it refuses it."""
    try:
        return _reference_encoder.encode(value).encode("utf-8")
    except (TypeError, ValueError, RecursionError):
        return None


def _reference_decode(body: bytes) -> Any:
    """What the stdlib decoder reads from ``body`` (ValueError when it refuses it)."""
    return json.JSONDecoder().decode(body.decode("utf-8"))


def _strict(value: Any) -> str:
    """A text that tells apart what ``==`` does not: 1 and 1.0 and True, 0.0 and -0.0."""
    return repr(value)


_keys = st.text(max_size=6) | st.sampled_from(["\ud800", "é", "\x00", "a\\b", '"'])
_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**62, max_value=2**66)
    | st.integers(min_value=-(2**66), max_value=-(2**62))
    | st.floats()
    | st.sampled_from([0.0, -0.0, 1e16, 1e-7, 5e-324, 1.7976931348623157e308, 0.1])
    | st.text(max_size=12)
    | st.sampled_from(["\ud800", "\udc00x", "null", "NaN", "[[[", "\u2028", "\x7f"])
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(_keys, inner, max_size=4)
        | st.dictionaries(
            st.integers() | st.booleans() | st.none() | st.floats(allow_nan=False),
            inner,
            max_size=2,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=1500, deadline=None)
@given(_values)
def test_encode_writes_what_the_stdlib_writes_or_refuses_alike(value: Any) -> None:
    expected = _reference_encode({"v": value})
    if expected is None:
        with pytest.raises(TypeError):
            _wire.encode({"v": value})
        return
    body = _wire.encode({"v": value})
    # The same JSON value (the bytes may differ: 1e16 is 1e+16 in the stdlib's spelling).
    assert _strict(_reference_decode(body)) == _strict(_reference_decode(expected))


@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        math.inf,
        -math.inf,
        [1.0, {"a": math.nan}],
        {1, 2},
        b"bytes",
        uuid.uuid4(),
        datetime.datetime(2026, 1, 1),
        datetime.date(2026, 1, 1),
        enum.Enum("Colour", "RED").RED,  # type: ignore[attr-defined]
        object(),
        "\ud800",
        {(1, 2): "tuple key"},
    ],
    ids=repr,
)
def test_values_the_stdlib_refuses_are_refused_with_type_error(value: Any) -> None:
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        _wire.encode({"id": "x", "v": value})


class _Number(enum.IntEnum):
    ONE = 1


class _Word(enum.StrEnum):
    HELLO = "hello"


@pytest.mark.parametrize(
    "value",
    [
        2**64,
        -(2**63) - 1,
        10**40,
        (1, (2, 3)),
        {1: "a", 2.5: "b", False: "c", None: "d"},
        _Number.ONE,
        _Word.HELLO,
        1e16,
        -0.0,
        "é\u2028\x7f\x00",
    ],
    ids=repr,
)
def test_values_the_stdlib_takes_come_back_as_it_reads_them(value: Any) -> None:
    body = _wire.encode({"v": value})
    expected = _reference_encode({"v": value})
    assert expected is not None
    assert _strict(_wire.decode(body)) == _strict(_reference_decode(expected))


def test_nesting_deeper_than_the_limit_is_refused_both_ways() -> None:
    value: Any = []
    for _ in range(_wire.MAX_DEPTH - 1):
        value = [value]
    with pytest.raises(TypeError, match="nested deeper"):
        _wire.encode({"v": value})  # 101 levels with the envelope
    with pytest.raises(MessageDeliveryFailure, match="nested deeper"):
        _wire.decode(b'{"v":' + b"[" * _wire.MAX_DEPTH + b"]" * _wire.MAX_DEPTH + b"}")
    body = _wire.encode({"v": value[0]})
    assert _wire.decode(body) == {"v": value[0]}


_bodies = st.one_of(
    # What other senders write: stdlib JSON with NaN/Infinity, escapes, big numbers.
    _values.map(lambda v: json.dumps({"v": v}).encode("utf-8", "surrogatepass")),
    _values.map(
        lambda v: json.dumps({"v": v}, ensure_ascii=False, indent=1).encode(
            "utf-8", "surrogatepass"
        )
    ),
    st.sampled_from(
        [
            b'{"a":1,"a":2,"b":3}',
            b'{"hb":NaN,"x":Infinity,"y":-Infinity}',
            b'{"n":123456789012345678901234567890,"m":-9223372036854775809}',
            b'{"n":18446744073709551615,"m":9223372036854775808,"k":-9223372036854775808}',
            b'{"f":1e400,"g":-1e400,"h":1e-400,"i":1E5,"j":-0,"k":-0.0}',
            b'{"s":"\\ud800","t":"\\udc00\\ud800","u":"\\ud83d\\ude00"}',
            b'{"s":"\xed\xa0\x80"}',
            b'\xef\xbb\xbf{"bom":1}',
            b' \t\r\n{"ws":[ 1 , 2 ]} \n',
            b'{"ctl":"a\x01b"}',
            b'{"x":1}\x00',
            b'{"x":[1,]}',
            b'{"x":01}',
            b'{"x":"\\x"}',
            b"[1,2]",
            b'"text"',
            b"",
            b"\xff\xfe",
            b'{"x":1.0000000000000000000001,"y":12345678901234567.5}',
            b'{"id":"1234567890123456789012","n":1234567890123456789}',
        ]
    ),
    st.binary(max_size=40),
    st.text(alphabet='{}[]":,0123456789.eE-+ntrufalsNIiy\\ ', max_size=30).map(str.encode),
)


@settings(max_examples=1500, deadline=None)
@given(_bodies)
def test_decode_reads_what_the_stdlib_reads_or_refuses_alike(body: bytes) -> None:
    try:
        expected: Any = _reference_decode(body)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError alike
        expected = None
    if not isinstance(expected, dict):
        with pytest.raises(MessageDeliveryFailure):
            _wire.decode(body)
        return
    assert _strict(_wire.decode(body)) == _strict(expected)


def test_decode_keeps_the_stdlib_error_text() -> None:
    with pytest.raises(MessageDeliveryFailure, match="undecodable message: Expecting value"):
        _wire.decode(b'{"x":}')
    with pytest.raises(MessageDeliveryFailure, match="undecodable message: 'utf-8' codec"):
        _wire.decode(b'{"x":"\xff"}')
    with pytest.raises(MessageDeliveryFailure, match="not a JSON object"):
        _wire.decode(b"[1]")


@pytest.mark.parametrize(
    "body",
    [b"12345678901234567890", b" -12345678901234567890", b"[1,\n12345678901234567890]"],
)
def test_long_integers_are_read_exactly_wherever_they_stand(body: bytes) -> None:
    assert _strict(_wire._loads(body)) == _strict(_reference_decode(body))


@pytest.mark.parametrize("depth", [_wire.MAX_DEPTH, _wire.MAX_DEPTH + 1])
def test_a_large_batch_is_refused_only_when_one_envelope_nests_too_deep(depth: int) -> None:
    envelope = {"id": "i" * 32, "t": "r", "v": {"tags": ["[", "{"], "n": [1, 2, {"x": None}]}}
    deep: Any = "x"
    for _ in range(depth - 2):  # with the batch's own object and list around it
        deep = [deep]
    value = {"batch": [envelope] * 100 + [deep] + [envelope] * 100}
    body = json.dumps(value, separators=(",", ":")).encode()
    assert len(body) > 4 * _wire._COUNT_FIRST
    assert _wire.too_deep(body) == (depth > _wire.MAX_DEPTH)
    assert _wire.too_deep(body.replace(b'"[","{"', b'"a","b"')) == (depth > _wire.MAX_DEPTH)


def test_a_kept_encoding_decodes_once_to_a_value_of_its_own() -> None:
    # In one process a reply's bytes reach the caller as sent: the value the encoder read
    # back is handed out once instead of parsing the bytes again.
    tags = ["a"]
    envelope: dict[str, Any] = {"id": "i", "t": "r", "v": {"tags": tags, "n": 1.5, "big": 2**63}}
    body = _wire.encode(envelope, keep=True)
    assert isinstance(body, _wire.Encoded)
    assert body == _wire.encode(envelope)  # the same bytes on any wire
    first = _wire.decode(body)
    assert first == envelope == _wire.decode(bytes(body))
    first["v"]["tags"].append("b")  # the receiver owns its copy
    assert tags == ["a"]
    second = _wire.decode(body)  # handed out once; after that the bytes are parsed
    assert second == envelope and second is not first


@pytest.mark.parametrize(
    "value", [float("nan"), (1, 2), 2**70, {1: "x"}], ids=["nan", "tuple", "huge", "int-key"]
)
def test_a_kept_encoding_of_what_orjson_cannot_write_exactly_is_plain_bytes(value: Any) -> None:
    try:
        body = _wire.encode({"v": value}, keep=True)
    except TypeError:
        return  # refused, as without keep
    assert type(body) is bytes
    assert _wire.decode(body) == _wire.decode(_wire.encode({"v": value}))


# -- PlainJSON: a result its maker vouches for skips the read-back check -----------------

_PLAIN = {"name": "x", "n": 2**63 - 1, "ok": True, "none": None, "l": ["é", "\n"], "d": {"k": "v"}}


def test_a_plain_result_is_written_as_the_checked_one_and_reads_back_the_same() -> None:
    plain = _wire.result_reply("r1", _wire.PlainJSON(_PLAIN))
    checked = _wire.result_reply("r1", dict(_PLAIN))
    assert _wire.plain_reply(plain) and not _wire.plain_reply(checked)
    assert not _wire.plain_reply(_wire.error_reply("r1", ValueError("x")))
    body = _wire.reply_body(plain, 1 << 20)
    assert body == _wire.reply_body(checked, 1 << 20) == _reference_encode(checked)
    kept = _wire.reply_body(plain, 1 << 20, keep=True)
    assert kept == body and _wire.decode(kept) == checked
    # Still refused over the size limit, and what orjson cannot write takes the stdlib's way
    with pytest.raises(MessageTooLarge):
        _wire.encode(plain, 10, plain=True)
    huge = _wire.result_reply("r2", _wire.PlainJSON({"n": 2**70}))
    assert _wire.decode(_wire.reply_body(huge, 1 << 20)) == {
        "id": "r2",
        "t": "r",
        "v": {"n": 2**70},
    }


def test_the_check_is_what_a_plain_result_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[bytes] = []
    loads = orjson.loads

    def counted(body: Any) -> Any:
        reads.append(body)
        return loads(body)

    monkeypatch.setattr(orjson, "loads", counted)
    _wire.reply_body(_wire.result_reply("r1", _wire.PlainJSON(_PLAIN)), 1 << 20)
    assert reads == []
    _wire.reply_body(_wire.result_reply("r1", dict(_PLAIN)), 1 << 20)
    assert len(reads) == 1


@settings(max_examples=1500, deadline=None)
@given(_values)
def test_a_deferred_envelope_reads_back_as_the_stdlib_writes_it_or_is_left_to_encode(
    value: Any,
) -> None:
    copied = _wire.plain_copy(value)
    expected = _reference_encode({"v": value})
    if copied is _wire.NOT_PLAIN:
        return  # encoded by its caller, as every other envelope (the test above)
    body = _wire.encode_group([_wire.Deferred({"v": copied})], 1 << 20)
    if expected is None:  # a surrogate: orjson refuses it too, and encode says why
        assert body is None
        with pytest.raises(TypeError, match="not JSON-serialisable"):
            _wire.Deferred({"v": copied}).encode()
        return
    if body is None:  # orjson refused it (an integer over 64 bits, a surrogate)
        body = _wire.Deferred({"v": copied}).encode()
    assert _strict(_reference_decode(body)) == _strict(_reference_decode(expected))


@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        math.inf,
        (1, 2),
        {1: "a"},
        b"x",
        uuid.uuid4(),
        _Number.ONE,
        _Word.HELLO,
        [object()],
    ],
    ids=repr,
)
def test_plain_copy_refuses_what_encoders_write_differently(value: Any) -> None:
    assert _wire.plain_copy({"v": value}) is _wire.NOT_PLAIN


def test_plain_copy_makes_new_containers_and_stops_at_its_depth() -> None:
    inner = [1, "a", None, True, 2.5]
    original = {"k": inner, "d": {"x": inner}}
    copied = _wire.plain_copy(original)
    assert copied == original
    assert copied["k"] is not inner and copied["d"]["x"] is not inner
    inner.append("later")
    assert copied["k"] == [1, "a", None, True, 2.5]
    deep: Any = 1
    for _ in range(_wire.PLAIN_DEPTH):
        deep = [deep]
    assert _wire.plain_copy(deep) == deep
    assert _wire.plain_copy([deep]) is _wire.NOT_PLAIN


def test_a_group_is_one_message_as_pack_batch_makes_it() -> None:
    first, second = {"id": "a", "v": [1, 2]}, {"id": "b", "v": "é"}
    encoded = _wire.encode(second)
    assert _wire.encode_group([_wire.Deferred(first), _wire.Deferred(second)], 1 << 20) == (
        _wire.pack_batch([_wire.encode(first), encoded])
    )
    assert _wire.encode_group([_wire.Deferred(first), encoded], 1 << 20) == _wire.pack_batch(
        [_wire.encode(first), encoded]
    )
    assert _wire.encode_group([_wire.Deferred(first)], 1 << 20) == _wire.encode(first)
    assert _wire.encode_group([_wire.Deferred(first), encoded], 20) is None  # over the limit
