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
from concurrent.futures import Future
from typing import Any

from objects import exception
from objects.base import VersionedObject
from objects.futures import done_future
from objects.registry import VersionedObjectRegistry, version_tuple
from objects.remoting import is_remotable, local_execution

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
    """

    @abc.abstractmethod
    def object_class_action_versions(
        self,
        context: Any,
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
        context: Any,
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
        self, context: Any, objinst: Any, object_versions: dict[str, str]
    ) -> Any:
        """Return ``objinst`` (a primitive too new for the caller) at ``object_versions``."""

    def object_class_action_versions_async(
        self,
        context: Any,
        objname: str,
        objmethod: str,
        object_versions: dict[str, str],
        args: Any,
        kwargs: dict[str, Any],
    ) -> Future[Any]:
        """Like :meth:`object_class_action_versions`, returning a future."""
        return done_future(
            lambda: self.object_class_action_versions(
                context, objname, objmethod, object_versions, args, kwargs
            )
        )

    def object_action_async(
        self,
        context: Any,
        objinst: Any,
        objmethod: str,
        args: Any,
        kwargs: dict[str, Any],
        object_versions: dict[str, str] | None = None,
    ) -> Future[Any]:
        """Like :meth:`object_action`, returning a future of ``(updates, result)``."""
        return done_future(
            lambda: self.object_action(context, objinst, objmethod, args, kwargs, object_versions)
        )


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


def to_wire(value: Any, manifest: dict[str, str] | None) -> Any:
    """``value`` with every object in it turned into a primitive at ``manifest``'s versions."""
    if isinstance(value, VersionedObject):
        return value.obj_to_primitive(
            target_version=_target_for(value, manifest), version_manifest=manifest or None
        )
    if isinstance(value, dict):
        return {key: to_wire(item, manifest) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_wire(item, manifest) for item in value]
    return value


def handle_class_action(
    context: Any,
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
    with local_execution():
        result = method(context, *args, **kwargs)
    return to_wire(result, object_versions)


def _diff_token(field: Any, value: Any) -> Any:
    # What "unchanged by the call" is judged on: containers are copied (a method may
    # change them in place), objects compared by their primitive.
    if value is None:
        return None
    if field.is_object:
        return field.to_primitive(value)
    if field.mutable:
        return field.snapshot(value)
    return value


def handle_object_action(
    context: Any,
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
    before = {
        name: _diff_token(field, objinst.__dict__[name])
        for name, field in cls.fields.items()
        if name in objinst.__dict__
    }
    with local_execution():
        result = method(objinst, *args, **kwargs)
    target = _target_for(objinst, object_versions)
    primitive = objinst.obj_to_primitive(
        target_version=target, version_manifest=object_versions or None
    )
    data = primitive["versioned_object.data"]
    updates: dict[str, Any] = {}
    current = objinst.__dict__
    for name, value in data.items():
        if name not in before:
            updates[name] = value
            continue
        field = cls.fields[name]
        if _diff_token(field, current.get(name)) != before[name]:
            updates[name] = value
    updates["obj_what_changed"] = list(primitive.get("versioned_object.changes", []))
    updates["obj_revision"] = objinst.obj_revision
    return updates, to_wire(result, object_versions)


def handle_backport(
    context: Any, objinst: VersionedObject, object_versions: dict[str, str]
) -> dict[str, Any]:
    """``objinst`` as a primitive at the versions in ``object_versions``."""
    if not isinstance(objinst, VersionedObject):
        raise exception.ObjectValueError(reason="objinst must be a versioned object")
    objinst._context = context
    return objinst.obj_to_primitive(
        target_version=_target_for(objinst, object_versions),
        version_manifest=object_versions or None,
    )
