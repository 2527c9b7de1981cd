"""Chooses the endpoint method for a request and runs it.

Endpoints are chosen by namespace and version: an endpoint declares
``target = Target(namespace=..., version=...)`` (default: no namespace, "1.0") and serves
requests of the same namespace whose version has the same major and a minor not above its
own. A request without a version is "1.0".

An endpoint that implements :class:`BatchEndpoint` receives the requests of a message
that carried several together (see :meth:`RPCDispatcher.dispatch_batch`). One that
implements :class:`RawEndpoint` sees every message's requests first, as they arrived, and
may answer some of them itself; one that implements :class:`InlineEndpoint` may answer a
lone request on the thread that consumed it.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

from transport._wire import InProcessResult
from transport.exceptions import NoSuchMethod, UnsupportedVersion
from transport.serializer import NoOpSerializer, Serializer
from transport.target import Target, version_is_compatible

__all__ = [
    "BatchCall",
    "BatchEndpoint",
    "InlineEndpoint",
    "RPCDispatcher",
    "RawEndpoint",
    "RawRequest",
    "answer_now",
    "current_request_id",
    "current_request_redelivered",
]

LOG = logging.getLogger(__name__)

_REFUSED = "_transport_refused"


def _refused(exc: BaseException) -> BaseException:
    """Mark ``exc`` as the refusal of a request (no method, arguments or context that do not
    deserialize, a context the serializer does not accept) rather than an endpoint's failure:
    the server logs it in one line, without a traceback."""
    try:
        setattr(exc, _REFUSED, True)
    except Exception:  # an exception type without a __dict__
        pass
    return exc


def is_refused(exc: BaseException) -> bool:
    """Whether the dispatcher refused the request before an endpoint method ran."""
    return bool(getattr(exc, _REFUSED, False))


_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "transport_request_id", default=None
)


_redelivered: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "transport_request_redelivered", default=True
)


#: Set by the server around the dispatch of a message of several requests: sends answers
#: to some of them at once (see :func:`answer_now`).
_answer_now: contextvars.ContextVar[
    Callable[[Sequence[tuple[str, tuple[bool, Any]]]], None] | None
] = contextvars.ContextVar("transport_answer_now", default=None)


def answer_now(answers: Sequence[tuple[str, tuple[bool, Any]]]) -> None:
    """From :meth:`RawEndpoint.serve_raw`: send these answers (``(request_id, outcome)``,
    outcomes as ``serve_raw`` returns them) now, before the rest of the message is done.

    For answers ready long before the rest: the reads of a message whose writes still
    have to run and commit. The hook still returns every outcome, these included; the
    server sends none twice. An answer that cannot go now goes with the others at the
    end. Does nothing outside the dispatch of a message of several requests.
    """
    send = _answer_now.get()
    if send is not None and answers:
        send(answers)


def current_request_redelivered() -> bool:
    """Whether the request being dispatched may have been delivered before.

    False only when the broker says this is the first delivery, so no earlier attempt can
    have run it; a server that stores results by request id may skip its lookup then.
    True outside dispatch (the safe answer).
    """
    return _redelivered.get()


def current_request_id() -> str | None:
    """The unique id of the request being dispatched, or None outside dispatch.

    The client generates it; it travels in the message and stays the same when the broker
    redelivers the message, so a server can recognise a replay.
    """
    return _request_id.get()


class BatchCall:
    """One request of a message that carried several, as a :class:`BatchEndpoint` sees it.

    The endpoint settles each call with :meth:`set_result` or :meth:`set_exception`;
    :meth:`run` runs the endpoint method the ordinary way, with
    :func:`current_request_id` set.

    Attributes:
        request_id: the request's unique id.
        context: the deserialized context.
        method: the endpoint method's name.
        kwargs: the deserialized arguments.
    """

    __slots__ = (
        "request_id",
        "context",
        "method",
        "kwargs",
        "_func",
        "outcome",
        "redelivered",
        "_rebuild",
    )

    def __init__(
        self,
        request_id: str,
        context: Any,
        method: str,
        kwargs: dict[str, Any],
        func: Any,
        redelivered: bool = True,
        rebuild: Any = None,
    ) -> None:
        self.redelivered = redelivered
        self._rebuild = rebuild
        self.request_id = request_id
        self.context = context
        self.method = method
        self.kwargs = kwargs
        self._func = func
        self.outcome: tuple[bool, Any] | None = None

    def run(self) -> Any:
        """Invoke the endpoint method; return its (not yet serialized) result."""
        token = _request_id.set(self.request_id)
        redelivered_token = _redelivered.set(self.redelivered)
        try:
            result = self._func(self.context, **self.kwargs)
            if inspect.isgenerator(result):
                result = list(result)
            return result
        finally:
            _redelivered.reset(redelivered_token)
            _request_id.reset(token)

    def reset(self) -> None:
        """Deserialize the arguments again, as they arrived: a hook that ran the call and
        threw the work away (a rolled-back transaction) runs it afresh, since the method
        may have changed its argument objects."""
        if self._rebuild is not None:
            self.context, self.kwargs = self._rebuild()
        self.outcome = None

    def set_result(self, value: Any) -> None:
        self.outcome = (True, value)

    def set_exception(self, exc: BaseException) -> None:
        self.outcome = (False, exc)


@runtime_checkable
class BatchEndpoint(Protocol):
    """An endpoint that takes every request of a packed message addressed to it at once
    (for example to run them in one database transaction).

    :meth:`serve_batch` is a hook, not an RPC method: no request can call it by name.
    """

    def serve_batch(self, calls: Sequence[BatchCall]) -> None:
        """Settle every call (:meth:`BatchCall.set_result` or
        :meth:`BatchCall.set_exception`). A call left unsettled is then run the ordinary
        way; when this raises, every unsettled call fails with that error. Called with
        two calls or more, all for methods of this endpoint."""
        ...


#: A request as it arrived: ``(request_id, ctxt, method, args)``, nothing deserialized.
RawRequest = tuple[str, dict[str, Any], str, dict[str, Any]]


@runtime_checkable
class RawEndpoint(Protocol):
    """An endpoint that answers some requests straight from their wire form, before the
    serializer builds their context and arguments (for example the commonest, cheapest
    requests, whose answer it can produce without building objects).

    :meth:`serve_raw` is a hook, not an RPC method: no request can call it by name.
    """

    def serve_raw(
        self, requests: Sequence[RawRequest], serializer: Serializer
    ) -> Sequence[tuple[bool, Any] | None]:
        """For each request (all for methods of this endpoint, from one message, in its
        order): ``(True, serialized result)``, ``(False, exception)``, or None to leave it
        to the ordinary path (deserialize, :class:`BatchEndpoint`, the method). A result
        must be what ``serializer.serialize_entity`` would make of the method's; an
        endpoint that cannot promise it for this serializer answers None.

        When it raises, every request it was given fails with that error. It runs with
        no request id set (:func:`current_request_id`), and with
        :func:`current_request_redelivered` saying the message's flag. Of a message of
        several requests, the ones it leaves run after it in the same ``contextvars``
        context, a copy made for this message, so it may leave word for them in context
        variables. Answers it has long before the rest of the message (its reads, where
        writes follow) it may send at once with :func:`answer_now`. Called for a message
        of one request too."""
        ...


@runtime_checkable
class InlineEndpoint(Protocol):
    """An endpoint that answers some lone requests at once on the thread that consumed
    them, without handing them to a worker (a thread switch each way per request): the
    commonest cheap reads of a caller waiting for each answer before the next.

    The server asks only when no worker is busy, for a message of one request (not a
    batch, not streaming, an oslo.messaging envelope neither) whose caller waits for a
    reply, and only on a transport whose deliveries come on a thread of their own
    (``Driver.consumes_on_own_thread``). Meanwhile no other message is delivered (replies
    to this process's own callers neither): the answer must come within a bound well under
    the call monitor's heartbeat interval (about 0.2 s at worst), and the caller gets no
    heartbeat while it runs.

    :meth:`serve_inline` is a hook, not an RPC method: no request can call it by name.

    An inline endpoint may also have ``serve_local(request, serializer)``, a hook as
    well: for a caller in this process that takes a result's local form
    (``RPCClient.answer_locally``), a ``transport.InProcessResult`` whose local form it
    takes, or None with nothing done (no outcome made, nothing counted or logged): the
    call then goes the ordinary way, :meth:`serve_inline` included. Asked on the caller's
    thread, under the same conditions as :meth:`serve_inline` there.
    """

    def serve_inline(self, request: RawRequest, serializer: Serializer) -> tuple[bool, Any] | None:
        """``(True, serialized result)`` or ``(False, exception)`` as
        :meth:`RawEndpoint.serve_raw` answers (the result may be a
        ``transport.InProcessResult``: its caller in this process may take its local
        form), or None to leave the request to a worker
        (the ordinary way, raw hook included): whenever it is not sure to be quick. Must
        not block on anything unbounded (locks workers hold, RPC calls, a database that
        stopped answering) and should not raise (an exception is that request's failure).
        Runs with no request id set."""
        ...


class RPCDispatcher:
    """Finds and invokes endpoint methods for decoded requests.

    Args:
        endpoints: objects whose public methods are callable remotely.
        serializer: rebuilds the context and arguments; serializes results.
    """

    def __init__(self, endpoints: Sequence[object], serializer: Serializer | None = None) -> None:
        self.endpoints = list(endpoints)
        self.serializer = serializer or NoOpSerializer()
        expected: list[type[BaseException]] = []
        for endpoint in self.endpoints:
            expected.extend(getattr(endpoint, "expected_exceptions", ()))
        #: Exceptions endpoints raise as ordinary outcomes: logged briefly, no traceback.
        self.expected_exceptions: tuple[type[BaseException], ...] = tuple(expected)
        self._found: dict[tuple[str, str | None, str | None], Any] = {}
        self._batch_hooks = {
            id(endpoint): endpoint.serve_batch
            for endpoint in self.endpoints
            if isinstance(endpoint, BatchEndpoint)
        }
        self._raw_hooks = {
            id(endpoint): endpoint.serve_raw
            for endpoint in self.endpoints
            if isinstance(endpoint, RawEndpoint)
        }
        self._inline_hooks = {
            id(endpoint): endpoint.serve_inline
            for endpoint in self.endpoints
            if isinstance(endpoint, InlineEndpoint)
        }
        self._local_hooks = {
            id(endpoint): endpoint.serve_local  # type: ignore[attr-defined]
            for endpoint in self.endpoints
            if isinstance(endpoint, InlineEndpoint)
            and callable(getattr(endpoint, "serve_local", None))
        }

    @property
    def answers_inline(self) -> bool:
        """Whether an endpoint may answer requests inline (:class:`InlineEndpoint`)."""
        return bool(self._inline_hooks)

    def dispatch_inline(
        self,
        request_id: str,
        ctxt: dict[str, Any],
        method: str,
        args: dict[str, Any],
        namespace: str | None = None,
        version: str | None = None,
    ) -> tuple[bool, Any] | None:
        """The outcome of a request its endpoint answered inline (``(True, serialized
        result)`` or ``(False, exception)``), or None: it goes to a worker, as does one
        whose method is not found (the ordinary path refuses it)."""
        hook = self._hook(self._inline_hooks, method, namespace, version)
        if hook is None:
            return None
        try:
            outcome: tuple[bool, Any] | None = hook(
                (request_id, ctxt, method, args), self.serializer
            )
        except BaseException as exc:  # SystemExit too: it fails this request only
            return False, exc
        return outcome

    def dispatch_local(
        self,
        request_id: str,
        ctxt: dict[str, Any],
        method: str,
        args: dict[str, Any],
        namespace: str | None = None,
        version: str | None = None,
    ) -> InProcessResult | None:
        """A request's result in its in-process form, from its endpoint's ``serve_local``
        (see :class:`InlineEndpoint`), or None with nothing done: no such hook, the method
        not found at that version, or the hook left it (or failed: the ordinary way runs
        it again, and says what is wrong)."""
        hook = self._hook(self._local_hooks, method, namespace, version)
        if hook is None:
            return None
        try:
            result = hook((request_id, ctxt, method, args), self.serializer)
        except Exception:
            LOG.debug("a local answer failed; the request goes the ordinary way", exc_info=True)
            return None
        return result if isinstance(result, InProcessResult) else None

    def _hook(
        self,
        hooks: dict[int, Callable[..., Any]],
        method: str,
        namespace: str | None,
        version: str | None,
    ) -> Callable[..., Any] | None:
        """The hook in ``hooks`` of the endpoint whose method a request names, or None
        (also when none is found: the ordinary path refuses such a request)."""
        try:
            func = self._find(method, namespace, version)
        except Exception:
            return None
        return hooks.get(id(getattr(func, "__self__", None)))

    def _find(self, method: str, namespace: str | None, version: str | None) -> Any:
        key = (method, namespace, version)
        func = self._found.get(key)
        if func is None:
            func = self._search(method, namespace, version)
            if len(self._found) < 1024:  # bounded: keys come from the wire
                self._found[key] = func
        return func

    def _search(self, method: str, namespace: str | None, version: str | None) -> Any:
        version_matched = False
        for endpoint in self.endpoints:
            target = getattr(endpoint, "target", None) or Target()
            if target.namespace != namespace:
                continue
            if not version_is_compatible(target.version, version):
                continue
            version_matched = True
            if method.startswith("_") or (
                (method == "serve_batch" and id(endpoint) in self._batch_hooks)
                or (method == "serve_raw" and id(endpoint) in self._raw_hooks)
                or (method == "serve_inline" and id(endpoint) in self._inline_hooks)
                or (method == "serve_local" and id(endpoint) in self._local_hooks)
            ):
                continue
            func = getattr(endpoint, method, None)
            if callable(func):
                return func
        if version_matched:
            raise NoSuchMethod(method=method)
        raise UnsupportedVersion(version=version or "1.0", namespace=namespace)

    def dispatch(
        self,
        request_id: str,
        ctxt: dict[str, Any],
        method: str,
        args: dict[str, Any],
        namespace: str | None = None,
        version: str | None = None,
        redelivered: bool = True,
    ) -> tuple[bool, Any]:
        """Run the method; return ``(streaming, value)``.

        For an ordinary method ``value`` is the serialized result. For a method returning a
        generator ``value`` is an iterator of serialized items; ``current_request_id()``
        stays set while each item is produced.

        Raises:
            NoSuchMethod, UnsupportedVersion: no method to run.
            Exception: whatever the endpoint raised.
        """
        try:
            func = self._find(method, namespace, version)
        except Exception as exc:
            _refused(exc)
            raise
        raw_hook = self._raw_hooks.get(id(getattr(func, "__self__", None)))
        if raw_hook is not None:
            redelivered_token = _redelivered.set(redelivered)
            try:
                answered = raw_hook([(request_id, ctxt, method, args)], self.serializer)[0]
            finally:
                _redelivered.reset(redelivered_token)
            if answered is not None:
                ok, value = answered
                if ok:
                    return False, value
                raise value
        try:
            context, kwargs = self._arguments(request_id, ctxt, args)
        except Exception as exc:
            _refused(exc)
            raise
        token = _request_id.set(request_id)
        redelivered_token = _redelivered.set(redelivered)
        try:
            result = func(context, **kwargs)
            if inspect.isgenerator(result):
                return True, self._stream(request_id, context, result)
            return False, self.serializer.serialize_entity(context, result)
        finally:
            _redelivered.reset(redelivered_token)
            _request_id.reset(token)

    def dispatch_batch(
        self,
        requests: Sequence[tuple[str, dict[str, Any], str, dict[str, Any], str | None, str | None]],
        redelivered: bool = True,
    ) -> list[tuple[bool, Any]]:
        """Run several requests (``(id, ctxt, method, args, namespace, version)``) that
        arrived together; return ``(True, serialized result)`` or ``(False, exception)``
        for each, in order. A :class:`RawEndpoint` sees its requests first; a
        :class:`BatchEndpoint` gets the calls left at once; the other endpoints' calls
        run one by one."""
        if not self._raw_hooks:
            return self._dispatch_batch(requests, redelivered)
        # The raw hooks and the calls they leave share a context of this message's own.
        return contextvars.copy_context().run(self._dispatch_batch, requests, redelivered)

    def _dispatch_batch(
        self,
        requests: Sequence[tuple[str, dict[str, Any], str, dict[str, Any], str | None, str | None]],
        redelivered: bool,
    ) -> list[tuple[bool, Any]]:
        found: list[Any] = []
        outcomes: list[tuple[bool, Any] | None] = []
        raw: dict[int, list[int]] = {}
        # NOTE: the requests of a message mostly call one method: the previous request's
        # method and owner are looked up again only when this one's differ.
        cache = self._found
        raw_hooks = self._raw_hooks
        last_func: Any = None
        owner_id = 0
        for index, (_, _, method, _, namespace, version) in enumerate(requests):
            try:
                func = cache.get((method, namespace, version))
                if func is None:
                    func = self._find(method, namespace, version)
            except Exception as exc:  # this request's own failure
                found.append(None)
                outcomes.append((False, _refused(exc)))
                continue
            found.append(func)
            outcomes.append(None)
            if func is not last_func:
                last_func = func
                owner_id = id(getattr(func, "__self__", None))
            if owner_id in raw_hooks:
                raw.setdefault(owner_id, []).append(index)
        if raw:
            # The hooks see whether the message may have been delivered before (their
            # own context: dispatch_batch runs them in a copy).
            _redelivered.set(redelivered)
        for owner_id, indexes in raw.items():
            try:
                answered = raw_hooks[owner_id](
                    [requests[i][:4] for i in indexes],
                    self.serializer,
                )
            except BaseException as exc:  # the hook failed as a whole
                answered = [(False, exc)] * len(indexes)
            for index, outcome in zip(indexes, answered, strict=True):
                outcomes[index] = outcome
        if raw and None not in outcomes:
            # Every request answered by a raw hook, or refused: nothing left to run.
            return outcomes  # type: ignore[return-value]
        calls: list[BatchCall | None] = []
        by_endpoint: dict[int, tuple[Any, list[BatchCall]]] = {}
        for request, func, outcome in zip(requests, found, outcomes, strict=True):
            if outcome is not None:
                calls.append(None)
                continue
            request_id, ctxt, method, args, _, _ = request
            rebuild = functools.partial(self._arguments, request_id, ctxt, args)
            try:
                context, kwargs = rebuild()
            except Exception as exc:  # this request's own failure
                calls.append(None)
                outcomes[len(calls) - 1] = (False, _refused(exc))
                continue
            call = BatchCall(request_id, context, method, kwargs, func, redelivered, rebuild)
            calls.append(call)
            owner = getattr(func, "__self__", None)
            by_endpoint.setdefault(id(owner), (owner, []))[1].append(call)
        for owner, group in by_endpoint.values():
            hook = self._batch_hooks.get(id(owner))
            if hook is not None and len(group) > 1:
                try:
                    hook(group)
                except BaseException as exc:  # the hook failed as a whole
                    for call in group:
                        if call.outcome is None:
                            call.set_exception(exc)
            for call in group:
                if call.outcome is None:
                    try:
                        call.set_result(call.run())
                    except BaseException as exc:  # SystemExit too: it fails this call only
                        call.set_exception(exc)
        results: list[tuple[bool, Any]] = []
        for maybe_call, outcome in zip(calls, outcomes, strict=True):
            if maybe_call is None:
                assert outcome is not None
                results.append(outcome)
                continue
            assert maybe_call.outcome is not None
            ok, value = maybe_call.outcome
            if ok:
                try:
                    value = self.serializer.serialize_entity(maybe_call.context, value)
                except BaseException as exc:
                    ok, value = False, exc
            results.append((ok, value))
        return results

    def _arguments(
        self, request_id: str, ctxt: dict[str, Any], args: dict[str, Any]
    ) -> tuple[Any, dict[str, Any]]:
        token = _request_id.set(request_id)
        try:
            context = self.serializer.deserialize_context(ctxt)
            kwargs = {k: self.serializer.deserialize_entity(context, v) for k, v in args.items()}
            return context, kwargs
        finally:
            _request_id.reset(token)

    def _stream(self, request_id: str, context: Any, items: Iterator[Any]) -> Iterator[Any]:
        while True:
            token = _request_id.set(request_id)
            try:
                item = next(items)
            except StopIteration:
                return
            finally:
                _request_id.reset(token)
            yield self.serializer.serialize_entity(context, item)
