"""The envelope format on the wire: JSON only, never pickle.

A request::

    {"id": "<unique request id>", "method": "m", "args": {...}, "ctxt": {...},
     "ns": namespace|null, "ver": version|null, "reply_to": address|null,
     "hb": heartbeat interval|null, "multi": bool}

A reply (``t`` is the kind; ``id`` is the request id it answers)::

    {"id": ..., "t": "r", "v": result}        single result
    {"id": ..., "t": "i", "v": item}          one multicall item
    {"id": ..., "t": "end"}                   multicall finished
    {"id": ..., "t": "hb"}                    call monitor heartbeat
    {"id": ..., "t": "e", "exc": failure}     failure (see ``serialize_exception``)

Several envelopes (requests, or replies to one address) may travel as one message:
``{"batch": [envelope, envelope, ...]}``; each keeps its own id and is answered on
its own.

A failure carries ``class``, ``module``, ``message``, ``args`` and ``kwargs``; never a
traceback. Drivers see envelopes as opaque bytes.
"""

from __future__ import annotations

import builtins
import importlib
import json
import logging
import re
from collections.abc import Iterable
from typing import Any, cast

import orjson

from transport.exceptions import MessageDeliveryFailure, MessageTooLarge, RemoteError

LOG = logging.getLogger(__name__)

# Modules whose exceptions always come back as their own types. objects.exception is named
# by string only: the transport imports nothing from objects.
DEFAULT_ALLOWED_EXMODS = ("builtins", "transport.exceptions", "objects.exception")

# The stdlib codec defines what the wire takes and how it refuses it; orjson does the work
# whenever it provably gives the same result (see _dumps and _loads).
_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_decoder = json.JSONDecoder()


class Encoded(bytes):
    """An encoded message that also holds what decoding it gives, for one :func:`decode`.

    NOTE: in one process (``memory://``) the very bytes object a server sends reaches its
    caller; decoding it again cost a second JSON parse (and the depth and number scans),
    about 5 us per reply, for a value the encoder's own check had parsed already. That
    value is handed out once, so the receiver owns it as it would a fresh decode; a body
    that left the process (RabbitMQ) is plain bytes on the other side.
    """

    def take(self) -> Any:
        """The decoded value the first time (``_NOT_KEPT`` after that)."""
        return self.__dict__.pop("decoded", _NOT_KEPT)


_NOT_KEPT: Any = object()


class PlainJSON(dict):  # type: ignore[type-arg]
    """A result whose maker vouches that it holds only JSON's own values: ``str`` keys;
    ``str``, ``int``, ``bool``, ``None`` and lists and dicts of these. Every JSON encoder
    writes such a value alike, so a reply carrying it skips the read-back check that makes
    other values take the stdlib encoder's verdict (a NaN, a UUID, a date). Its maker
    must never vouch for floats (NaN and the infinities) or for objects of other types.
    """

    __slots__ = ()


class FreshJSON(PlainJSON):
    """A :class:`PlainJSON` result made for this one reply: nothing else holds it or any
    dict or list in it, and nothing changes it after it is returned.

    NOTE: in one process (``Driver.offer_direct``) a caller answered on its own thread
    takes such a value as it is: copied through JSON, it would come back equal and owned
    by nobody else, which it already is. That copy (an encode and a parse, about 2 us per
    reply of an Instance) was a twentieth of an embedded get. What is over the size limit
    or deeper than ``MAX_DEPTH`` still gets the reply encoder's typed error
    (:func:`handed_result`).
    """

    __slots__ = ()


class InProcessResult:
    """A result in two forms, from an endpoint that answers inline
    (``transport.InlineEndpoint``): one a caller in this process may take as it is
    (:meth:`local`), and the JSON value every other caller gets (:meth:`wire`).

    NOTE: in one process (``Driver.offer_direct``), a caller whose call says it takes
    such forms (``RPCClient.start_call``'s ``takes_local``) gets :meth:`local`'s value with
    no JSON and no primitive in between: an embedded get's row goes straight into its
    object. Everyone else, the consuming thread's inline answers included, gets
    :meth:`wire`. An endpoint returns one only from ``serve_inline``.
    """

    __slots__ = ()

    def local(self, limit: int | None) -> Any | None:
        """The form a caller in this process takes, made for it alone; None when the
        wire form must go instead (its reply might be over ``limit`` bytes or nested
        deeper than ``MAX_DEPTH``: the wire's own check says so and how)."""
        raise NotImplementedError

    def wire(self) -> Any | None:
        """The serialized result (a :class:`FreshJSON` where it may be), or None when the
        endpoint cannot answer it after all: the request then goes to a worker."""
        raise NotImplementedError

    @staticmethod
    def fits(sample: Any, limit: int | None, extra_bytes: int, extra_levels: int) -> bool:
        """Whether a reply whose JSON is ``sample``'s (as orjson writes it) with at most
        ``extra_bytes`` more and ``extra_levels`` more levels of nesting is surely within
        ``limit`` bytes and ``MAX_DEPTH``: for :meth:`local` to say (when unsure, the
        wire form goes, and the wire's own check decides)."""
        room = None if limit is None else limit - extra_bytes
        return plain_body(sample, room, MAX_DEPTH - extra_levels) is not None


