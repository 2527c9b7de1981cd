"""Fixtures of the object tests.

Object tests that touch remotable methods take ``ctx`` and run twice (oslo's idea):
``local`` runs bodies in-process against a MemoryStorage; ``remote`` installs a
LocalIndirectionAPI, so every call crosses a JSON boundary to a "conductor" whose
context alone has the database.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import objects
from objects import base
from objects.context import RequestContext
from objects.fixture import LocalIndirectionAPI, MemoryStorage, isolated_registry


@pytest.fixture(autouse=True)
def registry() -> Iterator[type[base.VersionedObjectRegistry]]:
    """The built-in domain registered; whatever a test registers is forgotten after it."""
    with isolated_registry() as registry:
        objects.register_all()
        try:
            yield registry
        finally:
            base.set_indirection_api(None)


@pytest.fixture
def storage() -> MemoryStorage:
    return MemoryStorage()


@pytest.fixture(params=["local", "remote"])
def mode(request: pytest.FixtureRequest, storage: MemoryStorage) -> Iterator[Any]:
    """``None`` (local) or the installed LocalIndirectionAPI (remote)."""
    if request.param == "local":
        yield None
        return
    api = LocalIndirectionAPI(storage)
    base.set_indirection_api(api)
    try:
        yield api
    finally:
        base.set_indirection_api(None)
        api.close()


@pytest.fixture
def ctx(mode: Any, storage: MemoryStorage) -> RequestContext:
    """The caller's context: with the database locally, without it when remote."""
    context = RequestContext(user_id="user-1", project_id="project-1")
    if mode is None:
        context.db = storage
    return context


@pytest.fixture
def db_ctx(storage: MemoryStorage) -> RequestContext:
    """A context with the database, for arranging data whatever the mode."""
    context = RequestContext(user_id="arranger")
    context.db = storage
    return context
