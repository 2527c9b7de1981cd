"""The caller's side of RPC: :class:`RPCClient`."""

from __future__ import annotations

import concurrent.futures
import math
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar

from transport import _oslo, _wire
from transport._replies import _END, PendingCall
from transport.driver import DirectAnswer, routing_key
from transport.exceptions import InvalidTarget, UnsupportedVersion
from transport.futures import RPCFuture
from transport.serializer import Serializer, context_to_dict
from transport.target import Target, version_is_compatible

if TYPE_CHECKING:
    from transport._transport import Transport

__all__ = ["RPCClient"]

T = TypeVar("T")

_TARGET_FIELDS = ("topic", "server", "fanout", "version", "namespace", "exchange")
#: What a request envelope adds around its context and arguments, at most: its id, method,
#: namespace, version, reply address and heartbeat keys (RPCClient.answer_locally).
_ENVELOPE_ROOM = 4096
_UNSET: Any = object()
_NOT_PLAIN = _wire.NOT_PLAIN


def _request_id() -> str:
    """A new unique request id (the server recognises a replay by it).

    NOTE: os.urandom on every call, although a per-process prefix and a counter cost less
    CPU where they run: the system call lets go of the GIL, so the I/O thread takes the
    replies in as they come while the caller starts calls. Measured with a counter instead:
    the main thread of a pipelined get_async[256] against RabbitMQ went from about 30 to
    about 43 us of CPU per get (it found its loads unfinished and blocked more often).
    """
    return os.urandom(16).hex()