_PLAIN_RESULTS = (PlainJSON, FreshJSON)


def plain_reply(reply: dict[str, Any]) -> bool:
    """Whether ``reply`` is a result reply whose value is :class:`PlainJSON`."""
    return type(reply.get("v")) in _PLAIN_RESULTS and type(reply.get("id")) is str


def handed_result(request_id: str, value: FreshJSON, limit: int | None) -> dict[str, Any] | None:
    """A :class:`FreshJSON` result as a caller in this process takes it, with no JSON
    in between: a dict, the value's own (see :class:`FreshJSON`). None when its reply
    must go through :func:`reply_body` (over ``limit`` bytes, too deep, or refused by
    orjson), which says what is wrong as it would on any wire."""
    if plain_body(result_reply(request_id, value), limit) is None:
        return None
    return dict(value)


def _dumps(value: Any, keep: bool = False, plain: bool = False) -> bytes:
    """``value`` as UTF-8 JSON; raises like the stdlib encoder (TypeError, ValueError,
    RecursionError) on what it refuses. ``keep``: an :class:`Encoded` that also holds the
    value read back when orjson wrote it (what :func:`decode` gives for it). ``plain``:
    the caller vouches that ``value`` holds only JSON's own values (:class:`PlainJSON`),
    which orjson writes as the stdlib would: no read-back check.

    orjson writes what it can; its text counts only when it reads back equal to ``value``.
    That one check catches everything orjson takes but the stdlib refuses, which would
    otherwise change silently: NaN and infinities (orjson writes null), UUIDs, plain
    enums, dates and dataclasses (orjson writes them as strings or objects). Anything else
    (ints over 64 bits, non-str keys, tuples, sets, surrogates, objects) goes to the stdlib.
    """
    try:
        body = orjson.dumps(value)
        if plain and not keep:
            return body
        copy = orjson.loads(body)
        if plain or copy == value:
            if keep:
                encoded = Encoded(body)
                encoded.decoded = copy  # type: ignore[attr-defined]  # see Encoded.take
                return encoded
            return body
    except Exception:  # orjson's refusal, or a value whose __eq__ fails: the stdlib decides
        pass
    return _encoder.encode(value).encode("utf-8")


# Digits as "0", what may come before a number's digits (":", ",", "[", "-", whitespace) as
# ":", anything else as "x": an integer of 19 digits or more shows as ":" + 19 "0"s (unless
# it opens the text).
_NUMBERS = bytes(
    ord("0") if b in b"0123456789" else ord(":") if b in b":,[- \t\n\r" else ord("x")
    for b in range(256)
)
_LONG_INTEGER = b":" + b"0" * 19


def _loads(body: bytes) -> Any:
    """The JSON value of ``body``, as the stdlib decoder reads the UTF-8 text; raises
    UnicodeDecodeError or ValueError like it.

    orjson reads valid JSON to the same values, except integers outside 64 bits (it makes
    them floats): a body with an integer of 19 digits or more, and whatever orjson refuses
    (NaN and Infinity, lone surrogates, invalid UTF-8, malformed text), goes to the stdlib.
    """
    if _LONG_INTEGER not in body.translate(_NUMBERS) and not body[:1].isdigit():
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    return _decoder.decode(body.decode("utf-8"))


#: JSON nested deeper than this is refused on both sides: decoding it recursed into the
#: interpreter's recursion limit (RecursionError, fatal in the wrong place), and so would
#: whatever walks the decoded value.
MAX_DEPTH = 100

