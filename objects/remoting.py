"""``@remotable`` methods, their ``_async`` twins, and the process's indirection API.

With no indirection API installed (or inside :func:`local_execution`) a remotable
method runs its body here. With one installed (``conductor.connect()`` does that), class
methods travel through ``object_class_action_versions`` and instance methods through
``object_action``; both carry the caller's version manifest so the conductor answers
at versions this process can read.

Re-exported by ``objects.base``; this module only exists to keep base.py readable.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from objects import exception
from objects.futures import ObjectFuture, chain, done_future

if TYPE_CHECKING:
    from objects.context import Context
    from objects.indirection import IndirectionAPI

__all__ = [
    "add_async_twins",
    "get_indirection_api",
    "local_execution",
    "remotable",
    "remotable_classmethod",
    "set_indirection_api",
]

_P = ParamSpec("_P")
_R = TypeVar("_R")

_api: IndirectionAPI | None = None
_local: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "objects_local_execution", default=False
)


def set_indirection_api(api: IndirectionAPI | None) -> None:
    """Send every remotable call of this process through ``api`` (``None``: run locally).

    Installed once at start-up; never created implicitly.
    """
    global _api
    _api = api


def get_indirection_api() -> IndirectionAPI | None:
    """The installed indirection API, or ``None``."""
    return _api


class local_execution(contextlib.ContextDecorator):  # noqa: N801 - used like a function
    """Run remotable bodies locally inside this block, even with an indirection API set.

    The conductor wraps every request in it so it never calls itself. Context-variable
    based: it covers this thread (or task) only. Also usable as a decorator. (A class
    rather than a generator-based context manager: it is entered on every request, twice.)
    """

    _token: contextvars.Token[bool]

    def _recreate_cm(self) -> local_execution:
        return type(self)()  # one token per decorated call, whatever the thread

    def __enter__(self) -> None:
        self._token = _local.set(True)

    def __exit__(self, *exc_info: object) -> None:
        _local.reset(self._token)


def active_api() -> IndirectionAPI | None:
    """The API remotable calls go through right now (``None``: run locally)."""
    api = _api
    if api is None or _local.get():
        return None
    return api


def _adopt(result: Any, context: Context) -> Any:
    # Objects made by a local body (or deserialized without one) belong to the caller.
    if getattr(result, "_context", False) is None and hasattr(type(result), "obj_name"):
        result._context = context
    return result


# NOTE: the classmethod comes back as Any: mypy reads a function in a class body as taking
# an instance first, so a precise Callable[Concatenate[type[T], P], R] never matches.
@overload
def remotable_classmethod(fn: Callable[..., Any], *, pending: bool | None = None) -> Any: ...


@overload
def remotable_classmethod(
    fn: None = None, *, pending: bool | None = None
) -> Callable[[Callable[..., Any]], Any]: ...


def remotable_classmethod(
    fn: Callable[..., Any] | None = None, *, pending: bool | None = None
) -> Any:
    """Decorate a classmethod ``fn(cls, context, *args, **kwargs)`` as remotable.

    Args:
        fn: the body, run on the conductor (or here with no indirection API).
        pending: its ``_async`` twin returns a pending instance of the class instead of
            a future. Default: only for methods named ``get``.
    """
    if fn is None:
        return lambda f: remotable_classmethod(f, pending=pending)
    name = fn.__name__

    @functools.wraps(fn)
    def wrapper(cls: Any, context: Context, *args: Any, **kwargs: Any) -> Any:
        api = active_api()
        if api is None:
            return _adopt(fn(cls, context, *args, **kwargs), context)
        result = api.object_class_action_versions(
            context, cls.obj_name(), name, cls._obj_manifest(), args, kwargs
        )
        return _adopt(result, context)

    wrapper.remotable = True  # type: ignore[attr-defined]
    wrapper.remotable_kind = "classmethod"  # type: ignore[attr-defined]
    wrapper.original_fn = fn  # type: ignore[attr-defined]
    wrapper.pending = (name == "get") if pending is None else bool(pending)  # type: ignore[attr-defined]
    return classmethod(wrapper)


def remotable(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Decorate an instance method ``fn(self, *args, **kwargs)`` as remotable.

    The object needs a context (``OrphanedObjectError`` otherwise). Through an
    indirection API the returned ``(updates, result)`` is applied to this object in place;
    a field changed after the request left (while an ``_async`` call is in flight) keeps
    its new value and stays changed, so the next save writes it.
    """
    name = fn.__name__

    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        context = self._context
        if context is None:
            raise exception.OrphanedObjectError(method=name, objtype=self.obj_name())
        if self._obj_pending is not None:
            self._obj_before_op()
        api = active_api()
        if api is None:
            return fn(self, *args, **kwargs)
        sent = self._obj_sent_state()
        updates, result = api.object_action(
            context, self, name, args, kwargs, object_versions=type(self)._obj_manifest()
        )
        self._obj_apply_updates(updates, sent)
        return result

    wrapper.remotable = True  # type: ignore[attr-defined]
    wrapper.remotable_kind = "instance"  # type: ignore[attr-defined]
    wrapper.original_fn = fn  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def _class_twin(wrapper: Callable[..., Any], name: str, pending: bool) -> Any:
    def twin(cls: Any, context: Context, *args: Any, **kwargs: Any) -> Any:
        api = active_api()
        if api is None:
            source: Future[Any] = done_future(lambda: wrapper(cls, context, *args, **kwargs))
            return cls._obj_new_pending(context, source) if pending else source
        call = (context, cls.obj_name(), name, cls._obj_manifest(), args, kwargs)
        if not api.resolves_given_futures:
            source = api.object_class_action_versions_async(*call)
            if pending:
                return cls._obj_new_pending(context, source)
            return chain(source, lambda result: _adopt(result, context))
        # One future for the whole call: the transport resolves ours, after taking the
        # reply in (the pending object loads it, from the primitive itself when the API
        # hands that over: see IndirectionAPI; a plain result is adopted).
        if pending:
            obj = cls._obj_new_pending(context)
            api.object_class_action_versions_async(
                *call, future=obj._obj_pending.load, then=obj._obj_absorb_loaded
            )
            return obj
        future: ObjectFuture[Any] = ObjectFuture()
        return api.object_class_action_versions_async(
            *call, future=future, then=lambda result: _adopt(result, context)
        )

    twin.__name__ = twin.__qualname__ = f"{name}_async"
    twin.__doc__ = f"Start ``{name}`` and return at once with " + (
        "a pending object." if pending else "a future of its result."
    )
    twin.async_of = name  # type: ignore[attr-defined]
    return classmethod(twin)


