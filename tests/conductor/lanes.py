"""What the lanes' tests (``test_get_lane``, ``test_save_lane``) share: a conductor manager
on the test's database, a dispatcher for it, and the comparison of the lane's answers with
the ordinary path's (the same requests through a serializer the lanes do not answer for).

Their fixtures ``engine`` and ``manager`` are in this folder's conftest.
"""

from __future__ import annotations

import json
from typing import Any

from conductor import db
from conductor.manager import ConductorManager, ConductorManagerV3
from conductor.service import ConductorSerializer
from transport.dispatcher import RPCDispatcher


class OrdinarySerializer(ConductorSerializer):
    """The conductor's serializer, but the lanes do not answer for it."""

    def answers_stock_gets(self) -> bool:
        return False


def new_manager(engine: db.Engine, **kwargs: Any) -> ConductorManager:
    return ConductorManager(
        engine, serialize_transactions=engine.dialect.name == "sqlite", **kwargs
    )


def dispatcher(manager: ConductorManager, serializer: Any = None) -> RPCDispatcher:
    return RPCDispatcher(
        [manager, ConductorManagerV3(manager)], serializer or ConductorSerializer()
    )


def same(fast: list[tuple[bool, Any]], slow: list[tuple[bool, Any]]) -> None:
    """The lane's outcomes are the ordinary path's: results key for key and in order,
    errors of the same type, text and keyword arguments."""
    assert [ok for ok, _ in fast] == [ok for ok, _ in slow]
    for (ok, answer), (_, ordinary) in zip(fast, slow, strict=True):
        if ok:
            assert answer == ordinary
            assert json.dumps(answer) == json.dumps(ordinary)  # key for key, in order
        else:
            assert type(answer) is type(ordinary)
            assert str(answer) == str(ordinary)
            assert getattr(answer, "kwargs", None) == getattr(ordinary, "kwargs", None)
