"""Where one call's time goes along the wire: timestamps for ``profile_get.py --timeline``.

Functions on a call's way through the client and the conductor are wrapped to note when
they were entered and left, with what they carried. The clock is ``time.perf_counter``
(CLOCK_MONOTONIC on Linux: one clock for every process of the machine), so the
client's and the conductor's notes line up. At report time each side turns what it
noted into request id -> (entered, left) per mark; ``profile_get.py`` matches the two
sides by request id and prints the median of each segment of a call's way.

A mark costs two clock reads and an append on the thread it wraps; the bodies carried
are parsed for their request ids only when the report is asked for.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Any

import orjson

from bench._stages import _resolve
from transport._wire import Deferred

#: What a mark keeps of a wrapped call: (args, result) -> something ``ids`` reads later.
Keep = Callable[[tuple[Any, ...], Any], Any]


def _call(args: tuple[Any, ...], result: Any) -> Any:
    return [result.request_id]  # RPCClient._start returns its PendingCall


def _body_arg(args: tuple[Any, ...], result: Any) -> Any:
    return args[2]  # Sender.submit(self, target, body, ...)


def _group(args: tuple[Any, ...], result: Any) -> Any:
    return [item.body for item in args[1]]  # Sender._publish(self, group)


def _reply_body(args: tuple[Any, ...], result: Any) -> Any:
    return args[3]  # AMQPDriver._take_reply(self, sub, tag, body)


def _incoming(args: tuple[Any, ...], result: Any) -> Any:
    return args[1].body  # RPCServer._on_message / _handle(self, incoming, ...)


def _nothing(args: tuple[Any, ...], result: Any) -> Any:
    return None


#: (mark, owner, attribute, what to keep) per side.
CLIENT_MARKS: list[tuple[str, str, str, Keep]] = [
    ("start", "transport.client:RPCClient", "_start", _call),
    ("submit", "transport._sender:Sender", "submit", _body_arg),
    ("publish", "transport._sender:Sender", "_publish", _group),
    ("reply", "transport.drivers.amqp:AMQPDriver", "_take_reply", _reply_body),
    # A sequential get's synchronous call: its end is when the caller has the object.
    ("call", "conductor.api:ConductorAPI", "object_class_action_versions", _nothing),
]
CONDUCTOR_MARKS: list[tuple[str, str, str, Keep]] = [
    ("arrive", "transport.server:RPCServer", "_on_message", _incoming),
    ("handle", "transport.server:RPCServer", "_handle", _incoming),
]

#: Notes kept per mark at most (a long run keeps its first ones).
_MOST = 400_000


def _ids(kept: Any) -> list[str]:
    """The request ids of what a mark kept: request ids, a body, or a list of bodies."""
    if kept is None:
        return []
    if isinstance(kept, list):
        if all(type(k) is str for k in kept):
            return kept
        return [i for body in kept for i in _ids(body)]
    if isinstance(kept, Deferred):
        # Not yet encoded: the sender encodes it with its batch (transport._wire).
        return _ids_of([kept.envelope])
    try:
        message = orjson.loads(bytes(kept))
    except orjson.JSONDecodeError:
        return []
    envelopes = message.get("batch", [message]) if isinstance(message, dict) else []
    return _ids_of(envelopes)


def _ids_of(envelopes: list[Any]) -> list[str]:
    return [
        e["id"]
        for e in envelopes
        if isinstance(e, dict) and isinstance(e.get("id"), str) and e.get("t") != "hb"
    ]


class Marks:
    """Entry and exit times of the named functions while ``on``."""

    def __init__(self, marks: list[tuple[str, str, str, Keep]]) -> None:
        self.on = False
        self.notes: collections.defaultdict[str, list[tuple[float, float, Any]]] = (
            collections.defaultdict(list)
        )
        for label, owner, attr, keep in marks:
            self._wrap(_resolve(owner), attr, label, keep)

    def _wrap(self, owner: Any, attr: str, label: str, keep: Keep) -> None:
        original = getattr(owner, attr)
        notes, clock = self.notes[label], time.perf_counter

        def marked(*args: Any, **kwargs: Any) -> Any:
            t0 = clock()
            result = original(*args, **kwargs)
            if self.on and len(notes) < _MOST:
                notes.append((t0, clock(), keep(args, result)))
            return result

        setattr(owner, attr, marked)

    def start(self) -> dict[str, Any]:
        for notes in self.notes.values():
            notes.clear()
        self.on = True
        return {"on": True}

    def report(self) -> dict[str, Any]:
        """Per mark: request id -> [entered, left] (the first note of each id), and
        ``ordered``: the notes of marks that carry no id, in order."""
        self.on = False
        by_id: dict[str, dict[str, list[float]]] = {}
        ordered: dict[str, list[list[float]]] = {}
        for label, notes in self.notes.items():
            seen: dict[str, list[float]] = {}
            for t0, t1, kept in notes:
                if kept is None:
                    ordered.setdefault(label, []).append([t0, t1])
                    continue
                for request_id in _ids(kept):
                    seen.setdefault(request_id, [t0, t1])
            by_id[label] = seen
        return {"by_id": by_id, "ordered": ordered}
