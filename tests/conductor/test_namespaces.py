"""conductor.namespaces: foreign object primitives (nova's) read as ours and back."""

from __future__ import annotations

import pytest

from conductor import namespaces


def test_parse_gives_nova_its_serial_prefix() -> None:
    assert namespaces.parse("nova") == ("nova", "nova_object")
    assert namespaces.parse("ironic:ironic_object") == ("ironic", "ironic_object")
    for bad in ("", "no va", "nova:versioned_object", "nova:a.b"):
        with pytest.raises(ValueError, match="object namespace"):
            namespaces.parse(bad)


def test_nested_primitives_round_trip_and_plain_dicts_are_left_alone() -> None:
    form = namespaces.ObjectForm("nova", "nova_object")
    flavor = {"nova_object.name": "Flavor", "nova_object.namespace": "nova",
              "nova_object.version": "1.0", "nova_object.data": {"id": 1}}  # fmt: skip
    theirs = {
        "nova_object.name": "Instance",
        "nova_object.namespace": "nova",
        "nova_object.version": "1.2",
        "nova_object.data": {"flavor": flavor, "metadata": {"nova_object.x": "kept"}},
        "nova_object.changes": ["flavor"],
    }
    ours, found = namespaces.to_ours([theirs, {"plain": 1}], {form.name_key: form})
    assert found is form
    inst = ours[0]
    assert inst["versioned_object.namespace"] == "versionedobjects"
    assert inst["versioned_object.changes"] == ["flavor"]
    assert inst["versioned_object.data"]["flavor"]["versioned_object.name"] == "Flavor"
    assert inst["versioned_object.data"]["metadata"] == {"nova_object.x": "kept"}
    assert ours[1] == {"plain": 1}
    assert namespaces.to_theirs(ours, form) == [theirs, {"plain": 1}]
    assert namespaces.to_ours({"plain": 1}, {form.name_key: form}) == ({"plain": 1}, None)
