"""Pinned fingerprints of the built-in objects: a change needs a version bump here too.

When this fails, bump the object's VERSION (and teach obj_make_compatible about the
change), then paste the new fingerprint below.
"""

from __future__ import annotations

from typing import Any

from objects import base, fields
from objects.fixture import ObjectVersionChecker

EXPECTED = {
    "ComputeNode": "1.0-c2d3783ee1dbd5b6833ba884ed03b3d2",
    "Flavor": "1.0-182176172ba478cb73c39a6e14296c8c",
    "Instance": "1.2-58c1a658140a4c84558ce72ac30e534d",
    "InstanceList": "1.0-0a5316333ff50ec7d50378c90bcaed2e",
}


def test_builtin_fingerprints_are_pinned(registry: Any) -> None:
    domain = {name: registry.obj_classes()[name] for name in EXPECTED}
    expected, actual = ObjectVersionChecker(domain).test_hashes(EXPECTED)
    assert not actual, (
        f"objects changed without a version bump: {sorted(actual)}; "
        f"expected {expected}, got {actual}"
    )


def _declare(registry: Any, name: str, fields_: dict[str, Any], **attrs: Any) -> Any:
    cls = type(name, (base.VersionedObject,), {"VERSION": "1.0", "fields": fields_, **attrs})
    return registry.register(cls)


def _hash(cls: Any) -> str:
    return ObjectVersionChecker({cls.obj_name(): [cls]}).get_hashes()[cls.obj_name()]


def test_fingerprint_changes_with_fields_and_signatures(registry: Any) -> None:
    plain = _hash(_declare(registry, "A", {"x": fields.IntegerField()}))
    assert plain.startswith("1.0-") and len(plain) == 4 + 32
    assert _hash(_declare(registry, "A", {"x": fields.IntegerField()})) == plain
    assert _hash(_declare(registry, "A", {"x": fields.IntegerField(nullable=True)})) != plain
    assert _hash(_declare(registry, "A", {"x": fields.IntegerField(default=1)})) != plain
    assert _hash(_declare(registry, "A", {"x": fields.StringField()})) != plain
    assert _hash(_declare(registry, "A", {"y": fields.IntegerField()})) != plain

    def get(cls: Any, context: Any, id: int) -> Any:
        return None

    def get_other(cls: Any, context: Any, id: int, deleted: bool = False) -> Any:
        return None

    with_get = _hash(
        _declare(registry, "A", {"x": fields.IntegerField()}, get=base.remotable_classmethod(get))
    )
    assert with_get != plain
    other = _hash(
        _declare(
            registry, "A", {"x": fields.IntegerField()}, get=base.remotable_classmethod(get_other)
        )
    )
    assert other != with_get


def test_fingerprint_names_the_changed_object(registry: Any) -> None:
    cls = _declare(registry, "B", {"x": fields.IntegerField()})
    checker = ObjectVersionChecker({"B": [cls]})
    expected, actual = checker.test_hashes({"B": "1.0-00000000000000000000000000000000"})
    assert set(actual) == {"B"} and actual["B"] == _hash(cls)
    assert checker.test_hashes(checker.get_hashes()) == ({}, {})
