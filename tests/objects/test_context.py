"""RequestContext: what travels (``to_dict``) and the dict a transport may keep (``wire_dict``)."""

from __future__ import annotations

from typing import Any

import pytest

from objects.context import RequestContext


def test_wire_dict_is_to_dict_kept_while_the_identity_stays_the_same() -> None:
    ctx = RequestContext(user_id="u", project_id="p", roles=["reader"])
    kept = ctx.wire_dict()
    assert kept == ctx.to_dict()
    assert ctx.wire_dict() is kept
    assert ctx.to_dict() is not ctx.to_dict()  # to_dict stays a fresh dict for its caller


@pytest.mark.parametrize(
    ("field", "value"),
    [("user_id", "v"), ("project_id", None), ("request_id", "req-2"), ("is_admin", True)],
)
def test_wire_dict_follows_a_changed_field(field: str, value: Any) -> None:
    ctx = RequestContext(user_id="u", project_id="p", request_id="req-1")
    before = ctx.wire_dict()
    setattr(ctx, field, value)
    after = ctx.wire_dict()
    assert after is not before and after == ctx.to_dict()
    assert before is not None and before[field] != value  # the old one was not changed


def test_wire_dict_follows_new_roles() -> None:
    ctx = RequestContext(user_id="u", roles=["reader"])
    before = ctx.wire_dict()
    ctx.roles = ("reader", "admin")
    assert ctx.wire_dict() == {**ctx.to_dict(), "roles": ["reader", "admin"]}
    assert before is not None and before["roles"] == ["reader"]


class _Own(RequestContext):
    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "extra": "x"}


@pytest.mark.parametrize(
    "ctx",
    [
        RequestContext(user_id=42),  # type: ignore[arg-type]
        RequestContext(user_id="u", roles=[1]),  # type: ignore[list-item]
        _Own(user_id="u"),
    ],
    ids=["int id", "int role", "own to_dict"],
)
def test_no_wire_dict_for_values_it_cannot_vouch_for(ctx: RequestContext) -> None:
    assert ctx.wire_dict() is None


def test_no_wire_dict_for_roles_changed_to_a_list() -> None:
    ctx = RequestContext(user_id="u")
    ctx.roles = ["admin"]  # type: ignore[assignment]  # a list may change in place
    assert ctx.wire_dict() is None
