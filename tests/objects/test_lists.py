"""ObjectListBase behaves like a sequence; slices and sums keep the list type."""

from __future__ import annotations

from typing import Any

import pytest

from objects import base
from objects.context import RequestContext
from tests.objects.helpers import make_classes


@pytest.fixture
def child_list(registry: Any) -> Any:
    classes = make_classes()
    child = classes["Child"]
    items = classes["ChildList"](
        context=RequestContext(), objects=[child(name="a"), child(name="b"), child(name="c")]
    )
    items.obj_reset_changes(recursive=True)
    return items


def test_len_iteration_indexing_and_contains(child_list: Any) -> None:
    assert len(child_list) == 3
    assert [c.name for c in child_list] == ["a", "b", "c"]
    assert child_list[1].name == "b"
    assert child_list[-1].name == "c"
    assert type(child_list[0]).__name__ == "Child"
    assert type(child_list[0])(name="b") in child_list
    assert type(child_list[0])(name="z") not in child_list
    assert child_list.count(child_list[0]) == 1
    assert child_list.index(child_list[2]) == 2


def test_slice_returns_the_same_list_type_with_the_context(child_list: Any) -> None:
    part = child_list[1:]
    assert type(part) is type(child_list)
    assert [c.name for c in part] == ["b", "c"]
    assert part._context is child_list._context
    assert part.obj_what_changed() == set()


def test_sum_of_same_type_is_a_new_list(child_list: Any) -> None:
    both = child_list[:1] + child_list[2:]
    assert type(both) is type(child_list)
    assert [c.name for c in both] == ["a", "c"]
    assert child_list[:1] + [1] == [child_list[0], 1]
    assert [0] + child_list[:1] == [0, child_list[0]]
    with pytest.raises(TypeError):
        child_list + 5  # noqa: B018


def test_empty_list_by_default_is_not_a_change(registry: Any) -> None:
    classes = make_classes()
    empty = classes["ChildList"]()
    assert len(empty) == 0
    assert not empty
    assert empty.obj_what_changed() == set()


def test_list_round_trips_and_reports_child_changes(child_list: Any) -> None:
    child_list[0].name = "A"
    assert child_list.obj_what_changed() == {"objects"}
    again: Any = base.VersionedObject.obj_from_primitive(child_list.obj_to_primitive())
    assert type(again) is type(child_list)
    assert [c.name for c in again] == ["A", "b", "c"]
    assert again.obj_what_changed() == {"objects"}
    assert again == child_list
