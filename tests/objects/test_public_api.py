"""``objects.__all__`` is the documented surface: sorted, and everything in it importable."""

from __future__ import annotations

import importlib

import objects
from objects import base


def test_all_is_sorted_and_unique() -> None:
    assert objects.__all__ == sorted(set(objects.__all__))


def test_everything_in_all_is_importable() -> None:
    for name in objects.__all__:
        assert getattr(objects, name) is not None, name
    namespace: dict[str, object] = {}
    exec("from objects import *", namespace)  # noqa: S102 - the star import users may write
    assert set(objects.__all__) <= set(namespace)


def test_public_names_of_the_design_are_where_it_says() -> None:
    for name in (
        "VersionedObject",
        "VersionedObjectRegistry",
        "ObjectListBase",
        "remotable",
        "remotable_classmethod",
        "VersionedObjectSerializer",
        "set_indirection_api",
        "get_indirection_api",
        "local_execution",
        "obj_tree_get_versions",
    ):
        assert name in base.__all__
        assert getattr(base, name) is getattr(objects, name)
    assert callable(objects.register_all) and callable(objects.wait_all)
    fields = importlib.import_module("objects.fields")
    for name in (
        "IntegerField",
        "StringField",
        "BooleanField",
        "FloatField",
        "DateTimeField",
        "UUIDField",
        "EnumField",
        "ListOfStringsField",
        "DictOfStringsField",
        "ObjectField",
        "ListOfObjectsField",
    ):
        assert name in fields.__all__
    exception = importlib.import_module("objects.exception")
    for name in (
        "IncompatibleObjectVersion",
        "UnsupportedObjectError",
        "ObjectActionError",
        "NotFound",
        "ConcurrentUpdate",
    ):
        assert issubclass(getattr(exception, name), exception.ObjectsError)


def test_module_all_lists_are_importable() -> None:
    for module_name in (
        "base",
        "fields",
        "registry",
        "futures",
        "indirection",
        "fixture",
        "persistent",
        "instance",
        "flavor",
        "compute_node",
        "lists",
        "serializer",
    ):
        module = importlib.import_module(f"objects.{module_name}")
        for name in module.__all__:
            assert hasattr(module, name), f"objects.{module_name}.{name}"