_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')
_ONE_BRACKET = bytes.maketrans(b"{}", b"[]")
#: Bytes up to which too_deep counts brackets before anything else (longer bodies, batches,
#: mostly hold more than MAX_DEPTH brackets anyway).
_COUNT_FIRST = 4096


def too_deep(body: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether the JSON text ``body`` nests arrays/objects deeper than ``limit``.

    At C speed: a body with at most ``limit`` brackets is fine at once; otherwise everything
    but brackets and quotes is deleted, strings dropped, and innermost pairs removed pass by pass
    (one pass per level, a run of ``limit`` opening brackets ends it early). Malformed text
    answers False: the decoder refuses it anyway.
    """
    if len(body) <= _COUNT_FIRST and body.count(b"[") + body.count(b"{") <= limit:
        return False  # most single envelopes: two counts beat the translate below
    if b"\\" in body:
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    rest = body.translate(None, _NOT_STRUCTURE)
    quotes = rest.count(b'"')
    if len(rest) - quotes <= limit:
        return False  # at most ``limit`` brackets in all
    # Adjacent quotes enclose nothing structural (an empty string, or the gap between two
    # strings): when they are all the quotes there are, no string holds a bracket.
    if 2 * rest.count(b'""') == quotes:
        rest = rest.translate(_ONE_BRACKET, b'"')
    else:
        # Drop them first: that leaves few strings to split out.
        rest = b"".join(rest.replace(b'""', b"").split(b'"')[::2]).translate(_ONE_BRACKET)
    # One kind of bracket: one replace per pass removes exactly the innermost level.
    for done in range(limit):
        if not rest:
            return False
        if b"[" * (limit - done + 1) in rest:
            return True
        shorter = rest.replace(b"[]", b"")
        if len(shorter) == len(rest):
            return False
        rest = shorter
    return bool(rest)


def plain_body(value: Any, limit: int | None, levels: int = MAX_DEPTH) -> bytes | None:
    """``value``, vouched plain JSON (:class:`PlainJSON`, :class:`Deferred`), as orjson
    writes it, when that text is all the wire needs; None when the checked
    :func:`encode` must decide: orjson refuses it (an integer over 64 bits, a
    surrogate), or it is over ``limit`` bytes or nested deeper than ``levels``."""
    try:
        body = orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError
        return None
    if (limit is not None and len(body) > limit) or too_deep(body, levels):
        return None
    return body


def encode(
    envelope: dict[str, Any], limit: int | None = None, *, keep: bool = False, plain: bool = False
) -> bytes:
    """Encode an envelope; raise MessageTooLarge over ``limit`` bytes, TypeError if not JSON
    (or nested deeper than ``MAX_DEPTH``: the other side would refuse it). ``keep``: the
    body may be an :class:`Encoded` (a receiver in this process need not decode it).
    ``plain``: it holds only JSON's own values (see :class:`PlainJSON`)."""
    try:
        body = _dumps(envelope, keep, plain)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"message is not JSON-serialisable: {exc}") from exc
    except RecursionError:
        raise TypeError("message is not JSON-serialisable: nested too deeply") from None
    if limit is not None and len(body) > limit:
        raise MessageTooLarge(size=len(body), limit=limit)
    if too_deep(body):
        raise TypeError(f"message is not JSON-serialisable: nested deeper than {MAX_DEPTH} levels")
    return body


#: Bytes a batch adds around its envelopes: ``{"batch":[`` ... ``]}``.
BATCH_OVERHEAD = len(b'{"batch":[]}')


def pack_batch(bodies: list[bytes]) -> bytes:
    """Several encoded envelopes as one message body, without encoding them again."""
    return b'{"batch":[' + b",".join(bodies) + b"]}"


def unpack(message: dict[str, Any]) -> list[Any] | None:
    """The envelopes of a batch message, or None when ``message`` is a single envelope."""
    batch = message.get("batch")
    if batch is None or len(message) != 1:
        return None
    if not isinstance(batch, list):
        raise MessageDeliveryFailure(reason="'batch' must be a list of envelopes")
    return batch


#: Levels a batch adds around its envelopes: its own object and its list.
BATCH_LEVELS = 2


