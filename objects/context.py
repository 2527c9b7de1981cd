"""The request context every remotable call carries."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from objects import exception

if TYPE_CHECKING:
    from objects.storage import Storage


class Context(Protocol):
    """What objects/ and the conductor use of a request context (a type, never checked).

    :class:`RequestContext` is one. So is any other class with these members, such as
    an OVO-style caller's own context class: nothing tests a context's type at run time,
    and a caller's context only needs ``to_dict()`` (its identity travels as that dict; the
    conductor runs method bodies with a :class:`RequestContext` built from it).
    """

    @property
    def user_id(self) -> str | None: ...
    @property
    def project_id(self) -> str | None: ...
    @property
    def request_id(self) -> str | None: ...
    @property
    def roles(self) -> Sequence[str]: ...
    @property
    def is_admin(self) -> bool: ...
    @property
    def db(self) -> Storage:
        """The request's storage (on the conductor, while a method body runs)."""
        ...

    def to_dict(self) -> dict[str, Any]: ...


def _plain_identity(key: tuple[Any, ...]) -> bool:
    user_id, project_id, request_id, roles, is_admin = key
    return (
        all(value is None or type(value) is str for value in (user_id, project_id, request_id))
        and type(is_admin) is bool
        and type(roles) is tuple
        and all(type(role) is str for role in roles)
    )


def _new_request_id() -> str:
    return "req-" + str(uuid.uuid4())


class RequestContext:
    """Who is asking, and (on the conductor only) where the data lives.

    Only the identity fields travel over RPC (``to_dict``/``from_dict``). The conductor
    attaches a ``db`` (an :class:`objects.storage.Storage` bound to the request's
    transaction) before running a method body; anywhere else ``ctx.db`` raises
    :class:`objects.exception.DatabaseNotAvailable` at once.
    """

    def __init__(
        self,
        user_id: str | None = None,
        project_id: str | None = None,
        request_id: str | None = None,
        roles: tuple[str, ...] | list[str] = (),
        is_admin: bool = False,
    ) -> None:
        self.user_id = user_id
        self.project_id = project_id
        self.request_id = request_id or _new_request_id()
        self.roles = tuple(roles)
        self.is_admin = bool(is_admin)
        self._db: Storage | None = None

    @property
    def db(self) -> Storage:
        if self._db is None:
            raise exception.DatabaseNotAvailable()
        return self._db

    @db.setter
    def db(self, storage: Storage | None) -> None:
        self._db = storage

    @property
    def has_db(self) -> bool:
        return self._db is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "project_id": self.project_id,
            "request_id": self.request_id,
            "roles": list(self.roles),
            "is_admin": self.is_admin,
        }

    #: (the identity fields, the dict made of them) of the last ``wire_dict()``.
    _wire_kept: tuple[tuple[Any, ...], dict[str, Any]] | None = None

    def wire_dict(self) -> dict[str, Any] | None:
        """``to_dict()`` made once and handed out again while the identity fields stay
        the same, for a transport to send as it is (``transport.serializer``): nobody may
        change it. None when a field is not plain JSON (``str`` ids, ``bool`` admin flag,
        a tuple of ``str`` roles) or a subclass makes its own ``to_dict()``.

        NOTE: a remotable call's context is the same object call after call; building
        and checking its dict each time was about a tenth of what a pipelined get costs
        its caller's thread.
        """
        if type(self).to_dict is not RequestContext.to_dict:
            return None
        key = (self.user_id, self.project_id, self.request_id, self.roles, self.is_admin)
        kept = self._wire_kept
        if kept is not None and kept[0] == key:
            return kept[1]
        if not _plain_identity(key):
            return None
        made = self.to_dict()
        self._wire_kept = (key, made)
        return made

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RequestContext:
        """Build a context from ``to_dict()`` output; unknown keys are ignored."""
        if not isinstance(values, dict):
            raise exception.ObjectValueError(reason="context must be a dict")
        roles = values.get("roles") or ()
        if not isinstance(roles, (list, tuple)):
            raise exception.ObjectValueError(reason="context roles must be a list")
        # oslo.context's to_dict() names them "user" and "project" (and "tenant").
        return cls(
            user_id=values.get("user_id") or values.get("user"),
            project_id=values.get("project_id") or values.get("project") or values.get("tenant"),
            request_id=values.get("request_id"),
            roles=tuple(str(r) for r in roles) if roles else (),
            is_admin=bool(values.get("is_admin", False)),
        )

    def elevated(self) -> RequestContext:
        ctx = RequestContext(self.user_id, self.project_id, self.request_id, self.roles, True)
        ctx._db = self._db
        return ctx

    def __repr__(self) -> str:
        return (
            f"RequestContext(user_id={self.user_id!r}, project_id={self.project_id!r}, "
            f"request_id={self.request_id!r})"
        )
