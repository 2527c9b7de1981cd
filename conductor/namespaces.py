"""Objects of another project's namespace, read and answered as the conductor's own.

oslo.versionedobjects names a primitive's keys after the base class's
``OBJ_SERIAL_NAMESPACE`` and stamps its ``OBJ_PROJECT_NAMESPACE``: ours are
``versioned_object.*`` / ``versionedobjects`` (OVO's defaults), nova's are
``nova_object.*`` / ``nova``. A conductor told about such a namespace
(``Conductor(object_namespaces={"nova": "nova_object"})``, ``conductor serve
--object-namespace nova:nova_object``) reads those primitives as its own classes of the same
name, and answers a request in the form it came in: the form of the objects in its
arguments, or, for a nova-style request at API version 3.x that carries none (a class
action such as ``Instance.get``), the namespace configured for 3.x.
"""

from __future__ import annotations

from typing import Any

OURS = "versioned_object"
OUR_NAMESPACE = "versionedobjects"
_SUFFIXES = ("name", "namespace", "version", "data", "changes", "revision")


class ObjectForm:
    """One foreign namespace: its project namespace and serial key prefix."""

    __slots__ = ("namespace", "prefix", "name_key")

    def __init__(self, namespace: str, prefix: str) -> None:
        self.namespace = namespace
        self.prefix = prefix
        self.name_key = f"{prefix}.name"


def parse(spec: str) -> tuple[str, str]:
    """``"nova:nova_object"`` -> ("nova", "nova_object"); ``"nova"`` -> ("nova", "nova_object")."""
    namespace, _, prefix = spec.partition(":")
    if not namespace or not namespace.replace("_", "").isalnum():
        raise ValueError(f"object namespace {spec!r}: use NAMESPACE[:SERIAL_PREFIX], e.g. nova")
    prefix = prefix or f"{namespace}_object"
    if not prefix.replace("_", "").isalnum() or prefix == OURS:
        raise ValueError(f"object namespace {spec!r}: the serial prefix must be a word, not {OURS}")
    return namespace, prefix


def to_ours(value: Any, forms: dict[str, ObjectForm]) -> tuple[Any, ObjectForm | None]:
    """``value`` with every primitive of a known foreign form rewritten as ours, and the
    form found (None: none was)."""
    found: list[ObjectForm] = []

    def walk(item: Any) -> Any:
        if isinstance(item, dict):
            for key in item:
                form = forms.get(key)
                if form is not None:
                    found.append(form)
                    return _rename(item, form.prefix, OURS, form.namespace, OUR_NAMESPACE, walk)
            return {k: walk(v) for k, v in item.items()}
        if isinstance(item, list):
            return [walk(v) for v in item]
        return item

    result = walk(value)
    return result, (found[0] if found else None)


def to_theirs(value: Any, form: ObjectForm) -> Any:
    """``value`` with every primitive of ours rewritten in ``form``."""
    name_key = f"{OURS}.name"

    def walk(item: Any) -> Any:
        if isinstance(item, dict):
            if name_key in item:
                return _rename(item, OURS, form.prefix, OUR_NAMESPACE, form.namespace, walk)
            return {k: walk(v) for k, v in item.items()}
        if isinstance(item, list):
            return [walk(v) for v in item]
        return item

    return walk(value)


def _rename(
    primitive: dict[str, Any], old: str, new: str, old_ns: str, new_ns: str, walk: Any
) -> dict[str, Any]:
    renamed: dict[str, Any] = {}
    for key, value in primitive.items():
        head, dot, suffix = key.partition(".")
        if head == old and dot and suffix in _SUFFIXES:
            key = f"{new}.{suffix}"
            if suffix == "data" and isinstance(value, dict):
                value = {k: walk(v) for k, v in value.items()}
            elif suffix == "namespace" and value == old_ns:
                value = new_ns
        renamed[key] = value
    return renamed