class Deferred:
    """A request envelope its caller did not encode: the sender encodes it later, on its
    own thread, with the rest of its batch in one go (:func:`encode_group`).

    NOTE: measured with 256 gets in flight against RabbitMQ, the caller's thread is the
    pipeline's slowest stage: the 2.7 us of one request's encode and checks, taken off
    it, gave 4-13% more gets per second. Only an envelope of values every JSON encoder
    writes alike, in containers nobody else holds, is deferred: arguments their maker
    vouches for (``RPCClient.start_call``'s ``plain``), the context as its own kept
    ``wire_dict()`` or a :func:`plain_copy` of its dict. It cannot change after the call
    returns, and orjson writes it as the stdlib would: the read-back check has nothing
    to catch.
    """

    __slots__ = ("envelope",)

    #: What the sender counts for one when it packs a batch within the size limit; the
    #: batch's real size is checked once it is encoded (:func:`encode_group`).
    SIZE = 1024

    def __init__(self, envelope: dict[str, Any]) -> None:
        self.envelope = envelope

    def __len__(self) -> int:
        return self.SIZE

    def handed(self, limit: int | None) -> dict[str, Any] | None:
        """The envelope as a server in this process reads it, with no JSON in between
        (``Driver.offer_direct``): the context a copy (the caller's kept ``wire_dict()``
        serves all its calls), the arguments as they are (vouched plain and made for this
        call). None when the broker's way must decide: orjson refuses the envelope, or it
        is over ``limit`` bytes or deeper than ``MAX_DEPTH``.

        NOTE: encoded and read back, as before, it cost about 3 us more per embedded get
        for a copy that reads back equal by construction (see the class's note)."""
        envelope = self.envelope
        if plain_body(envelope, limit) is None:
            return None
        handed = dict(envelope)
        handed["ctxt"] = plain_copy(envelope["ctxt"])
        return handed

    def encode(self, limit: int | None = None) -> bytes:
        """The envelope encoded on its own: as :func:`encode_group` writes it, else (orjson
        refused it, or it is over ``limit`` or too deep) with every check of
        :func:`encode`, which raises what the caller is told (TypeError,
        MessageTooLarge)."""
        body = plain_body(self.envelope, limit)
        return body if body is not None else encode(self.envelope, limit)


#: What :func:`plain_copy` returns for a value it does not copy.
NOT_PLAIN: Any = object()

#: Levels :func:`plain_copy` copies at most (a request's context and arguments are flat).
PLAIN_DEPTH = 8


def plain_copy(value: Any, depth: int = PLAIN_DEPTH) -> Any:
    """A copy of ``value`` whose dicts and lists are new, when it holds only JSON's own
    values: ``str`` keys; ``str``, ``int``, ``bool``, ``None``, finite ``float``, and
    dicts and lists of these, at most ``depth`` levels deep. Else :data:`NOT_PLAIN`.

    Such a value reads back equal whichever encoder wrote it (orjson refuses integers
    over 64 bits and lone surrogates outright, and :func:`encode_group` then leaves the
    verdict to :func:`encode`), and the copy cannot change when its caller changes the
    original afterwards.
    """
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is dict:
        if depth <= 0:
            return NOT_PLAIN
        copied: dict[str, Any] = {}
        for key, item in value.items():
            if type(key) is not str:
                return NOT_PLAIN
            sub = type(item)
            if not (sub is str or sub is int or sub is bool or item is None):
                item = plain_copy(item, depth - 1)
                if item is NOT_PLAIN:
                    return NOT_PLAIN
            copied[key] = item
        return copied
    if kind is list:
        if depth <= 0:
            return NOT_PLAIN
        items: list[Any] = []
        for item in value:
            sub = type(item)
            if not (sub is str or sub is int or sub is bool or item is None):
                item = plain_copy(item, depth - 1)
                if item is NOT_PLAIN:
                    return NOT_PLAIN
            items.append(item)
        return items
    if kind is float:
        return value if value - value == 0.0 else NOT_PLAIN  # NaN and infinities: not
    return NOT_PLAIN


def encode_group(bodies: list[Any], limit: int) -> bytes | None:
    """One message of ``bodies`` (encoded envelopes and :class:`Deferred` ones), as
    :func:`pack_batch` would make it; None when one of the deferred envelopes needs
    :func:`encode`'s verdict (orjson refused it, or it is nested too deep) or together
    they are over ``limit`` bytes: then each goes on its own way.

    NOTE: the depth is checked as the server's :func:`decode` checks it (a batch
    ``BATCH_LEVELS`` deeper): an envelope it refuses would have had the whole message
    refused, its batch-mates with it, and its caller waiting for a reply that never
    comes."""
    if len(bodies) == 1:
        only = bodies[0]
        return plain_body(only.envelope, limit) if type(only) is Deferred else only
    if all(type(item) is Deferred for item in bodies):
        return plain_body(
            {"batch": [item.envelope for item in bodies]}, limit, MAX_DEPTH + BATCH_LEVELS
        )
    parts = [
        plain_body(item.envelope, limit) if type(item) is Deferred else item for item in bodies
    ]
    if any(part is None for part in parts):
        return None
    body = pack_batch(cast("list[bytes]", parts))
    return body if len(body) <= limit else None