class RPCClient:
    """Sends requests to the servers of a :class:`~transport.target.Target`.

    Args:
        transport: from :func:`transport.get_transport`.
        target: where requests go; needs a topic to send.
        version_cap: highest version the servers are known to handle; sending above it
            raises UnsupportedVersion locally.
        timeout: default overall deadline of a call in seconds (None: the transport's).
        serializer: turns contexts and entities into primitives (None: contexts as dicts,
            entities as they are).
        allowed_remote_exmods: extra modules whose exceptions come back as their own types.

    Example::

        client = RPCClient(transport, Target(topic="conductor", version="1.0"))
        future = client.call_async(ctxt, "object_action", objinst=obj, objmethod="save",
                                   args=[], kwargs={})
        updates, result = future.wait()
    """

    def __init__(
        self,
        transport: Transport,
        target: Target,
        version_cap: str | None = None,
        timeout: float | None = None,
        serializer: Serializer | None = None,
        allowed_remote_exmods: Iterable[str] = (),
        call_monitor_interval: float | None = _UNSET,
    ) -> None:
        self.transport = transport
        self.target = target
        self.version_cap = version_cap
        self.timeout = timeout
        self.serializer = serializer
        self.allowed_remote_exmods = tuple(allowed_remote_exmods)
        self._plain_kept: tuple[Any, Any, Any, bool] | None = None
        self.call_monitor_interval = (
            transport.config.call_monitor_interval
            if call_monitor_interval is _UNSET
            else call_monitor_interval
        )
        self._exmods = _wire.DEFAULT_ALLOWED_EXMODS + self.allowed_remote_exmods
        # wire=oslo: requests in oslo.messaging's envelope (see transport._oslo).
        self._oslo = transport.config.wire == "oslo"
        self._forget = transport.forget_call  # one bound method for all its calls
        # (target, version_cap) last found fit to send (see _check_target).
        self._checked: tuple[Target, str | None] | None = None
        self._route = ""  # the checked target's routing key

    def prepare(self, **overrides: Any) -> RPCClient:
        """A client sharing this transport with some settings replaced.

        Accepts Target fields (``topic``, ``server``, ``fanout``, ``version``, ``namespace``,
        ``exchange``) and ``timeout``, ``version_cap``, ``serializer``,
        ``allowed_remote_exmods``, ``call_monitor_interval``.
        """
        target_overrides = {k: overrides.pop(k) for k in _TARGET_FIELDS if k in overrides}
        settings: dict[str, Any] = {
            "version_cap": self.version_cap,
            "timeout": self.timeout,
            "serializer": self.serializer,
            "allowed_remote_exmods": self.allowed_remote_exmods,
            "call_monitor_interval": self.call_monitor_interval,
        }
        unknown = set(overrides) - set(settings)
        if unknown:
            raise TypeError(f"prepare() got unknown options {sorted(unknown)}")
        settings.update(overrides)
        return RPCClient(self.transport, self.target.replace(**target_overrides), **settings)

    def can_send_version(self, version: str | None = None) -> bool:
        """Whether ``version`` (default: the target's) is within the version cap."""
        version = version or self.target.version
        return self.version_cap is None or version_is_compatible(self.version_cap, version)

    # -- sending ------------------------------------------------------------------
    def cast(self, ctxt: Any, method: str, **kwargs: Any) -> None:
        """Send a request without waiting for a result; returns once the broker has it.

        A fanout target reaches every started server of the topic. With the transport's
        ``cast_ttl`` set, a cast no server took within that many seconds is dropped.

        Raises:
            MessageUndeliverable: nobody consumes the (non-fanout) topic.
        """
        envelope = self._envelope(ctxt, method, kwargs, reply_to=None)
        self._send(envelope, ttl=self.transport.config.cast_ttl)

    def call(self, ctxt: Any, method: str, **kwargs: Any) -> Any:
        """Invoke ``method`` on one server and return its (deserialized) result.

        Raises:
            MessagingTimeout: no reply within the timeout.
            CallMonitorTimeout: the server running it stopped sending heartbeats.
            MessageUndeliverable: nobody consumes the topic.
            RemoteError: the server raised a type the caller may not rebuild; allowed
                types are raised as themselves.
        """
        return self.call_async(ctxt, method, **kwargs).wait()

    def call_async(self, ctxt: Any, method: str, **kwargs: Any) -> RPCFuture:
        """Like :meth:`call` but return at once with a future of the result."""
        call = self._start(ctxt, method, kwargs, multi=False)
        return call.future  # type: ignore[return-value]  # an RPCFuture unless given one

    def start_call(
        self,
        ctxt: Any,
        method: str,
        kwargs: dict[str, Any],
        *,
        future: Future[T],
        then: Callable[[Any], T] | None = None,
        on_error: Callable[[BaseException], bool] | None = None,
        plain: bool = False,
        takes_local: bool = False,
        transient: bool = False,
    ) -> Future[T]:
        """Like :meth:`call_async`, resolving the caller's own ``future``.

        Args:
            future: resolved with the result (one future for the whole call).
            then: applied to the deserialized result on the thread that receives the
                reply, before ``future`` resolves (it must not block); what it returns
                (or raises) becomes the outcome.
            on_error: called with a failure first; returning True takes it over (the
                caller sends again with the same future) and leaves ``future`` pending.
            plain: the caller vouches that ``kwargs`` holds only ``str`` keys and
                ``str``, ``int``, ``bool``, ``None`` and finite ``float`` values, in dicts
                and lists made for this call that nobody changes afterwards. With no
                serializer, the request is then encoded by the sender thread with the
                rest of its batch, not on this thread (the context goes as its
                ``wire_dict()`` or as a copy of its dict taken now: see
                ``transport.serializer.context_to_dict``); what the broker cannot take
                (a size over the limit) fails ``future`` instead of raising here. A
                server in this process that answers at once gets it as it is, with a
                copy of the context, and no encode (``_wire.Deferred.handed``).
            takes_local: ``then`` also takes the in-process form of a result
                (``transport.InProcessResult.local``) that an endpoint in this process
                answering at once may give; otherwise such a result comes as its wire form.
            transient: the caller vouches that the call changes nothing (a read): its
                request need not outlive a broker restart, so it goes as a transient
                message (with others like it). Nothing is lost that a persistent one
                would keep: a broker restart takes the caller's reply queue with it, and
                the call fails with ``ConnectionLost`` either way.
        """
        self._start(
            ctxt,
            method,
            kwargs,
            multi=False,
            future=future,
            then=then,
            on_error=on_error,
            plain=plain,
            takes_local=takes_local and then is not None,
            transient=transient,
        )
        return future

    def answer_locally(self, ctxt: Any, method: str, kwargs: dict[str, Any]) -> Any | None:
        """The call's result in its in-process form, when a server in this process answers
        it at once with one (``Driver.offer_direct``, an endpoint's ``serve_local``: see
        ``transport.InlineEndpoint``) and that form fits (``InProcessResult.local``): the
        call is then done, and the caller takes the result as ``start_call``'s
        ``takes_local`` step would. None: nothing was done; send the call as ever.

        For calls ``start_call`` would take as ``plain`` (``kwargs`` vouched plain JSON,
        made for this call) on a client with no serializer. What a broker would hold the
        request to still holds: the version cap (raised as from ``start_call``), the size
        limit and depth (a request near them goes the ordinary way, which decides); the
        server takes it only while running with no worker busy, with a copy of the
        context, as it takes any request answered on its caller's thread. No envelope,
        call registration or reply is made for it.
        """
        transport = self.transport
        if self._oslo or self.serializer is not None or not transport.in_process:
            return None
        answer = transport.direct_answerer(self.target)
        local = getattr(answer, "local", None)
        if local is None or not self._plain_envelope(self.call_monitor_interval):
            return None
        target = self._checked_target()
        wire_ctxt = _plain_context(ctxt)
        if wire_ctxt is None:
            return None
        limit = transport.config.max_message_size
        # NOTE: the request's context and arguments as the broker would carry them, with
        # room for the envelope's own keys (under _ENVELOPE_ROOM bytes, one level).
        room = None if limit is None else limit - _ENVELOPE_ROOM - len(method)
        if _wire.plain_body({"ctxt": wire_ctxt, "args": kwargs}, room, _wire.MAX_DEPTH - 1) is None:
            return None
        ctxt_copy = _wire.plain_copy(wire_ctxt)
        if ctxt_copy is _NOT_PLAIN:
            return None
        result = local(_request_id(), ctxt_copy, method, kwargs, target.namespace, target.version)
        return None if result is None else result.local(limit)

    def multicall(self, ctxt: Any, method: str, **kwargs: Any) -> Iterator[Any]:
        """Invoke ``method`` and iterate its results as the server produces them.

        An endpoint method returning a generator streams each item; an ordinary one yields
        its single result. The timeout covers the whole stream.
        """
        call = self._start(ctxt, method, kwargs, multi=True)
        return self._iterate(call)

    def _iterate(self, call: PendingCall) -> Iterator[Any]:
        assert call.items is not None
        try:
            while True:
                item = call.items.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.transport.forget_call(call.request_id)

    def _start(
        self,
        ctxt: Any,
        method: str,
        kwargs: dict[str, Any],
        *,
        multi: bool,
        future: Future[Any] | None = None,
        then: Callable[[Any], Any] | None = None,
        on_error: Callable[[BaseException], bool] | None = None,
        plain: bool = False,
        takes_local: bool = False,
        transient: bool = False,
    ) -> PendingCall:
        if self.target.fanout:
            raise InvalidTarget(
                target=repr(self.target), reason="a call cannot go to a fanout target"
            )
        transport = self.transport
        timeout = self.timeout if self.timeout is not None else transport.config.default_timeout
        monitor_interval = self.call_monitor_interval
        answer: DirectAnswer | None = None
        body: bytes | _wire.Deferred
        if self._oslo:
            envelope = self._envelope(ctxt, method, kwargs, reply_to=transport.reply_address)
            body, monitor_interval = self._oslo_call(envelope, multi)
        else:
            answer = None if multi else transport.direct_answerer(self.target)
            wire_ctxt = (
                _plain_context(ctxt)
                if plain and not multi and self._plain_envelope(monitor_interval)
                else None
            )
            envelope = self._envelope(
                ctxt,
                method,
                kwargs,
                transport.reply_address,
                (multi, monitor_interval),
                wire_ctxt,
            )
            if wire_ctxt is not None:
                body = _wire.Deferred(envelope)
            else:
                body = _wire.encode(envelope, transport.config.max_message_size, keep=bool(answer))
        convert = self._converter(ctxt)
        if then is not None:
            convert = _compose(convert, then)
        call = PendingCall(
            envelope["id"],
            method,
            timeout,
            monitor_interval,
            convert,
            self._exmods,
            multi=multi,
            future=future,
            on_error=on_error,
        )
        if answer is not None and self._answered_directly(answer, body, call, takes_local):
            return call
        call.queue = self._route  # set by _envelope's check of this target
        call.forget = self._forget
        transport.register_call(call)

        # NOTE: the send itself happens on the transport's sender thread, which packs
        # requests queued meanwhile into one broker message; a failure to send (nobody
        # consumes the topic, broker gone) fails this call's future.
        try:
            transport.send_request(
                self.target,
                body,
                timeout,
                call.on_sent,
                call=True,
                batchable=not (multi or self._oslo),
                transient=transient,
            )
        except BaseException:  # the transport was cleaned up: nothing will answer
            transport.forget_call(call.request_id)
            raise
        return call

    def _plain_envelope(self, monitor_interval: float | None) -> bool:
        """Whether this client's own parts of an envelope are plain JSON (see
        ``_wire.plain_copy``): no serializer, and the target's namespace and version and
        the heartbeat interval of plain types."""
        target, serializer = self.target, self.serializer
        kept = self._plain_kept
        if (
            kept is not None
            and kept[0] is target
            and kept[1] is serializer
            and kept[2] is monitor_interval
        ):
            return kept[3]
        namespace, version = target.namespace, target.version
        plain = (
            serializer is None
            and (namespace is None or type(namespace) is str)
            and (version is None or type(version) is str)
            and (monitor_interval is None or _wire.plain_copy(monitor_interval) is not _NOT_PLAIN)
        )
        # NOTE: asked call after call with the same three objects (a Target is frozen).
        self._plain_kept = (target, serializer, monitor_interval, plain)
        return plain

    def _answered_directly(
        self,
        answer: DirectAnswer,
        body: bytes | _wire.Deferred,
        call: PendingCall,
        takes_local: bool = False,
    ) -> bool:
        """Whether a server in this process answered the call on this thread
        (``Driver.offer_direct``); then ``call`` has its outcome.

        The server reads what the broker would have given it (a copy; what JSON cannot
        carry fails here as it would have), and the caller what it would have got back.
        Both go through the wire's encoding, except where a copy through JSON would read
        back equal and owned by nobody else: a vouched plain request
        (``_wire.Deferred.handed``) and a fresh plain result (``_wire.FreshJSON``), each
        within the broker's size limit. Only the broker, the sender and the reply thread
        are left out. A caller that ``takes_local`` gets an endpoint's in-process form of
        its result (``_wire.InProcessResult``) as it is, when that form says it fits.
        """
        limit = self.transport.config.max_message_size
        if isinstance(body, _wire.Deferred):
            request = body.handed(limit)
            if request is None:
                return False  # the sender's encode says what is wrong with it
        else:
            request = _wire.decode(body)
        outcome = answer(request)
        if outcome is None:
            return False
        ok, value = outcome
        if ok and isinstance(value, _wire.InProcessResult):
            local = value.local(limit) if takes_local else None
            if local is not None:
                call.deliver(local)
                return True
            value = value.wire()
            if value is None:
                return False  # a worker answers it
        request_id = call.request_id
        if ok and type(value) is _wire.FreshJSON:
            taken = _wire.handed_result(request_id, value, limit)
            if taken is not None:
                call.deliver(taken)
                return True
        reply = _wire.decode(
            _wire.reply_body(
                _wire.result_reply(request_id, value)
                if ok
                else _wire.error_reply(request_id, value),
                limit,
                keep=True,
            )
        )
        if reply["t"] == "r":
            call.deliver(reply["v"])
        else:
            call.fail(_wire.deserialize_exception(reply["exc"], call.allowed_exmods))
        return True

    def _oslo_call(self, envelope: dict[str, Any], multi: bool) -> tuple[bytes, float | None]:
        """An oslo.messaging call's body, and the heartbeat interval to expect.

        oslo's ``_timeout`` is the caller's call-monitor timeout (whole seconds, at least
        2): its servers beat every ``_timeout / 2`` seconds."""
        if multi:
            raise InvalidTarget(
                target=repr(self.target), reason="oslo.messaging servers have no multicall"
            )
        interval, monitor = self.call_monitor_interval, None
        if interval:
            misses = self.transport.config.call_monitor_misses
            monitor = max(2, math.ceil(interval * misses))
            interval = monitor / misses
        return self._oslo_body(envelope, monitor), interval

    def _oslo_body(self, envelope: dict[str, Any], monitor: int | None) -> bytes:
        """``envelope`` in oslo.messaging's form (its ``reply_to`` is None for a cast)."""
        return _oslo.encode_request(
            envelope["id"],
            envelope["method"],
            envelope["args"],
            envelope["ctxt"],
            envelope["ns"],
            envelope["ver"],
            envelope["reply_to"],
            monitor,
            self.transport.config.max_message_size,
        )

    def _converter(self, ctxt: Any) -> Any:
        serializer = self.serializer
        if serializer is None:
            return _identity
        return lambda value: serializer.deserialize_entity(ctxt, value)

    def _envelope(
        self,
        ctxt: Any,
        method: str,
        kwargs: dict[str, Any],
        reply_to: str | None,
        monitor: tuple[bool, float | None] | None = None,
        ctxt_dict: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The request envelope; ``monitor`` (a native call's ``multi`` and heartbeat
        interval) adds those two keys. ``ctxt_dict``: the context as a dict already (then
        ``kwargs`` go as they are)."""
        target = self._checked_target()
        serializer = self.serializer
        if ctxt_dict is not None:
            args = kwargs
        elif serializer is None:
            ctxt_dict = context_to_dict(ctxt)
            args = kwargs
        else:
            ctxt_dict = serializer.serialize_context(ctxt)
            args = {k: serializer.serialize_entity(ctxt, v) for k, v in kwargs.items()}
        if monitor is None:
            return {
                "id": _request_id(),
                "method": method,
                "args": args,
                "ctxt": ctxt_dict,
                "ns": target.namespace,
                "ver": target.version,
                "reply_to": reply_to,
            }
        return {
            "id": _request_id(),
            "method": method,
            "args": args,
            "ctxt": ctxt_dict,
            "ns": target.namespace,
            "ver": target.version,
            "reply_to": reply_to,
            "multi": monitor[0],
            "hb": monitor[1],
        }

    def _checked_target(self) -> Target:
        """The target, once :meth:`_check_target` passed for it and the version cap (it
        raises what sending there would)."""
        target = self.target
        checked = self._checked
        if checked is None or checked[0] is not target or checked[1] != self.version_cap:
            self._check_target()
        return target

    def _check_target(self) -> None:
        """Raise what sending to the target at its version would; remember that it passed
        (for this target and version cap: both are fixed per client in practice)."""
        target, version_cap = self.target, self.version_cap
        target.require_topic()
        version = target.version
        if not self.can_send_version(version):
            raise UnsupportedVersion(
                f"version {version} is above the version cap {version_cap}",
                version=version,
                version_cap=version_cap,
                namespace=target.namespace,
            )
        self._route = routing_key(target)
        self._checked = (target, version_cap)

    def _send(self, envelope: dict[str, Any], *, ttl: float | None) -> None:
        """Send and wait until the broker has it (casts), raising what the send raised."""
        if self._oslo:
            body = self._oslo_body(envelope, None)
        else:
            body = _wire.encode(envelope, self.transport.config.max_message_size)
        sent: concurrent.futures.Future[None] = concurrent.futures.Future()

        def on_sent(error: BaseException | None) -> None:
            if error is None:
                sent.set_result(None)
            else:
                sent.set_exception(error)

        self.transport.send_request(self.target, body, ttl, on_sent)
        sent.result()


def _plain_context(ctxt: Any) -> dict[str, Any] | None:
    """The context as a dict a deferred envelope may carry (plain JSON nobody changes:
    the context's own ``wire_dict()``, else a copy of its dict), or None."""
    wire_dict = getattr(ctxt, "wire_dict", None)
    if wire_dict is not None:
        kept = wire_dict()
        if type(kept) is dict:
            return kept
    copied = _wire.plain_copy(context_to_dict(ctxt))
    return None if copied is _NOT_PLAIN else copied


def _identity(value: Any) -> Any:
    return value


def _compose(first: Callable[[Any], Any], then: Callable[[Any], Any]) -> Callable[[Any], Any]:
    if first is _identity:
        return then
    return lambda value: then(first(value))