class ActionReply:
    """The ``then`` step of an instance method's ``_async`` twin: applies the reply's
    updates to the object (keeping the changes made since ``sent``, the object's
    ``_obj_sent_state()`` as the call left), returns the method's result.

    NOTE: a slotted object rather than a closure: one object per call in flight for the
    garbage collector to walk instead of a function and its cells. An indirection API
    may read ``sent`` (see :func:`sent_changes`).
    """

    __slots__ = ("obj", "sent")

    def __init__(self, obj: Any, sent: tuple[set[str], dict[str, Any]]) -> None:
        self.obj = obj
        self.sent = sent

    def __call__(self, reply: Any) -> Any:
        updates, result = reply
        self.obj._obj_apply_updates(updates, self.sent)
        return result


def sent_changes(then: Any, obj: Any) -> set[str] | None:
    """``obj.obj_what_changed()`` as the remotable call whose ``then`` step is ``then``
    found it when it left (the same thread, a moment before the API builds the request),
    or None when ``then`` is not that call's step for ``obj``. Read only: never mutate it.
    """
    if type(then) is ActionReply and then.obj is obj:
        return then.sent[0]
    return None


def _instance_twin(wrapper: Callable[..., Any], name: str) -> Any:
    def twin(self: Any, *args: Any, **kwargs: Any) -> ObjectFuture[Any]:
        context = self._context
        if context is None:
            raise exception.OrphanedObjectError(method=f"{name}_async", objtype=self.obj_name())
        if self._obj_pending is not None:
            self._obj_before_op()
        api = active_api()
        future: ObjectFuture[Any]
        if api is None:
            future = done_future(lambda: wrapper(self, *args, **kwargs))
            self._obj_pending_state().add_op(future)
            return future
        # The state (and its lock) exists before the reply can arrive; the changes
        # sent are remembered so those made while the call is in flight survive it.
        state = self._obj_pending_state()
        apply = ActionReply(self, self._obj_sent_state())
        manifest = type(self)._obj_manifest()
        if api.resolves_given_futures:
            future = ObjectFuture()
            api.object_action_async(
                context,
                self,
                name,
                args,
                kwargs,
                object_versions=manifest,
                future=future,
                then=apply,
            )
        else:
            future = chain(
                api.object_action_async(
                    context, self, name, args, kwargs, object_versions=manifest
                ),
                apply,
            )
        state.add_op(future)
        return future

    twin.__name__ = twin.__qualname__ = f"{name}_async"
    twin.__doc__ = f"Start ``{name}`` and return at once with a future of its result."
    twin.async_of = name  # type: ignore[attr-defined]
    return twin


def add_async_twins(cls: type) -> None:
    """Give every remotable ``m`` defined on ``cls`` an ``m_async`` twin (unless defined)."""
    own = cls.__dict__
    for attr_name, attr in list(own.items()):
        func: Any = attr.__func__ if isinstance(attr, classmethod) else attr
        if getattr(func, "remotable", False) is not True:
            continue
        twin_name = f"{attr_name}_async"
        if twin_name in own:
            continue
        if func.remotable_kind == "classmethod":
            setattr(cls, twin_name, _class_twin(func, attr_name, func.pending))
        else:
            setattr(cls, twin_name, _instance_twin(func, attr_name))


def is_remotable(attr: Any, kind: str) -> bool:
    """``attr`` (as found on a class) is a remotable method of ``kind``.

    ``kind`` is "classmethod" or "instance".
    """
    return (
        getattr(attr, "remotable", False) is True and getattr(attr, "remotable_kind", None) == kind
    )
