"""The serving side of RPC: :class:`RPCServer` consumes a target and runs its endpoints."""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from transport import _oslo, _wire
from transport._consumer import Consumer, ServerState
from transport._ratelog import one_line
from transport.dispatcher import RPCDispatcher, _answer_now, is_refused
from transport.driver import Incoming, Listener
from transport.exceptions import (
    MessageDeliveryFailure,
    MessageTooLarge,
    MessagingException,
    TransportError,
)
from transport.serializer import Serializer
from transport.target import Target

if TYPE_CHECKING:
    from transport._transport import Transport

__all__ = ["RPCServer", "ServerState"]

LOG = logging.getLogger(__name__)

_REQUIRED = {"id": str, "method": str, "args": dict, "ctxt": dict}

#: Shortest heartbeat interval a server honours (seconds); callers asking for less get
#: heartbeats this often. A caller's ``hb`` that is not a finite positive number gets none.
MIN_HEARTBEAT_INTERVAL = 0.1

#: Requests one incoming batch message may hold (or ``config.batch_max_messages`` if more);
#: a bigger batch is refused whole.
MAX_BATCH = 1024

#: Marks an oslo.messaging envelope (see transport._oslo): one dict lookup per message.
_OSLO = _oslo.VERSION_KEY
_OSLO_REPLY = _oslo.REPLY_PREFIX

_ACK = "ack"
_INFINITY = math.inf
_REQUEUE = "requeue"


def _validate(envelope: dict[str, Any], known_address: str | None = None) -> None:
    """Refuse an envelope a server cannot run or answer. ``known_address``: a reply
    address found valid before (a batch's requests mostly share their caller's)."""
    get = envelope.get
    if not (
        type(get("id")) is str
        and type(get("method")) is str
        and type(get("args")) is dict
        and type(get("ctxt")) is dict
    ):
        # The exact types above are what the decoder makes; anything else is told apart here.
        for key, kind in _REQUIRED.items():
            if not isinstance(get(key), kind):
                raise MessageDeliveryFailure(
                    reason=f"field {key!r} missing or not a {kind.__name__}"
                )
    if len(envelope["id"]) > _wire.MAX_ID_LENGTH:
        raise MessageDeliveryFailure(
            reason=f"field 'id' longer than {_wire.MAX_ID_LENGTH} characters"
        )
    reply_to = get("reply_to")
    if (
        reply_to is not None
        and reply_to != known_address
        and not _wire.valid_reply_address(reply_to)
    ):
        # NOTE: checked before the request runs: a request that could never be answered
        # would run, then fail to reply (an over-long address broke kombu), and stall.
        raise MessageDeliveryFailure(
            reason="field 'reply_to' is not a reply address (1 to 255 printable ASCII characters)"
        )


def _reply_bodies(replies: list[dict[str, Any]], limit: int, keep: bool) -> list[bytes]:
    """Replies to one address as few messages as fit ``limit`` bytes each: encoded together
    in one go (the usual case), else one by one (``_wire.reply_body``: a reply that is not
    JSON, or too large, becomes its caller's error) and packed. ``keep``: for a receiver
    in this process (``_wire.Encoded``)."""
    if len(replies) == 1:
        return [_wire.reply_body(replies[0], limit, keep=keep)]
    # NOTE: one encode (and its check) for the whole batch instead of one per reply, then
    # a join: about 2 us less per reply. Equal results: the batch reads back equal
    # exactly when each reply does.
    plain = all(_wire.plain_reply(reply) for reply in replies)
    try:
        return [_wire.encode({"batch": replies}, limit, keep=keep, plain=plain)]
    except (MessageTooLarge, TypeError):
        pass  # too large together, or one reply cannot go: each on its own
    return _wire.pack_replies([_wire.reply_body(reply, limit) for reply in replies], limit)


def _heartbeat_interval(value: Any) -> float | None:
    """A caller's ``hb`` in seconds, or None (no heartbeats) unless a finite positive
    number."""
    if type(value) is float:  # what callers send: no conversion to make
        return value if 0.0 < value < _INFINITY else None  # NaN is neither
    if not isinstance(value, (int, float)):
        return None
    try:
        interval = float(value)
    except OverflowError:
        # NOTE: an integer no float holds (heartbeats never due); raised here, it
        # dead-lettered the request's whole batch.
        return None
    return interval if math.isfinite(interval) and interval > 0 else None