def decode(body: bytes) -> dict[str, Any]:
    """Decode an envelope (or a batch of them); raise MessageDeliveryFailure when it is not
    a JSON object or an envelope nests deeper than ``MAX_DEPTH``."""
    if type(body) is Encoded:
        kept = body.take()
        if kept is not _NOT_KEPT:
            return kept  # type: ignore[no-any-return]  # a dict: checked when encoded
    # NOTE: a batch is BATCH_LEVELS deeper than its envelopes: refusing it at MAX_DEPTH
    # dead-lettered every request (or dropped every reply) packed with one that the
    # encoder had taken alone, at the limit. The second count runs only for deep bodies.
    batch_only = too_deep(body)
    if batch_only and too_deep(body, MAX_DEPTH + BATCH_LEVELS):
        raise MessageDeliveryFailure(
            reason=f"undecodable message: JSON nested deeper than {MAX_DEPTH} levels"
        )
    try:
        envelope = _loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MessageDeliveryFailure(reason=f"undecodable message: {str(exc)[:200]}") from None
    except RecursionError:
        # NOTE: from None: the chained traceback of a RecursionError is thousands of lines.
        raise MessageDeliveryFailure(reason="undecodable message: JSON nested too deeply") from None
    if not isinstance(envelope, dict):
        raise MessageDeliveryFailure(reason="message is not a JSON object")
    if batch_only and not (len(envelope) == 1 and isinstance(envelope.get("batch"), list)):
        raise MessageDeliveryFailure(
            reason=f"undecodable message: JSON nested deeper than {MAX_DEPTH} levels"
        )
    return envelope


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return type(exc).__name__


def _json_safe(value: Any) -> bool:
    try:
        _encoder.encode(value)
    except (TypeError, ValueError, RecursionError):
        return False
    return True


def serialize_exception(exc: BaseException) -> dict[str, Any]:
    """The wire form of an exception: class, module, message, args, kwargs (no traceback)."""
    cls = type(exc)
    args = list(exc.args)
    kwargs = getattr(exc, "kwargs", None)
    if not isinstance(kwargs, dict):
        kwargs = {}
    if not _json_safe(args):
        args = [_safe_str(exc)]
    if not _json_safe(kwargs):
        kwargs = {}
    message = _safe_str(exc)
    return {
        "class": cls.__name__,
        "module": cls.__module__,
        "message": message,
        "args": args,
        "kwargs": kwargs,
    }


def deserialize_exception(data: Any, allowed_modules: Iterable[str]) -> Exception:
    """Rebuild a remote failure as its own type if its module is allowed, else RemoteError."""
    if not isinstance(data, dict):
        return RemoteError("UnknownError", repr(data))
    name = str(data.get("class", "UnknownError"))
    module = str(data.get("module", ""))
    message = str(data.get("message", ""))
    raw_args, raw_kwargs = data.get("args"), data.get("kwargs")
    args: list[Any] = raw_args if isinstance(raw_args, list) else [message]
    kwargs: dict[str, Any] = raw_kwargs if isinstance(raw_kwargs, dict) else {}
    qualified = name if module == "builtins" else f"{module}.{name}"
    if module in set(allowed_modules):
        cls = _find_class(module, name)
        if cls is not None:
            try:
                return cls(*args, **kwargs)
            except Exception:  # a constructor that does not take its own args back
                LOG.debug("cannot rebuild remote %s, returning RemoteError", qualified)
    return RemoteError(qualified, message)


def _find_class(module: str, name: str) -> type[Exception] | None:
    try:
        mod = builtins if module == "builtins" else importlib.import_module(module)
    except ImportError:
        return None
    cls = getattr(mod, name, None)
    # Only Exception subclasses: a server must not make a caller raise SystemExit.
    if isinstance(cls, type) and issubclass(cls, Exception):
        return cls
    return None


