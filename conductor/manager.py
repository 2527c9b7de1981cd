"""The conductor's RPC endpoint: nova's object methods and their argument checks.

Each method checks its arguments and hands the method body to the conductor's
:class:`~conductor.unit_of_work.UnitOfWork`, which runs it in its own transaction, exactly
once. The requests of one message reach :meth:`ConductorManager.serve_batch` together
(the endpoint is a ``transport.BatchEndpoint``) and run in one transaction; before that,
the stock gets by id of every message are answered from their rows
(:class:`~conductor.lane.StockGets`) and its stock saves of changed fields written from
their primitives (:class:`~conductor.save_lane.StockSaves`), through the
``transport.RawEndpoint`` hook.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Engine

import transport
from conductor.lane import StockGets
from conductor.metrics import Metrics
from conductor.save_lane import StockSaves
from conductor.unit_of_work import ServedContext, UnitOfWork, digest_of
from objects import base, exception, indirection
from objects.context import RequestContext


class ConductorManager:
    """Endpoint for the conductor topic; method names and arguments are nova's.

    The arguments are :class:`~conductor.unit_of_work.UnitOfWork`'s, handed to it as
    they are: it runs every request (transactions, exactly-once, metrics).
    """

    target = transport.Target(namespace=None, version="1.0")

    #: Ordinary outcomes for callers, not server faults: logged in one line, no traceback.
    expected_exceptions = (
        exception.NotFound,
        exception.ConcurrentUpdate,
        exception.DuplicateEntry,
        exception.RequestIdReused,
        exception.ObjectActionError,
        exception.ObjectValueError,
        exception.UnsupportedObjectError,
        exception.IncompatibleObjectVersion,
        exception.DatabaseError,  # logged by UnitOfWork.run in one line
    )

    def __init__(
        self,
        engine: Engine,
        prune_every: float = 60.0,
        keep_results: float = 3600.0,
        serialize_transactions: bool = False,
        project_scoping: bool = False,
        metrics: Metrics | None = None,
    ) -> None:
        self._work = UnitOfWork(
            engine,
            prune_every=prune_every,
            keep_results=keep_results,
            serialize_transactions=serialize_transactions,
            project_scoping=project_scoping,
            metrics=metrics,
        )
        # NOTE: off under project scoping: the lane does not check whose rows it reads.
        self._lane = (
            None
            if project_scoping
            else StockGets(engine, metrics=metrics, lock=self._work.transaction_lock)
        )
        # NOTE: off under project scoping too: the lane writes rows whoever owns them.
        self._save_lane = None if project_scoping else StockSaves(self._work, metrics=metrics)

    def close(self) -> None:
        """Release what the endpoint holds besides the engine (the lane's connections)."""
        if self._lane is not None:
            self._lane.close()

    # -- RPC methods (nova's names) -------------------------------------------------

    def object_class_action_versions(
        self,
        context: RequestContext,
        objname: str,
        objmethod: str,
        object_versions: dict[str, str],
        args: list[Any],
        kwargs: dict[str, Any],
    ) -> Any:
        _check_call_shape(objname, objmethod, args, kwargs)
        if not isinstance(object_versions, dict):
            raise exception.ObjectValueError(reason="object_versions must be a mapping")
        digest = (
            _no_digest
            if _in_batch(context)
            else digest_of(
                context,
                "object_class_action_versions",
                {
                    "objname": objname,
                    "objmethod": objmethod,
                    "object_versions": object_versions,
                    "args": args,
                    "kwargs": kwargs,
                },
            )
        )
        return self._work.run(
            context,
            f"{objname}.{objmethod}",
            lambda: indirection.handle_class_action(
                context, objname, objmethod, object_versions, args, kwargs
            ),
            reads_only=objmethod in _BUILTIN_READS.get(objname, ()),
            digest=digest,
        )

    def object_action(
        self,
        context: RequestContext,
        objinst: Any,
        objmethod: str,
        args: list[Any],
        kwargs: dict[str, Any],
        object_versions: dict[str, str] | None = None,
    ) -> Any:
        if not isinstance(objinst, base.VersionedObject):
            raise exception.ObjectValueError(reason="objinst must be a versioned object primitive")
        _check_call_shape(objinst.obj_name(), objmethod, args, kwargs)
        if object_versions is not None and not isinstance(object_versions, dict):
            raise exception.ObjectValueError(reason="object_versions must be a mapping")
        digest = (
            _no_digest
            if _in_batch(context)
            else digest_of(
                context,
                "object_action",
                {
                    "objinst": objinst,
                    "objmethod": objmethod,
                    "args": args,
                    "kwargs": kwargs,
                    "object_versions": object_versions,
                },
            )
        )
        return self._work.run(
            context,
            f"{objinst.obj_name()}.{objmethod}",
            lambda: list(
                indirection.handle_object_action(
                    context, objinst, objmethod, args, kwargs, object_versions
                )
            ),
            digest=digest,
        )

    def object_backport_versions(
        self, context: RequestContext, objinst: Any, object_versions: dict[str, str]
    ) -> Any:
        if not isinstance(objinst, base.VersionedObject):
            raise exception.ObjectValueError(reason="objinst must be a versioned object primitive")
        with base.local_execution():
            return indirection.handle_backport(context, objinst, object_versions)

    # -- the hooks (transport.RawEndpoint, transport.BatchEndpoint) ----------------------

    def serve_raw(
        self, requests: Sequence[transport.RawRequest], serializer: transport.Serializer
    ) -> Sequence[tuple[bool, Any] | None]:
        """Answer a message's stock gets from their rows (``conductor.lane``) and write its
        stock saves (``conductor.save_lane``); never an RPC method. Only for a serializer
        whose answers the lanes' are (``answers_stock_gets``), and while the RPC methods
        are this class's own."""
        if self._lane is None or not _answers_stock_gets(serializer):
            return [None] * len(requests)
        kind = type(self)
        outcomes: list[tuple[bool, Any] | None] = (
            self._lane.serve(requests)
            if kind.object_class_action_versions is ConductorManager.object_class_action_versions
            else [None] * len(requests)
        )
        if None in outcomes and any(outcome is not None for outcome in outcomes):
            # The reads answered: sent now, not after the writes of the message commit.
            transport.answer_now(
                [
                    (request[0], outcome)
                    for request, outcome in zip(requests, outcomes, strict=True)
                    if outcome is not None
                ]
            )
        if self._save_lane is not None and kind.object_action is ConductorManager.object_action:
            self._save_lane.serve(requests, outcomes, serializer)
        return outcomes

    def serve_inline(
        self, request: transport.RawRequest, serializer: transport.Serializer
    ) -> tuple[bool, Any] | None:
        """A lone stock get answered on the consuming thread (``transport.InlineEndpoint``,
        ``StockGets.serve_inline``), or None; never an RPC method. As :meth:`serve_raw`."""
        if not self._lane_answers(serializer):
            return None
        assert self._lane is not None
        return self._lane.serve_inline(request)

    def serve_local(
        self, request: transport.RawRequest, serializer: transport.Serializer
    ) -> transport.InProcessResult | None:
        """A lone stock get's row for a caller in this process (``transport.InlineEndpoint
        .serve_local``, ``StockGets.serve_local``), or None with nothing done; never an
        RPC method."""
        if not self._lane_answers(serializer):
            return None
        assert self._lane is not None
        return self._lane.serve_local(request)

    def _lane_answers(self, serializer: transport.Serializer) -> bool:
        """Whether the lane may answer a lone get: there is one, the RPC method it stands
        for is ours, and so are the answers' serializer's."""
        return (
            self._lane is not None
            and type(self).object_class_action_versions
            is ConductorManager.object_class_action_versions
            and _answers_stock_gets(serializer)
        )

    def serve_batch(self, calls: Sequence[transport.BatchCall]) -> None:
        """Run the requests of one message in one transaction (see
        ``UnitOfWork.run_batch``); never an RPC method."""
        self._work.run_batch(calls)


class ConductorManagerV3:
    """The same object methods at nova's conductor RPC API version 3.x.

    ``nova.conductor.rpcapi.ConductorAPI`` (and computes built like it, on oslo.messaging)
    sends ``object_class_action_versions``, ``object_action`` and
    ``object_backport_versions`` at version 3.0; this endpoint hands them to the
    :class:`ConductorManager` it wraps, so they run exactly as our own clients' (1.x).
    """

    target = transport.Target(namespace=None, version="3.0")
    expected_exceptions = ConductorManager.expected_exceptions

    def __init__(self, manager: ConductorManager, object_form: Any = None) -> None:
        self._manager = manager
        # Answers to requests carrying no object go out in this form (conductor.namespaces).
        self._form = object_form

    def _mark(self, context: Any) -> None:
        if self._form is not None and isinstance(context, ServedContext):
            if context.object_form is None:
                context.object_form = self._form

    def object_class_action_versions(
        self,
        context: RequestContext,
        objname: str,
        objmethod: str,
        object_versions: dict[str, str],
        args: list[Any],
        kwargs: dict[str, Any],
    ) -> Any:
        self._mark(context)
        return self._manager.object_class_action_versions(
            context, objname, objmethod, object_versions, args, kwargs
        )

    def object_action(
        self,
        context: RequestContext,
        objinst: Any,
        objmethod: str,
        args: list[Any],
        kwargs: dict[str, Any],
        object_versions: dict[str, str] | None = None,
    ) -> Any:
        self._mark(context)
        return self._manager.object_action(
            context, objinst, objmethod, args, kwargs, object_versions
        )

    def object_backport_versions(
        self, context: RequestContext, objinst: Any, object_versions: dict[str, str]
    ) -> Any:
        self._mark(context)
        return self._manager.object_backport_versions(context, objinst, object_versions)

    def serve_raw(
        self, requests: Sequence[transport.RawRequest], serializer: transport.Serializer
    ) -> Sequence[tuple[bool, Any] | None]:
        """The wrapped manager's lane, for answers in our own object form only."""
        if (
            self._form is not None
            or type(self).object_class_action_versions
            is not ConductorManagerV3.object_class_action_versions
            or type(self).object_action is not ConductorManagerV3.object_action
        ):
            return [None] * len(requests)
        return self._manager.serve_raw(requests, serializer)

    def serve_inline(
        self, request: transport.RawRequest, serializer: transport.Serializer
    ) -> tuple[bool, Any] | None:
        """The wrapped manager's inline lane, as :meth:`serve_raw`."""
        if (
            self._form is not None
            or type(self).object_class_action_versions
            is not ConductorManagerV3.object_class_action_versions
        ):
            return None
        return self._manager.serve_inline(request, serializer)


#: The built-in objects' class methods that only read: when one fails, it cannot be
#: because an earlier run of the same request wrote (see ``UnitOfWork.run``).
_BUILTIN_READS: dict[str, frozenset[str]] = {
    "Instance": frozenset({"get", "get_by_uuid"}),
    "InstanceList": frozenset({"get_all", "get_by_host"}),
    "Flavor": frozenset({"get", "get_by_flavorid"}),
    "ComputeNode": frozenset({"get", "get_by_host"}),
}


def _answers_stock_gets(serializer: Any) -> bool:
    answers = getattr(serializer, "answers_stock_gets", None)
    return callable(answers) and answers() is True


def _no_digest() -> str | None:
    return None


def _in_batch(context: Any) -> bool:
    """Whether a request runs as part of a batch, which takes the digests itself (see
    ``UnitOfWork.run_batch``)."""
    return isinstance(context, RequestContext) and context.has_db


def _check_call_shape(objname: Any, objmethod: Any, args: Any, kwargs: Any) -> None:
    if not isinstance(objname, str) or not isinstance(objmethod, str):
        raise exception.ObjectValueError(reason="objname and objmethod must be strings")
    if not isinstance(args, (list, tuple)):
        raise exception.ObjectValueError(reason="args must be a list")
    if not isinstance(kwargs, dict):
        raise exception.ObjectValueError(reason="kwargs must be a mapping")
