"""A database error reaches the caller typed, without the database's host or port; the
conductor's log keeps them (item 15 of issue 11)."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.engine import make_url

import objects
from objects import exception
from objects.context import RequestContext
from tests.reliability import faults, served

pytestmark = [pytest.mark.postgres]


def test_a_database_outage_reaches_the_caller_without_host_or_port(
    postgres_url: str, topic: str
) -> None:
    name = make_url(postgres_url).database
    assert name is not None
    ctx = RequestContext(user_id="u-outage")
    with served.in_process(postgres_url, topic) as s:
        objects.Instance(
            ctx, uuid=str(uuid.uuid4()), host="h", state="building", vcpus=1, memory_mb=1
        ).create()
        errors = []
        with faults.PostgresDatabases.outage(name):
            for _ in range(3):
                with pytest.raises(exception.DatabaseError) as caught:
                    objects.InstanceList.get_all(ctx)
                errors.append(caught.value)

        for error in errors:
            public = f"{error} {error.kwargs!r} {error.args!r}"
            for leak in ("127.0.0.1", "5432", "port", "localhost", name):
                assert leak not in public, public
            assert "retry later" in str(error)
        logged = s.output()
        assert "127.0.0.1" in logged or "port 5432" in logged or name in logged, logged
