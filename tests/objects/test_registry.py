"""The registry finds the class that reads a (name, version); importing registers nothing."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

import objects
from objects import base, exception, fields


def _declare(registry: Any, version: str, name: str = "Widget") -> type[base.VersionedObject]:
    cls = type(
        name, (base.VersionedObject,), {"VERSION": version, "fields": {"a": fields.IntegerField()}}
    )
    return registry.register(cls)  # type: ignore[no-any-return]


def test_lookup_gives_exact_version_else_highest_compatible_minor(registry: Any) -> None:
    v10 = _declare(registry, "1.0")
    v12 = _declare(registry, "1.2")
    v15 = _declare(registry, "1.5")
    v20 = _declare(registry, "2.0")
    assert registry.lookup("Widget", "1.0") is v10
    assert registry.lookup("Widget", "1.2") is v12
    assert registry.lookup("Widget", "1.1") is v15
    assert registry.lookup("Widget", "1.3") is v15
    assert registry.lookup("Widget", "2.0") is v20
    assert registry.obj_classes()["Widget"] == [v20, v15, v12, v10]


def test_patch_level_is_ignored_for_compatibility(registry: Any) -> None:
    v12 = _declare(registry, "1.2")
    assert registry.lookup("Widget", "1.2.7") is v12
    v134 = _declare(registry, "1.3.4")
    assert registry.lookup("Widget", "1.3") is v134
    assert registry.lookup("Widget", "1.3.9") is v134


def test_too_new_or_other_major_names_the_supported_version(registry: Any) -> None:
    _declare(registry, "1.2")
    with pytest.raises(exception.IncompatibleObjectVersion) as caught:
        registry.lookup("Widget", "1.3")
    assert caught.value.kwargs == {"objname": "Widget", "objver": "1.3", "supported": "1.2"}
    assert "1.2" in str(caught.value)
    with pytest.raises(exception.IncompatibleObjectVersion, match="supported version is 1.2"):
        registry.lookup("Widget", "2.0")


def test_unknown_name_is_unsupported(registry: Any) -> None:
    with pytest.raises(exception.UnsupportedObjectError) as caught:
        registry.lookup("Nope", "1.0")
    assert caught.value.kwargs["objtype"] == "Nope"


def test_malformed_version_is_an_object_value_error(registry: Any) -> None:
    _declare(registry, "1.0")
    with pytest.raises(exception.ObjectValueError):
        registry.lookup("Widget", "one")
    with pytest.raises(exception.ObjectValueError):
        type("Bad", (base.VersionedObject,), {"VERSION": "1"})


def test_register_twice_is_a_no_op_and_same_version_replaces(registry: Any) -> None:
    first = _declare(registry, "1.0")
    registry.register(first)
    assert registry.obj_classes()["Widget"] == [first]
    second = _declare(registry, "1.0")
    assert registry.obj_classes()["Widget"] == [second]


def test_only_versioned_objects_can_be_registered(registry: Any) -> None:
    with pytest.raises(TypeError):
        registry.register(int)


def test_snapshot_and_restore(registry: Any) -> None:
    snapshot = registry.snapshot()
    _declare(registry, "1.0")
    assert "Widget" in registry.obj_classes()
    registry.restore(snapshot)
    assert "Widget" not in registry.obj_classes()
    with pytest.raises(exception.UnsupportedObjectError):
        registry.lookup("Widget", "1.0")


def test_register_all_is_idempotent_and_exposes_the_domain(registry: Any) -> None:
    before = registry.obj_classes()
    objects.register_all()
    assert registry.obj_classes() == before
    assert {"Flavor", "Instance", "InstanceList", "ComputeNode"} <= set(before)
    assert objects.Instance.VERSION == "1.2"
    assert objects.Instance is registry.newest("Instance")


def test_package_attribute_is_the_newest_registered_version(registry: Any) -> None:
    newer = type(
        "Instance", (objects.Instance,), {"VERSION": "1.3", "fields": dict(objects.Instance.fields)}
    )
    registry.register(newer)
    assert objects.Instance is newer


def test_unregistered_name_is_not_an_attribute(registry: Any) -> None:
    with pytest.raises(AttributeError, match="register_all"):
        objects.NoSuchThing  # noqa: B018


def test_importing_objects_registers_nothing() -> None:
    code = (
        "import objects, objects.instance, objects.fixture\n"
        "from objects.base import VersionedObjectRegistry as R\n"
        "assert R.obj_classes() == {}, R.obj_classes()\n"
        "try:\n    objects.Instance\nexcept AttributeError:\n    pass\n"
        "else:\n    raise SystemExit('objects.Instance resolved before register_all')\n"
        "objects.register_all()\n"
        "assert objects.Instance.VERSION == '1.2'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_tree_versions_cover_nested_objects(registry: Any) -> None:
    assert base.obj_tree_get_versions("Instance") == {"Instance": "1.2", "Flavor": "1.0"}
    assert base.obj_tree_get_versions("InstanceList") == {
        "InstanceList": "1.0",
        "Instance": "1.2",
        "Flavor": "1.0",
    }
