"""The seam between remotable methods and whoever runs them.

Client side: :class:`IndirectionAPI`, what ``conductor.api`` implements over RPC (and
``objects.fixture.LocalIndirectionAPI`` in-process). Install one with
``objects.base.set_indirection_api``.

Server side: :func:`handle_class_action`, :func:`handle_object_action` and
:func:`handle_backport` run a call the way the conductor's endpoint must: only
``@remotable`` methods, bodies run locally, results as JSON-compatible primitives at
the versions the caller reads. They never touch a database themselves; the caller
attaches one to ``context.db``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from objects import exception
from objects.futures import ObjectFuture, done_future
from objects.persistent import record_fetch_of, record_to_primitive
from objects.registry import VersionedObjectRegistry, version_tuple
from objects.remoting import is_remotable, local_execution
from objects.versioned import VersionedObject

if TYPE_CHECKING:
    from objects.context import Context

__all__ = [
    "IndirectionAPI",
    "handle_backport",
    "handle_class_action",
    "handle_object_action",
]


class IndirectionAPI(abc.ABC):
    """Runs remotable methods somewhere else (oslo's VersionedObjectIndirectionAPI).

    Arguments and results are Python values and objects; turning objects into
    primitives is the implementation's business (``VersionedObjectSerializer``).
    The ``_async`` twins return ``concurrent.futures.Future``; the defaults here run
    the synchronous method and return a future that is already done.

    An implementation that sets :attr:`resolves_given_futures` takes two more keyword
    arguments on both ``_async`` methods: ``future`` (resolve this one instead of making
    one) and ``then`` (apply it to the result, on the thread that receives the reply,
    before ``future`` resolves; it never blocks, and what it raises becomes the outcome).
    Remotable calls then cost one future each; without, ``objects`` chains its own
    future behind the one returned.

    A ``then`` step whose ``takes_primitive`` attribute is true (a pending object's load)
    may be handed the result as it came over the wire, an object primitive, instead of
    the object rebuilt from it; when it raises ``IncompatibleObjectVersion`` (a version
    this process cannot read), hand it the object rebuilt (backported) the usual way.
    """

    #: The ``_async`` methods accept ``future=`` and ``then=`` (see above).
    resolves_given_futures: bool = False

    @abc.abstractmethod
    def object_class_action_versions(
        self,
        context: Context,
        objname: str,
        objmethod: str,
        object_versions: dict[str, str],
        args: Any,
        kwargs: dict[str, Any],
    ) -> Any:
        """Run the remotable classmethod ``objname.objmethod``; return its result.

        ``object_versions`` is the caller's manifest: objects in the result come back
        at those versions.
        """

    @abc.abstractmethod
    def object_action(
        self,
        context: Context,
        objinst: Any,
        objmethod: str,
        args: Any,
        kwargs: dict[str, Any],
        object_versions: dict[str, str] | None = None,
    ) -> tuple[dict[str, Any], Any]:
        """Run the remotable method ``objmethod`` on a copy of ``objinst``.

        Returns:
            ``(updates, result)``: field primitives the call changed (plus
            ``"obj_what_changed"`` and ``"obj_revision"``), and the method's result.
        """

    @abc.abstractmethod
    def object_backport_versions(
        self, context: Context | None, objinst: Any, object_versions: dict[str, str]
    ) -> Any:
        """Return ``objinst`` (a primitive too new for the caller) at ``object_versions``."""

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
        """Like :meth:`object_class_action_versions`, returning a future."""
        return _settled(
            lambda: self.object_class_action_versions(
                context, objname, objmethod, object_versions, args, kwargs
            ),
            future,
            then,
        )

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
        """Like :meth:`object_action`, returning a future of ``(updates, result)``."""
        return _settled(
            lambda: self.object_action(context, objinst, objmethod, args, kwargs, object_versions),
            future,
            then,
        )


def _settled(
    fn: Callable[[], Any], future: Future[Any] | None, then: Callable[[Any], Any] | None
) -> Future[Any]:
    if future is None and then is None:
        return done_future(fn)
    out: Future[Any] = future if future is not None else ObjectFuture()
    try:
        result = fn()
        if then is not None:
            result = then(result)
    except BaseException as exc:  # noqa: BLE001 - the future carries it
        out.set_exception(exc)
    else:
        out.set_result(result)
    return out


# -- server side -------------------------------------------------------------------------


def _class_for_caller(objname: str, version: str | None) -> type[VersionedObject]:
    if version is None:
        return VersionedObjectRegistry.newest(objname)
    try:
        return VersionedObjectRegistry.lookup(objname, version)
    except exception.IncompatibleObjectVersion:
        # NOTE: a caller ahead of us (same major) gets our newest version; it can read
        # older minors. Another major stays an error.
        newest = VersionedObjectRegistry.newest(objname)
        if version_tuple(version)[0] != version_tuple(newest.VERSION)[0]:
            raise
        return newest


def _remotable_attr(cls: type[VersionedObject], objmethod: Any, kind: str) -> Any:
    if not isinstance(objmethod, str):
        raise exception.ObjectValueError(reason="the method name must be a string")
    attr = getattr(cls, objmethod, None) if not objmethod.startswith("__") else None
    if is_remotable(attr, kind):
        return attr
    other = "classmethod" if kind == "instance" else "instance"
    if is_remotable(attr, other):
        how = "on the class" if other == "classmethod" else "on an instance"
        reason = f"{cls.obj_name()}.{objmethod} is a remotable {other}: call it {how}"
    else:
        reason = (
            f"{cls.obj_name()}.{objmethod} is not a remotable method; only methods "
            "decorated with @remotable or @remotable_classmethod can be called remotely"
        )
    raise exception.ObjectActionError(
        f"Object action {objmethod} failed because: {reason}", action=objmethod, reason=reason
    )


def _target_for(obj: VersionedObject, manifest: dict[str, str] | None) -> str | None:
    if not manifest:
        return None
    wanted = manifest.get(obj.obj_name())
    if wanted is None:
        return None
    try:
        if version_tuple(wanted) >= version_tuple(obj.VERSION):
            return None
    except exception.ObjectValueError:
        return None
    return wanted


def _reads_our_versions(cls: type[VersionedObject], manifest: dict[str, str] | None) -> bool:
    # The caller's manifest is our own tree's (the usual case: same versions on both
    # sides): the primitive at our versions is what a backport to it would give.
    return not manifest or manifest == cls._obj_manifest()


def to_wire(value: Any, manifest: dict[str, str] | None) -> Any:
    """``value`` with every object in it turned into a primitive at ``manifest``'s versions."""
    if isinstance(value, VersionedObject):
        if _reads_our_versions(type(value), manifest):
            return value.obj_to_primitive()
        return value.obj_to_primitive(
            target_version=_target_for(value, manifest), version_manifest=manifest or None
        )
    if isinstance(value, dict):
        return {key: to_wire(item, manifest) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_wire(item, manifest) for item in value]
    return value


def handle_class_action(
    context: Context,
    objname: str,
    objmethod: str,
    object_versions: dict[str, str] | None,
    args: Any,
    kwargs: dict[str, Any],
) -> Any:
    """Run a remotable classmethod for a remote caller.

    Returns:
        The result, with objects as primitives backported to ``object_versions``.

    Raises:
        ObjectActionError: ``objmethod`` is not a remotable classmethod.
        UnsupportedObjectError / IncompatibleObjectVersion: no class for the caller.
    """
    version = object_versions.get(objname) if object_versions else None
    cls = _class_for_caller(objname, version)
    method = _remotable_attr(cls, objmethod, "classmethod")
    fetch = record_fetch_of(method)
    if fetch is not None and _reads_our_versions(cls, object_versions):
        # A load of one record (``reads_record``) for a caller at our versions: the
        # primitive comes straight from the record, unless only the object can say.
        with local_execution():
            record = fetch(cls, context, *args, **kwargs)
        primitive = record_to_primitive(cls, record, context)
        if primitive is not None:
            return primitive
        return to_wire(cls._from_record(context, record), object_versions)  # type: ignore[attr-defined]
    with local_execution():
        result = method(context, *args, **kwargs)
    return to_wire(result, object_versions)


_VALUE, _SNAPSHOT, _PRIMITIVE = 0, 1, 2
_UNSET: Any = object()


def _diff_plan(cls: type[VersionedObject]) -> tuple[tuple[str, Any, int], ...]:
    # What "unchanged by the call" is judged on, per field: the value itself; a copy for
    # containers (a method may change them in place); the primitive for objects.
    cached = cls.__dict__.get("_obj_diff_plan")
    if cached is not None and cached[0] is cls.fields:
        return cached[1]  # type: ignore[no-any-return]
    plan = tuple(
        (name, field, _PRIMITIVE if field.is_object else _SNAPSHOT if field.mutable else _VALUE)
        for name, field in cls.fields.items()
    )
    cls._obj_diff_plan = (cls.fields, plan)  # type: ignore[attr-defined]
    return plan


def _diff_token(field: Any, kind: int, value: Any) -> Any:
    if kind == _VALUE or value is None:
        return value
    if kind == _SNAPSHOT:
        return field.snapshot(value)
    return field.to_primitive(value)


def handle_object_action(
    context: Context,
    objinst: VersionedObject,
    objmethod: str,
    args: Any,
    kwargs: dict[str, Any],
    object_versions: dict[str, str] | None = None,
) -> tuple[dict[str, Any], Any]:
    """Run a remotable method on ``objinst`` for a remote caller.

    ``updates`` hold the fields the call set or changed that exist at the caller's
    version (``object_versions[objname]``; the object's own version without a manifest),
    as primitives, plus ``"obj_what_changed"`` and ``"obj_revision"``. Fields the caller
    did not send stay unset here, so they are neither written nor sent back.

    Raises:
        ObjectActionError: ``objmethod`` is not a remotable instance method.
    """
    if not isinstance(objinst, VersionedObject):
        raise exception.ObjectValueError(reason="objinst must be a versioned object")
    cls = type(objinst)
    method = _remotable_attr(cls, objmethod, "instance")
    objinst._context = context
    plan = _diff_plan(cls)
    current = objinst.__dict__
    before: dict[str, Any] = {}
    for name, field, kind in plan:
        value = current.get(name, _UNSET)
        if value is not _UNSET:
            before[name] = value if kind == _VALUE else _diff_token(field, kind, value)
    with local_execution():
        result = method(objinst, *args, **kwargs)
    changed: set[str] = set()
    for name, field, kind in plan:
        value = current.get(name, _UNSET)
        if value is _UNSET:
            continue
        old = before.get(name, _UNSET)
        if old is _UNSET or (value if kind == _VALUE else _diff_token(field, kind, value)) != old:
            changed.add(name)
    updates: dict[str, Any]
    if _reads_our_versions(cls, object_versions):
        # No backport: only the changed fields need turning into primitives.
        updates = {}
        for name, _field, writer in cls._obj_to_plan:
            if name in changed:
                value = current[name]
                updates[name] = value if writer is None else writer(value)
        updates["obj_what_changed"] = sorted(n for n in objinst.obj_what_changed() if n in current)
    else:
        primitive = objinst.obj_to_primitive(
            target_version=_target_for(objinst, object_versions),
            version_manifest=object_versions or None,
        )
        data = primitive["versioned_object.data"]
        updates = {name: value for name, value in data.items() if name in changed}
        updates["obj_what_changed"] = list(primitive.get("versioned_object.changes", []))
    updates["obj_revision"] = objinst.obj_revision
    return updates, to_wire(result, object_versions)


def handle_backport(
    context: Context, objinst: VersionedObject, object_versions: dict[str, str]
) -> dict[str, Any]:
    """``objinst`` as a primitive at the versions in ``object_versions``."""
    if not isinstance(objinst, VersionedObject):
        raise exception.ObjectValueError(reason="objinst must be a versioned object")
    objinst._context = context
    return objinst.obj_to_primitive(
        target_version=_target_for(objinst, object_versions),
        version_manifest=object_versions or None,
    )