#: No caller's ``hb``: unlike any value a request holds.
_NO_HEARTBEAT: Any = object()


class _ReplyNotSent(Exception):
    """A reply could not be sent: for now (``retry``, the connection) or ever."""

    def __init__(self, cause: BaseException, *, retry: bool) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.retry = retry


#: Messages larger than this (bytes) are never decoded on the consuming thread: a lone
#: cheap request is far smaller, and decoding a large one there would hold consumption.
_INLINE_MAX_BYTES = 16 * 1024

#: A request waiting for a worker longer than this gets heartbeats like a running one.
_HELD_GRACE = 0.5


class _Held:
    """A message handed to the worker pool and not started yet (see _heartbeats)."""

    __slots__ = ("since", "watched")

    def __init__(self) -> None:
        self.since = time.monotonic()
        self.watched: list[tuple[str, _Running]] | None = None  # once decoded


class _Running:
    __slots__ = ("reply_to", "interval", "due")

    def __init__(self, reply_to: str, interval: float) -> None:
        self.reply_to = reply_to
        self.interval = interval
        self.due = time.monotonic() + interval


def _settle(incoming: Incoming, verdict: str) -> None:
    """End a delivery as ``verdict`` says: ``_ACK``, ``_REQUEUE``, or the reason to
    dead-letter it."""
    if verdict is _ACK:
        incoming.ack()
    elif verdict is _REQUEUE:
        incoming.requeue()
    else:
        incoming.dead_letter(verdict)


class _DirectAnswer:
    """What a server offers the callers of its process (``Driver.offer_direct``): called
    with a request envelope, :meth:`RPCServer._answer_direct`; ``local``,
    :meth:`RPCServer._answer_local` (``RPCClient.answer_locally``)."""

    __slots__ = ("_server", "local")

    def __init__(self, server: RPCServer) -> None:
        self._server = server
        self.local = server._answer_local

    def __call__(self, envelope: dict[str, Any]) -> tuple[bool, Any] | None:
        return self._server._answer_direct(envelope)


