"""The compute side: an indirection API that sends remotable calls to a conductor.

``connect()`` installs a :class:`ConductorAPI` as the process's indirection API, after
which every ``@remotable`` method of every object travels as RPC to the conductor topic.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from types import MethodType
from typing import TYPE_CHECKING, Any

import transport
from objects import base, exception
from objects.futures import ObjectFuture
from objects.indirection import IndirectionAPI
from objects.persistent import fetches_by_id, save_primitive
from objects.registry import RegistryMemo, VersionedObjectRegistry, version_tuple
from objects.remoting import sent_changes
from objects.serializer import VersionedObjectSerializer, _all_plain, json_scalars
from objects.storage import StoredRecord
from transport.futures import resolve

if TYPE_CHECKING:
    from objects.context import Context

LOG = logging.getLogger(__name__)

#: RPC API version of the conductor endpoint this client speaks.
RPC_API_VERSION = "1.0"


class ConductorAPI(IndirectionAPI):
    """Runs remotable methods on a conductor over a transport.

    Args:
        rpc_transport: a transport from ``transport.get_transport``.
        topic: the conductor's topic.
        timeout: default per-call deadline in seconds.
        owns_transport: close the transport in :meth:`close`.
    """

    #: Remotable calls resolve the caller's own future: one future per call.
    resolves_given_futures = True

    def __init__(
        self,
        rpc_transport: transport.Transport,
        topic: str = "conductor",
        timeout: float | None = 60.0,
        owns_transport: bool = False,
    ) -> None:
        self._transport = rpc_transport
        self._owns_transport = owns_transport
        self.topic = topic
        self.timeout = timeout
        self._client = transport.RPCClient(
            rpc_transport,
            transport.Target(topic=topic, version=RPC_API_VERSION),
            timeout=timeout,
        )
        # NOTE: the client has no serializer: this class converts what it sends and what
        # comes back itself, knowing each request's and reply's shape, so only the parts
        # that may hold objects are walked (arguments, results), once.
        self._objects = base.VersionedObjectSerializer()
        # objname -> highest version the conductor said it supports (learned from
        # IncompatibleObjectVersion), so a client that is ahead backports before sending.
        self._conductor_versions: dict[str, str] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._oslo_wire = getattr(rpc_transport.config, "wire", "native") == "oslo"
        # (objname, objmethod, version) -> whether it only reads (see _only_reads)
        self._reads: RegistryMemo[tuple[str, str, str], bool] = RegistryMemo()

    # -- class actions -------------------------------------------------------------

    def object_class_action_versions(
        self,
        context: Context,
        objname: str,
        objmethod: str,
        object_versions: dict[str, str],
        args: Any,
        kwargs: dict[str, Any],
    ) -> Any:
        return self.object_class_action_versions_async(
            context, objname, objmethod, object_versions, args, kwargs
        ).result()

    def object_class_action_versions_async(
        self,
        context: Context,
        objname: str,
        objmethod: str,
        object_versions: dict[str, str],
        args: Any,
        kwargs: dict[str, Any],
        *,
        future: Future[Any] | None = None,
        then: Callable[[Any], Any] | None = None,
    ) -> Future[Any]:
        objs = self._objects
        wire_args: Any = list(args)
        wire_kwargs: Any = dict(kwargs)
        versions = dict(object_versions)
        # NOTE: arguments that are JSON scalars (a get's id), in the lists and dicts made
        # here, let the transport encode the request off this thread (start_call's
        # ``plain``): what serialize_entity would hand back as they are.
        plain = (
            type(objs) is VersionedObjectSerializer
            and type(objname) is str
            and type(objmethod) is str
            and json_scalars(wire_args)
            and json_scalars(wire_kwargs.values())
            and _str_pairs(versions)
        )
        if not plain and (
            type(objs) is not VersionedObjectSerializer
            or not (_all_plain(wire_args) and _all_plain(wire_kwargs.values()))
        ):
            # NOTE: plain arguments (a get's id) are what serialize_entity hands back
            # as they are; only others take its walk.
            wire_args = objs.serialize_entity(context, wire_args)
            wire_kwargs = objs.serialize_entity(context, wire_kwargs)
        call_args = {
            "objname": objname,
            "objmethod": objmethod,
            "object_versions": versions,
            "args": wire_args,
            "kwargs": wire_kwargs,
        }
        out = future if future is not None else ObjectFuture()
        # A stock get's row as it is, in the conductor's own process
        # (objects.storage.StoredRecord, see conductor.lane): loaded by a pending object,
        # or built into the result (_class_result).
        takes_local = then is None or getattr(then, "takes_record", False)
        if plain and takes_local and objmethod == "get":
            # NOTE: a conductor in this process answers a stock get by id with its row
            # before any request is made (RPCClient.answer_locally; only gets are asked:
            # the lane answers nothing else). Measured on the embedded default: 35-36
            # against 53-55 us per get_async for the call's envelope, registration and
            # reply conversions, with the same checks and the same step taking the row.
            local = self._client.answer_locally(context, "object_class_action_versions", call_args)
            if local is not None:
                # NOTE: what _class_result's step makes of a StoredRecord (the lane's
                # answer), without making the step: ``then`` takes it (takes_record),
                # else it is built here.
                try:
                    if type(local) is not StoredRecord:
                        value = self._class_result(context, then)(local)
                    elif then is None:
                        value = local.build(context)
                    else:
                        value = then(local)
                except Exception as exc:  # as a reply's conversion failing: this call's error
                    resolve(out, exc=exc)
                else:
                    resolve(out, value)
                return out
        return self._client.start_call(
            context,
            "object_class_action_versions",
            call_args,
            future=out,
            then=self._class_result(context, then),
            plain=plain,
            takes_local=takes_local,
            transient=self._only_reads(objname, objmethod, versions),
        )

    def _only_reads(self, objname: Any, objmethod: Any, versions: dict[str, str]) -> bool:
        """Whether the caller's ``objname.objmethod`` surely changes nothing: a load by id
        whose body is ours (``objects.persistent.fetches_by_id``), of the class the
        registry has for the caller's version. Its request then goes as a transient
        message (``RPCClient.start_call``). Kept per registry state."""
        version = versions.get(objname) if type(objname) is str else None
        if type(version) is not str or type(objmethod) is not str:
            return False
        known = self._reads.current()
        key = (objname, objmethod, version)
        found = known.get(key)
        if found is None:
            cls = VersionedObjectRegistry.find_newest(objname)
            found = cls is not None and cls.VERSION == version and fetches_by_id(cls, objmethod)
            known[key] = found
        return found

    def _class_result(
        self, context: Context, then: Callable[[Any], Any] | None
    ) -> Callable[[Any], Any]:
        """The step that takes a class action's reply in: objects rebuilt from their
        primitives, then ``then``; a ``then`` that ``takes_primitive`` reads the primitive
        itself (a pending object loads it in place) unless it cannot read its version.
        With no ``then``, a stored record (a stock get answered in this process) is
        built into its object as ``_from_record`` builds it."""
        if then is not None and getattr(then, "takes_primitive", False):
            return _LoadPrimitive(then, self._objects, context)
        rebuild = self._objects.deserialize_entity
        if then is None:

            def rebuilt(value: Any) -> Any:
                if type(value) is StoredRecord:
                    return value.build(context)
                return rebuild(context, value)

            return rebuilt
        return lambda value: then(rebuild(context, value))

    # -- instance actions ----------------------------------------------------------

    def object_action(
        self,
        context: Context,
        objinst: Any,
        objmethod: str,
        args: Any,
        kwargs: dict[str, Any],
        object_versions: dict[str, str] | None = None,
    ) -> tuple[dict[str, Any], Any]:
        updates, result = self.object_action_async(
            context, objinst, objmethod, args, kwargs, object_versions
        ).result()
        return updates, result

    def object_action_async(
        self,
        context: Context,
        objinst: Any,
        objmethod: str,
        args: Any,
        kwargs: dict[str, Any],
        object_versions: dict[str, str] | None = None,
        *,
        future: Future[Any] | None = None,
        then: Callable[[Any], Any] | None = None,
    ) -> Future[Any]:
        action = _ObjectAction(
            self,
            context,
            objinst,
            objmethod,
            args,
            kwargs,
            object_versions,
            future if future is not None else ObjectFuture(),
            then,
        )
        known = self._conductor_versions.get(objinst.obj_name())  # written under _lock
        action.send(known if known and _newer(objinst.VERSION, known) else None)
        return action.future

    def object_backport_versions(
        self, context: Context | None, objinst: Any, object_versions: dict[str, str]
    ) -> Any:
        return self._objects.deserialize_entity(
            context,
            self._client.call(
                context,
                "object_backport_versions",
                objinst=self._objects.serialize_entity(context, objinst),
                object_versions=dict(object_versions),
            ),
        )

    # -- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        """Stop using this client; closes the transport if ``connect()`` made it."""
        if self._closed:
            return
        self._closed = True
        if base.get_indirection_api() is self:
            base.set_indirection_api(None)
        if self._owns_transport:
            self._transport.cleanup()

    def __enter__(self) -> ConductorAPI:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _ObjectAction:
    """One ``object_action`` call: sends it (again, backported, when the conductor says
    it is behind) and, as the transport's ``then`` step, takes its ``[updates, result]``
    in. The updates are field primitives the object reads itself
    (``_obj_apply_updates``): only the result is rebuilt.

    NOTE: a slotted object rather than three closures (send, retry, unpack) and their
    cells: less to build per call, and less for the garbage collector to walk.
    """

    __slots__ = (
        "api",
        "context",
        "objinst",
        "objmethod",
        "args",
        "kwargs",
        "object_versions",
        "future",
        "then",
    )

    def __init__(
        self,
        api: ConductorAPI,
        context: Context,
        objinst: Any,
        objmethod: str,
        args: Any,
        kwargs: dict[str, Any],
        object_versions: dict[str, str] | None,
        future: Future[Any],
        then: Callable[[Any], Any] | None,
    ) -> None:
        self.api = api
        self.context = context
        self.objinst = objinst
        self.objmethod = objmethod
        self.args = args
        self.kwargs = kwargs
        self.object_versions = object_versions
        self.future = future
        self.then = then

    def send(self, backport_to: str | None) -> None:
        api = self.api
        context = self.context
        objinst = self.objinst
        to_wire = api._objects.serialize_entity
        if backport_to is not None:
            payload = objinst.obj_to_primitive(target_version=backport_to)
        elif self.objmethod == "save" and not api._oslo_wire:
            # NOTE: a save sends only what it writes to our own conductors: what the save
            # body reads, id, changed fields, revision (see
            # objects.persistent.save_primitive); the whole object otherwise. An
            # oslo.messaging server (wire=oslo) may run a save body of its own that reads
            # the whole object.
            payload = save_primitive(objinst, sent_changes(self.then, objinst)) or to_wire(
                context, objinst
            )
        else:
            payload = to_wire(context, objinst)
        args = self.args
        kwargs = self.kwargs
        object_versions = self.object_versions
        api._client.start_call(
            context,
            "object_action",
            {
                "objinst": payload,
                "objmethod": self.objmethod,
                # empty ones (a save's) need no walk
                "args": to_wire(context, list(args)) if args else list(args),
                "kwargs": to_wire(context, dict(kwargs)) if kwargs else dict(kwargs),
                "object_versions": dict(object_versions) if object_versions else None,
            },
            future=self.future,
            then=self,
            on_error=None if backport_to is not None else self.retry_backported,
        )

    def retry_backported(self, exc: BaseException) -> bool:
        objname = self.objinst.obj_name()
        supported = _supported_version(exc, objname)
        if supported is None:
            return False
        # NOTE: this client is ahead of the conductor (rolling upgrade, compute
        # first). Send the object again at the conductor's version, resolving the
        # same future; the fields it cannot see stay untouched on our side.
        api = self.api
        with api._lock:
            api._conductor_versions[objname] = supported
        try:
            self.send(supported)
        except Exception as err:  # noqa: BLE001 - the future carries it
            resolve(self.future, exc=err)
        return True

    def __call__(self, reply: Any) -> Any:
        updates, result = reply
        if result is not None:
            result = self.api._objects.deserialize_entity(self.context, result)
        unpacked = (updates, result)
        then = self.then
        return unpacked if then is None else then(unpacked)


class _LoadPrimitive:
    """A class action's ``then`` that reads the reply's primitive itself (a pending
    object's load); a primitive too new for this process is rebuilt the general way
    (backported) and handed over as an object.

    NOTE: a slotted object rather than a closure: one object for the garbage collector
    to walk per call in flight instead of a function and its three cells. A bound
    method (a pending object's ``_obj_absorb_loaded``) is kept as its function and its
    object: one object fewer per call in flight.
    """

    __slots__ = ("fn", "owner", "objects", "context")

    def __init__(
        self,
        then: Callable[[Any], Any],
        objects: VersionedObjectSerializer,
        context: Context,
    ) -> None:
        if type(then) is MethodType:
            self.fn: Any = then.__func__
            self.owner: Any = then.__self__
        else:
            self.fn = then
            self.owner = _NO_OWNER
        self.objects = objects  # not its bound deserialize_entity: one object fewer
        self.context = context

    def __call__(self, value: Any) -> Any:
        fn, owner = self.fn, self.owner
        try:
            return fn(value) if owner is _NO_OWNER else fn(owner, value)
        except exception.IncompatibleObjectVersion:
            value = self.objects.deserialize_entity(self.context, value)
            return fn(value) if owner is _NO_OWNER else fn(owner, value)


_NO_OWNER: Any = object()


def _str_pairs(mapping: dict[Any, Any]) -> bool:
    """Whether every key and value of ``mapping`` is a ``str`` (a version manifest)."""
    for key, value in mapping.items():
        if type(key) is not str or type(value) is not str:
            return False
    return True


def _newer(ours: str, theirs: str) -> bool:
    return version_tuple(ours) > version_tuple(theirs)


def _supported_version(exc: BaseException, objname: str) -> str | None:
    if not isinstance(exc, exception.IncompatibleObjectVersion):
        return None
    if exc.kwargs.get("objname") not in (None, objname):
        return None
    supported = exc.kwargs.get("supported")
    return str(supported) if supported else None


def connect(
    transport_url: str,
    topic: str = "conductor",
    timeout: float = 60.0,
    *,
    quorum_queues: bool = False,
) -> ConductorAPI:
    """Hook this process's objects to the conductor on ``topic``.

    Every ``@remotable`` method then runs on the conductor. A later ``connect()``
    replaces the indirection API. Returns the client; ``close()`` it at shutdown.

    Args:
        transport_url: ``memory://``, ``amqp://user:pass@host:5672//`` or ``rabbit://...``.
        topic: the conductor's topic.
        timeout: default per-call deadline in seconds.
        quorum_queues: the client's transport declares topic queues as quorum queues,
            as ``?quorum_queues=true`` in the URL does. A client declares none by itself
            (servers and ``conductor declare-queues`` do); it is accepted so that one
            setting can be handed to every process of a deployment.
    """
    rpc_transport = transport.get_transport(
        transport_url, transport.TransportConfig(quorum_queues=quorum_queues)
    )
    api = ConductorAPI(rpc_transport, topic=topic, timeout=timeout, owns_transport=True)
    base.set_indirection_api(api)
    LOG.debug("objects now use the conductor on topic %s", topic)
    return api


__all__ = ["ConductorAPI", "RPC_API_VERSION", "connect"]