def request_reply_info(body: bytes) -> tuple[str | None, str | None]:
    """Best effort (request id, reply address) from a body that failed validation."""
    try:
        envelope = decode(body)
    except MessageDeliveryFailure:
        return None, None
    return reply_info(envelope)


def reply_info(envelope: Any) -> tuple[str | None, str | None]:
    """Best effort (request id, reply address) from a decoded envelope of any shape; the
    address only when it is one a reply can be sent to (:func:`valid_reply_address`)."""
    if not isinstance(envelope, dict):
        return None, None
    req_id, reply_to = envelope.get("id"), envelope.get("reply_to")
    return (
        req_id if isinstance(req_id, str) and len(req_id) <= MAX_ID_LENGTH else None,
        reply_to if valid_reply_address(reply_to) else None,
    )


#: Bytes of a too-large message's head and tail a server looks at (never decoding the rest).
EXCERPT = 64 * 1024

#: Longest request id a server echoes back in a reply.
MAX_ID_LENGTH = 255

#: Reply addresses a server replies to: 1 to 255 printable ASCII characters, no spaces (an
#: AMQP routing key is at most 255 bytes; reply queues are named ``reply_<hex>``).
_REPLY_ADDRESS = re.compile(r"[!-~]{1,255}")


def valid_reply_address(address: Any) -> bool:
    """Whether ``address`` is a reply address a server may send to."""
    return isinstance(address, str) and _REPLY_ADDRESS.fullmatch(address) is not None


_KEY = re.compile(rb'"(id|reply_to)"\s*:\s*"')


def excerpt_reply_info(head: bytes, tail: bytes) -> tuple[str | None, str | None]:
    """Best effort (request id, reply address) of a message too large to decode, from its
    first and last bytes only (a client writes ``id`` first and ``reply_to`` near the end).
    Never decodes more than a few hundred bytes."""
    found: dict[str, str] = {}
    for part in (head, tail):
        for match in _KEY.finditer(part):
            key = match.group(1).decode()
            if key in found:
                continue
            start = match.end() - 1
            chunk = part[start : start + 2 * MAX_ID_LENGTH + 2]
            try:
                value, _ = _decoder.raw_decode(chunk.decode("utf-8", "replace"))
            except ValueError:
                continue
            if isinstance(value, str):
                found[key] = value
    return reply_info(found)


# -- replies (what a server sends back; see the module docstring) -----------------------


def result_reply(request_id: str, value: Any) -> dict[str, Any]:
    """The reply carrying a call's single result."""
    return {"id": request_id, "t": "r", "v": value}


def item_reply(request_id: str, item: Any) -> dict[str, Any]:
    """The reply carrying one item of a multicall."""
    return {"id": request_id, "t": "i", "v": item}


def end_reply(request_id: str) -> dict[str, Any]:
    """The reply ending a multicall."""
    return {"id": request_id, "t": "end"}


def heartbeat_reply(request_id: str) -> dict[str, Any]:
    """A call-monitor heartbeat: the request is alive on its server."""
    return {"id": request_id, "t": "hb"}


def error_reply(request_id: str, exc: BaseException) -> dict[str, Any]:
    """The reply failing a call with ``exc`` (see :func:`serialize_exception`)."""
    return {"id": request_id, "t": "e", "exc": serialize_exception(exc)}


def reply_body(reply: dict[str, Any], limit: int | None = None, *, keep: bool = False) -> bytes:
    """Encode a reply; one over ``limit`` bytes or not JSON-serialisable becomes the error
    reply (MessageTooLarge, TypeError) its caller can read instead. ``keep`` as for
    :func:`encode`."""
    try:
        return encode(reply, limit, keep=keep, plain=plain_reply(reply))
    except (MessageTooLarge, TypeError) as exc:
        return encode(error_reply(reply["id"], exc))


def pack_replies(bodies: list[bytes], limit: int) -> list[bytes]:
    """Encoded replies to one address as few messages as fit ``limit`` bytes each (a lone
    reply stays as it is; several travel as a batch)."""
    chunks: list[list[bytes]] = []
    size = limit + 1
    for body in bodies:
        if size + len(body) + 1 + BATCH_OVERHEAD > limit:
            chunks.append([])
            size = 0
        chunks[-1].append(body)
        size += len(body) + 1
    return [chunk[0] if len(chunk) == 1 else pack_batch(chunk) for chunk in chunks]