class RPCServer(Consumer):
    """Consumes ``<topic>``, ``<topic>.<server>`` and the topic's fanout, runs endpoints.

    Each request runs on a worker thread; it is acknowledged after the handler finished and
    its reply was sent (at-least-once: a server that dies first leaves the request to the
    next one, with the same request id). While a call runs, the server sends heartbeats so
    its caller notices if it dies (at most every ``MIN_HEARTBEAT_INTERVAL`` seconds).

    Every delivery ends settled, whatever it holds: answered (a result or a typed error)
    and acknowledged, or parked in the dead-letter queue when nobody can be answered
    (undecodable, nested deeper than ``_wire.MAX_DEPTH``, no valid ``reply_to``: 1 to 255
    printable ASCII characters). An endpoint raising ``SystemExit``, ``KeyboardInterrupt``
    or any other ``BaseException`` fails its own call only (the caller gets
    ``RemoteError``): a request cannot stop the server; signals stop it. Bad messages and
    failures are logged one line each, rate-limited.

    Args:
        transport: from :func:`transport.get_transport`.
        target: ``topic`` required; ``server`` adds the server's own queue.
        endpoints: objects whose public methods are callable (see :mod:`transport.dispatcher`).
        serializer: rebuilds contexts and arguments, serializes results.
        executor: only "threading" is supported.
        max_workers: handlers running at once.
    """

    _log = LOG

    def __init__(
        self,
        transport: Transport,
        target: Target,
        endpoints: Sequence[object],
        serializer: Serializer | None = None,
        executor: str = "threading",
        max_workers: int = 8,
    ) -> None:
        target.require_topic()
        super().__init__(transport, executor, max_workers, f"rpc-{target.topic}")
        self.target = target
        self.dispatcher = RPCDispatcher(endpoints, serializer)
        # Lone requests an endpoint answers at once skip the worker (InlineEndpoint).
        self._inline = self.dispatcher.answers_inline and transport.consumes_on_own_thread
        self._what = f"a message of {target.topic}"
        self._running: dict[str, _Running] = {}
        self._held: dict[Incoming, _Held] = {}
        self._beat = threading.Condition(self._lock)
        self._beat_thread: threading.Thread | None = None
        self._withdraw: Callable[[], None] | None = None  # of the offer to answer directly
        # Replies keep what their encoding read back only for callers in this process.
        self._keep = transport.in_process
        self._beat_wake_at = float(
            "-inf"
        )  # the thread reads _running itself before it first sleeps

    # -- lifecycle (transport._consumer.Consumer: start, stop, kill, wait) ------------
    def _listen(self, prefetch: int) -> Listener:
        listener = self.transport.listen(self.target, self._on_message, prefetch=prefetch)
        if self.dispatcher.answers_inline:
            self._withdraw = self.transport.offer_direct(self.target, _DirectAnswer(self))
        return listener

    def _state_changed(self) -> None:  # lock held
        self._beat.notify_all()
        if self.state is not ServerState.RUNNING and self._withdraw is not None:
            self._withdraw()
            self._withdraw = None

    def _admit(self, incoming: Incoming) -> None:  # lock held
        self._hold(incoming)

    def _name(self) -> str:
        return f"server {self.target.topic}"

    # -- handling -------------------------------------------------------------------
    def _on_message(self, incoming: Incoming) -> None:
        decoded = None
        # NOTE: unlocked read of pending: only this (the consuming) thread adds work.
        if self._inline and not self._pool.pending and incoming.size <= _INLINE_MAX_BYTES:
            try:
                decoded = _wire.decode(incoming.body)
            except Exception:
                decoded = None  # what is wrong with it is the worker's to say
            if (
                decoded is not None
                and self._lone_request(decoded)
                and self._answer_inline(incoming, decoded)
            ):
                return
        with self._lock:
            if self.state is not ServerState.RUNNING:
                incoming.requeue()
                return
            self._admit(incoming)
            self._pool.submit(lambda: self._handle(incoming, decoded))

    @staticmethod
    def _lone_request(envelope: Any) -> bool:
        """Whether a decoded message is a lone native call an inline endpoint may answer
        (see ``transport.InlineEndpoint``). Never raises: what is wrong with a message is
        the worker's to say."""
        if (
            type(envelope) is not dict
            or _OSLO in envelope
            or "batch" in envelope
            or envelope.get("multi")
            or not envelope.get("reply_to")
        ):
            return False
        try:
            _validate(envelope)
        except MessageDeliveryFailure:
            return False
        return True

    def _answer_inline(self, incoming: Incoming, envelope: dict[str, Any]) -> bool:
        """Answer a lone request here, on the consuming thread, if its endpoint does at
        once (``RPCDispatcher.dispatch_inline``); False: nothing was done, it goes to a
        worker. Acknowledged after its reply is sent, as on a worker."""
        if not self._enter_alone():
            return False
        try:
            outcome = self._dispatch_alone(envelope)
            if outcome is not None and isinstance(outcome[1], _wire.InProcessResult):
                value = outcome[1].wire()  # its caller is on the broker's far side
                outcome = None if value is None else (outcome[0], value)
            if outcome is None:
                return False
            self._settle_inline(incoming, envelope, outcome)
            return True
        finally:
            self._pool.leave()

    def _enter_alone(self) -> bool:
        """Count a request answered outside the pool as a job of the pool's (``stop()``
        waits for it as for a worker's), when running and no worker is busy."""
        with self._lock:
            return self.state is ServerState.RUNNING and self._pool.enter()

    def _dispatch_alone(self, envelope: dict[str, Any]) -> tuple[bool, Any] | None:
        """``RPCDispatcher.dispatch_inline`` of a lone request's envelope."""
        return self.dispatcher.dispatch_inline(
            envelope["id"],
            envelope["ctxt"],
            envelope["method"],
            envelope["args"],
            envelope.get("ns"),
            envelope.get("ver"),
        )

    def _answer_direct(self, envelope: dict[str, Any]) -> tuple[bool, Any] | None:
        """A request of a caller in this process answered on the caller's thread
        (``Driver.offer_direct``), by an endpoint that answers it at once and bounded, as
        :meth:`_answer_inline` would on the consuming thread; None: it goes through the
        broker. Only while no worker is busy, so a caller's calls keep the order of the
        work they wait for; ``stop()`` waits for it as for a worker."""
        if not self._enter_alone():
            return None
        try:
            if not self._lone_request(envelope):
                return None
            outcome = self._dispatch_alone(envelope)
            if outcome is not None and not outcome[0]:
                self._log_failure(envelope["id"], envelope["method"], outcome[1])
            return outcome
        except BaseException:  # never raises: the broker's way says what is wrong
            self._log.debug("a direct answer failed; sent through the broker", exc_info=True)
            return None
        finally:
            self._pool.leave()

    def _answer_local(
        self,
        request_id: str,
        ctxt: dict[str, Any],
        method: str,
        args: dict[str, Any],
        namespace: str | None,
        version: str | None,
    ) -> _wire.InProcessResult | None:
        """A call of a caller in this process answered with a result's local form, by its
        endpoint's ``serve_local`` (``RPCClient.answer_locally``), under the conditions
        of :meth:`_answer_direct`; None: nothing was done. The caller built the request
        from vouched plain values itself, so there is no envelope to check."""
        if not self._enter_alone():
            return None
        try:
            return self.dispatcher.dispatch_local(
                request_id, ctxt, method, args, namespace, version
            )
        finally:
            self._pool.leave()

    def _settle_inline(
        self, incoming: Incoming, envelope: dict[str, Any], outcome: tuple[bool, Any]
    ) -> None:
        request_id, method, reply_to = envelope["id"], envelope["method"], envelope["reply_to"]
        ok, value = outcome
        try:
            try:
                if ok:
                    self._reply(reply_to, _wire.result_reply(request_id, value))
                else:
                    self._log_failure(request_id, method, value)
                    self._reply(reply_to, _wire.error_reply(request_id, value))
            except _ReplyNotSent as exc:
                verdict = self._not_sent(exc, request_id, method)
            else:
                verdict = _ACK
            if self._killed:
                return
            _settle(incoming, verdict)
        except BaseException as exc:  # as Consumer._handle: the delivery ends settled
            if self._killed:
                return
            self._bad.error("parking %s in the dead-letter queue: %s", self._what, one_line(exc))
            try:
                incoming.dead_letter(f"the server failed handling it: {one_line(exc)}")
            except BaseException:
                incoming.requeue()

    def _handle_message(self, incoming: Incoming, decoded: Any = None) -> None:
        self._release(incoming)
        limit = self.transport.config.max_message_size
        if incoming.size > limit:
            self._refuse_oversized(incoming, limit)
            return
        oslo = None
        try:
            envelope = decoded if decoded is not None else _wire.decode(incoming.body)
            if _OSLO in envelope:
                oslo = envelope
                envelope = _oslo.request_to_native(oslo)
            batch = _wire.unpack(envelope)
            if batch == []:
                raise MessageDeliveryFailure(reason="an empty batch")
            if batch is not None:
                most = max(MAX_BATCH, self.transport.config.batch_max_messages)
                if len(batch) > most:
                    raise MessageDeliveryFailure(
                        reason=f"a batch of {len(batch)} requests (at most {most})"
                    )
                self._handle_batch(incoming, batch)
                return
            _validate(envelope)
        except MessageDeliveryFailure as exc:
            if oslo is not None:
                self._answer_refusal(incoming, exc, *_oslo.request_reply_info(oslo))
                return
            self._reject(incoming, exc)
            return
        request_id: str = envelope["id"]
        reply_to: str | None = envelope.get("reply_to")
        self._watch(envelope)
        try:
            outcome = self._run(envelope, request_id, reply_to, incoming.redelivered)
        finally:
            self._unwatch(request_id)
        if self._killed:
            return
        _settle(incoming, outcome)

    def _run(
        self,
        envelope: dict[str, Any],
        request_id: str,
        reply_to: str | None,
        redelivered: bool = True,
    ) -> str:
        """Dispatch and reply. Returns ``_ACK``, ``_REQUEUE`` (the reply could not be sent for
        now) or the reason to dead-letter the request with (no reply can ever be sent)."""
        method = envelope["method"]
        multi = bool(envelope.get("multi"))
        try:
            try:
                streaming, value = self.dispatcher.dispatch(
                    request_id,
                    envelope["ctxt"],
                    method,
                    envelope["args"],
                    envelope.get("ns"),
                    envelope.get("ver"),
                    redelivered=redelivered,
                )
                if streaming and reply_to and multi:
                    for item in value:
                        self._reply(reply_to, _wire.item_reply(request_id, item))
                elif streaming:
                    # A plain call (or cast) of a generator method gets the whole list.
                    value, streaming = list(value), False
                if reply_to:
                    if multi:
                        if not streaming:
                            self._reply(reply_to, _wire.item_reply(request_id, value))
                        self._reply(reply_to, _wire.end_reply(request_id))
                    else:
                        self._reply(reply_to, _wire.result_reply(request_id, value))
            except _ReplyNotSent:
                raise
            except BaseException as exc:
                # NOTE: BaseException too: an endpoint raising SystemExit (or any other
                # BaseException) fails its own request; a request cannot stop the server.
                self._log_failure(request_id, method, exc)
                if reply_to:
                    self._reply(reply_to, _wire.error_reply(request_id, exc))
        except _ReplyNotSent as exc:
            return self._not_sent(exc, request_id, method)
        return _ACK

    def _not_sent(self, exc: _ReplyNotSent, request_id: str, method: str) -> str:
        """``_REQUEUE``, or the reason to dead-letter a request whose reply cannot go."""
        if exc.retry:
            self._bad.warning(
                "could not reply to %s (%s); requeueing it", method, one_line(exc.cause)
            )
            return _REQUEUE
        reason = f"its reply cannot be sent: {one_line(exc.cause)}"
        self._bad.error(
            "request %s %s: %s; parking it in the dead-letter queue", request_id, method, reason
        )
        return reason

    def _log_failure(self, request_id: str, method: str, exc: BaseException) -> None:
        # One line per failed request, carrying its id in the record's request_id field
        # too; successful requests log nothing at INFO (thousands a second would flood).
        rid = request_id
        if isinstance(exc, self.dispatcher.expected_exceptions):
            self._failed.info("request %s %s: %s", rid, method, one_line(exc), request_id=rid)
        elif isinstance(exc, MessagingException) or is_refused(exc):
            self._failed.warning(
                "request %s %s failed: %s", rid, method, one_line(exc), request_id=rid
            )
        elif isinstance(exc, RecursionError):
            # Its traceback is thousands of lines of the same frames.
            self._failed.warning(
                "request %s %s raised %s", rid, method, one_line(exc), request_id=rid
            )
        else:
            self._failed.warning("request %s %s raised", rid, method, exc_info=exc, request_id=rid)

    def _handle_batch(self, incoming: Incoming, batch: list[Any]) -> None:
        """Several requests in one message: dispatch together, reply packed per caller,
        acknowledge once every reply is sent."""
        replies: dict[str, list[dict[str, Any]]] = {}
        valid: list[dict[str, Any]] = []
        rejected: list[MessageDeliveryFailure] = []
        address: str | None = None  # the last reply address found valid
        for envelope in batch:
            try:
                if not isinstance(envelope, dict):
                    raise MessageDeliveryFailure(reason="a batch item is not a JSON object")
                _validate(envelope, address)
            except MessageDeliveryFailure as exc:
                rejected.append(exc)
                rid, reply_to = _wire.reply_info(envelope)
                if rid and reply_to:
                    replies.setdefault(reply_to, []).append(_wire.error_reply(rid, exc))
                continue
            address = envelope.get("reply_to") or address
            valid.append(envelope)
        if rejected:
            # One line per message, however many of its requests were bad.
            self._bad.warning(
                "rejecting %d of %d requests in a batch on %s: %s",
                len(rejected),
                len(batch),
                self.target.topic,
                rejected[0],
            )
        watched = self._watch_batch(valid)
        sent_now: set[str] = set()
        token = _answer_now.set(functools.partial(self._answer_now, valid, sent_now, {}))
        try:
            outcomes = self.dispatcher.dispatch_batch(
                [
                    (e["id"], e["ctxt"], e["method"], e["args"], e.get("ns"), e.get("ver"))
                    for e in valid
                ],
                redelivered=incoming.redelivered,
            )
        finally:
            _answer_now.reset(token)
            if watched:
                self._unwatch_batch(watched)
        self._queue_replies(
            (
                (envelope, outcome)
                for envelope, outcome in zip(valid, outcomes, strict=True)
                if envelope["id"] not in sent_now  # not answered early
            ),
            replies,
        )
        if self._killed:
            return
        limit = self.transport.config.max_message_size
        for reply_to, queued in replies.items():
            if not queued:
                continue  # every reply to this address went early
            for body in _reply_bodies(queued, limit, self._keep):
                try:
                    self.transport.send_reply(reply_to, body)
                except TransportError as exc:
                    self._bad.warning(
                        "could not reply to a batch (%s); requeueing it", one_line(exc)
                    )
                    incoming.requeue()
                    return
                except Exception as exc:  # this address never takes a reply; the others may
                    self._bad.error(
                        "cannot reply to %r in a batch: %s", reply_to[:64], one_line(exc)
                    )
                    break
        incoming.ack()

    def _queue_replies(
        self,
        answered: Iterable[tuple[dict[str, Any], tuple[bool, Any]]],
        replies: dict[str, list[dict[str, Any]]],
    ) -> None:
        """Log the failures among ``answered`` (``(envelope, outcome)``) and queue their
        replies per reply address."""
        for envelope, (ok, value) in answered:
            request_id, reply_to = envelope["id"], envelope.get("reply_to")
            if not ok:
                self._log_failure(request_id, envelope["method"], value)
            if reply_to is None:
                continue
            queued = replies.get(reply_to)
            if queued is None:
                queued = replies[reply_to] = []
            if not ok:
                queued.append(_wire.error_reply(request_id, value))
            elif envelope.get("multi"):
                queued.append(_wire.item_reply(request_id, value))
                queued.append(_wire.end_reply(request_id))
            else:
                queued.append({"id": request_id, "t": "r", "v": value})  # _wire.result_reply

    def _answer_now(
        self,
        valid: list[dict[str, Any]],
        sent_now: set[str],
        by_id: dict[str, dict[str, Any] | None],
        answers: Sequence[tuple[str, tuple[bool, Any]]],
    ) -> None:
        """``transport.answer_now`` for the batch being dispatched: reply to ``answers``
        at once, per address, and note in ``sent_now`` the requests whose replies went.
        What cannot go now (a request id twice in the batch, a failed send) goes with the
        rest at the end (a failure among them is logged twice then). ``by_id``: the
        batch's envelopes by request id (None: the id is there twice), filled on the
        first call (a message's gets may be answered in several parts)."""
        if self._killed:
            return
        if not by_id:
            for envelope in valid:
                rid = envelope["id"]
                by_id[rid] = None if rid in by_id else envelope
        ready: list[tuple[dict[str, Any], tuple[bool, Any]]] = []
        for request_id, outcome in answers:
            found = by_id.get(request_id)
            if found is not None and request_id not in sent_now:
                ready.append((found, outcome))
        now: dict[str, list[dict[str, Any]]] = {}
        self._queue_replies(ready, now)
        sent_now.update(e["id"] for e, _ in ready if e.get("reply_to") is None)  # casts
        limit = self.transport.config.max_message_size
        for reply_to, queued in now.items():
            try:
                for body in _reply_bodies(queued, limit, self._keep):
                    self.transport.send_reply(reply_to, body)
            except Exception:  # noqa: BLE001 - they go with the rest, which handles it
                continue
            sent_now.update(reply["id"] for reply in queued)

    def _reply(self, reply_to: str, reply: dict[str, Any]) -> None:
        """Send one reply; raise ``_ReplyNotSent`` when it could not be sent."""
        if self._killed:
            raise _ReplyNotSent(TransportError(reason="the server was killed"), retry=True)
        if reply_to.startswith(_OSLO_REPLY):
            reply_to = reply_to[len(_OSLO_REPLY) :]
            body = _oslo.reply_body(reply, self.transport.config.max_message_size)
        else:
            body = _wire.reply_body(reply, self.transport.config.max_message_size, keep=self._keep)
        try:
            self.transport.send_reply(reply_to, body)
        except TransportError as exc:
            raise _ReplyNotSent(exc, retry=True) from None
        except Exception as exc:  # the driver refused this reply for good
            raise _ReplyNotSent(exc, retry=False) from None

    def _reject(self, incoming: Incoming, exc: MessagingException) -> None:
        request_id, reply_to = _wire.request_reply_info(incoming.body)
        self._answer_refusal(incoming, exc, request_id, reply_to)

    def _answer_refusal(
        self,
        incoming: Incoming,
        exc: MessagingException,
        request_id: str | None,
        reply_to: str | None,
        parked: str = "",
    ) -> None:
        """Tell the caller with a typed error if there is one (and acknowledge), else park
        the message in the dead-letter queue. One log line either way."""
        if request_id and reply_to:
            # Logged before the reply: whoever gets the reply sees the log line written.
            self._bad.warning("rejecting request %s on %s: %s", request_id, self.target.topic, exc)
            try:
                self._reply(reply_to, _wire.error_reply(request_id, exc))
            except _ReplyNotSent:
                pass
            else:
                incoming.ack()
                return
        else:
            self._bad.warning(
                "rejecting a message on %s: %s; parked in the dead-letter queue",
                self.target.topic,
                exc,
            )
        incoming.dead_letter(f"{exc}{parked}")

    def _refuse_oversized(self, incoming: Incoming, limit: int) -> None:
        # NOTE: never decoded: a 100 MB JSON body takes gigabytes as Python objects. The id
        # and reply address come from the first and last bytes only.
        body = incoming.body
        tail = incoming.tail if incoming.size > len(body) else body[-_wire.EXCERPT :]
        request_id, reply_to = _wire.excerpt_reply_info(body[: _wire.EXCERPT], tail)
        exc = MessageTooLarge(size=incoming.size, limit=limit)
        parked = (
            "" if len(body) >= incoming.size else f" (only its first {len(body)} bytes are kept)"
        )
        self._answer_refusal(incoming, exc, request_id, reply_to, parked)

    # -- call monitor -----------------------------------------------------------------
    def _watch(self, envelope: dict[str, Any]) -> bool:
        """Send heartbeats for this request while it runs, if its caller asked for them."""
        request_id, reply_to = envelope["id"], envelope.get("reply_to")
        if not (reply_to and isinstance(reply_to, str)):
            return False
        interval = _heartbeat_interval(envelope.get("hb"))
        if interval is None:
            return False
        with self._lock:
            running = _Running(reply_to, max(interval, MIN_HEARTBEAT_INTERVAL))
            self._running[request_id] = running
            self._start_beat_thread()
            # NOTE: wake the heartbeat thread only when this call is due before the time
            # it sleeps until; waking it for every request cost a thread switch each.
            if running.due < self._beat_wake_at:
                self._beat_wake_at = running.due
                self._beat.notify()
        return True

    def _unwatch(self, request_id: str) -> None:
        with self._lock:
            self._running.pop(request_id, None)

    def _watch_batch(self, envelopes: list[dict[str, Any]]) -> list[str]:
        """:meth:`_watch` for the requests of a batch, under one lock; returns the ids
        watched. Requests with the same reply address and interval share one record."""
        # NOTE: per request, the lock, the heartbeat thread's liveness check and the
        # record cost more than a request's whole validation.
        found: list[tuple[str, str, float]] = []
        # The requests of a batch mostly share their caller's interval: converted once.
        hb: Any = _NO_HEARTBEAT
        interval: float | None = None
        for envelope in envelopes:
            reply_to = envelope.get("reply_to")
            if reply_to and isinstance(reply_to, str):
                value = envelope.get("hb")
                if type(value) is not type(hb) or value != hb:
                    hb, interval = value, _heartbeat_interval(value)
                if interval is not None:
                    found.append((envelope["id"], reply_to, interval))
        if not found:
            return []
        records: dict[tuple[str, float], _Running] = {}
        with self._lock:
            running = self._running
            earliest = None
            for request_id, reply_to, interval in found:
                record = records.get((reply_to, interval))
                if record is None:
                    record = records[(reply_to, interval)] = _Running(
                        reply_to, max(interval, MIN_HEARTBEAT_INTERVAL)
                    )
                    if earliest is None or record.due < earliest:
                        earliest = record.due
                running[request_id] = record
            self._start_beat_thread()
            if earliest is not None and earliest < self._beat_wake_at:
                self._beat_wake_at = earliest
                self._beat.notify()
        return [request_id for request_id, _, _ in found]

    def _unwatch_batch(self, request_ids: list[str]) -> None:
        with self._lock:
            pop = self._running.pop
            for request_id in request_ids:
                pop(request_id, None)

    def _start_beat_thread(self) -> None:  # lock held
        if self._beat_thread is None or not self._beat_thread.is_alive():
            self._beat_thread = threading.Thread(
                target=self._heartbeats, name=f"rpc-heartbeat-{self.target.topic}", daemon=True
            )
            self._beat_thread.start()

    def _hold(self, incoming: Incoming) -> None:  # lock held
        """A message waits for a worker: its callers get heartbeats if it waits long.

        NOTE: without them a request held behind busy workers (or by a conductor that
        froze) looked like one still in the broker's queue, and the caller's monitor could
        not tell a frozen conductor from a busy one. Only messages that wait longer than
        _HELD_GRACE are decoded for it (on the heartbeat thread), so the usual message
        costs a dict entry."""
        held = _Held()
        self._held[incoming] = held
        self._start_beat_thread()
        if held.since + _HELD_GRACE < self._beat_wake_at:
            self._beat_wake_at = held.since + _HELD_GRACE
            self._beat.notify()

    def _release(self, incoming: Incoming) -> None:
        """A worker took the message: running requests are watched by _watch from now."""
        with self._lock:
            held = self._held.pop(incoming, None)
            if held is not None and held.watched:
                for rid, running in held.watched:
                    if self._running.get(rid) is running:
                        del self._running[rid]

    def _watch_held(self, now: float) -> list[tuple[Incoming, bytes]]:  # lock held
        """Messages held past the grace and not decoded yet (they are marked as decoded)."""
        found = []
        for incoming, held in self._held.items():
            if held.watched is None and held.since + _HELD_GRACE <= now:
                held.watched = []
                found.append((incoming, incoming.body))
        return found

    def _held_requests(self, body: bytes) -> list[tuple[str, _Running]]:
        try:
            envelope = _wire.decode(body)
            if _OSLO in envelope:
                envelope = _oslo.request_to_native(envelope)
            batch = _wire.unpack(envelope)
        except Exception:  # a poison message is the worker's to reject
            return []
        found = []
        for item in batch if batch is not None else [envelope]:
            if not isinstance(item, dict):
                continue
            request_id, reply_to = _wire.reply_info(item)
            interval = _heartbeat_interval(item.get("hb"))
            if request_id and reply_to and interval is not None:
                running = _Running(reply_to, max(interval, 0.05))
                running.due = 0.0  # at once: it has waited _HELD_GRACE already
                found.append((request_id, running))
        return found

    def _heartbeats(self) -> None:
        # Heartbeats go out from their own thread: a handler busy for minutes still shows
        # its caller it is alive. The thread outlives any failure: without it every caller
        # of this server would lose its call monitor.
        while True:
            try:
                self._send_heartbeats()
                return
            except BaseException as exc:
                LOG.error(
                    "the heartbeat thread of %s failed (%s); restarting it",
                    self.target.topic,
                    one_line(exc),
                )
                with self._lock:
                    self._beat_wake_at = float("-inf")
                time.sleep(0.05)

    def _send_heartbeats(self) -> None:
        while True:
            with self._lock:
                if self.state is ServerState.STOPPED:
                    self._beat_thread = None
                    self._held.clear()
                    return
                now = time.monotonic()
                to_decode = self._watch_held(now) if self._held else []
            if to_decode:
                decoded = [(incoming, self._held_requests(body)) for incoming, body in to_decode]
                with self._lock:
                    for incoming, requests in decoded:
                        held = self._held.get(incoming)
                        if held is None:
                            continue  # a worker took it meanwhile
                        held.watched = requests
                        for rid, running in requests:
                            self._running.setdefault(rid, running)
            with self._lock:
                if self._stopped.is_set():
                    continue
                now = time.monotonic()
                due = [(rid, r.reply_to) for rid, r in self._running.items() if r.due <= now]
                for rid, _ in due:
                    self._running[rid].due = now + self._running[rid].interval
                if not due:
                    nxt = min((r.due for r in self._running.values()), default=None)
                    waiting = [
                        h.since + _HELD_GRACE for h in self._held.values() if h.watched is None
                    ]
                    if waiting:
                        nxt = min(waiting) if nxt is None else min(nxt, min(waiting))
                    self._beat_wake_at = float("inf") if nxt is None else nxt
                    self._beat.wait(None if nxt is None else max(0.0, nxt - now))
                    continue
            for rid, reply_to in due:
                try:
                    self._reply(reply_to, _wire.heartbeat_reply(rid))
                except _ReplyNotSent as exc:
                    LOG.debug("heartbeat for %s not sent: %s", rid, exc)
