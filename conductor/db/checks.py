"""Value checks: refuse, before any statement, what a column would refuse on PostgreSQL.

SQLite stores anything anywhere; checking here makes both databases reject the same
values with the same typed error (``ObjectValueError``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, Integer, Numeric, String

from conductor.db.models import UTCDateTime
from objects import exception

__all__ = ["INT32", "INT64", "check_limit", "checker"]

# What PostgreSQL's integer types hold; SQLite takes the same, so both refuse alike.
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)


def checker(column_type: Any, nullable: bool, name: str) -> Callable[[Any], None]:
    """A check that refuses values the column would refuse on PostgreSQL.

    SQLite stores anything anywhere; checking here makes both databases reject the same
    values, with the same typed error, before a statement is sent.
    """
    kinds: tuple[type, ...] | None
    max_length: int | None = None
    int_range: tuple[int, int] | None = None
    if isinstance(column_type, Boolean):
        kinds = (bool,)
    elif isinstance(column_type, Integer):
        kinds = (int,)
        int_range = INT64 if isinstance(column_type, BigInteger) else INT32
    elif isinstance(column_type, (Float, Numeric)):
        kinds = (int, float)
    elif isinstance(column_type, String):
        kinds = (str,)
        max_length = column_type.length
    elif isinstance(column_type, UTCDateTime):
        kinds = (dt.datetime,)
    else:  # JSON and user types: the bind processor (json.dumps, ...) decides.
        kinds = None

    def check(value: Any) -> None:
        if value is None:
            if not nullable:
                raise exception.ObjectValueError(reason=f"{name} cannot be None")
            return
        if kinds is None:
            return
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise exception.ObjectValueError(
                reason=f"{name} must be {' or '.join(k.__name__ for k in kinds)}, "
                f"not {type(value).__name__}"
            )
        if max_length is not None and isinstance(value, str) and len(value) > max_length:
            raise exception.ObjectValueError(
                reason=f"{name} is longer than {max_length} characters"
            )
        if (
            int_range is not None
            and isinstance(value, int)
            and not (int_range[0] <= value <= int_range[1])
        ):
            raise exception.ObjectValueError(
                reason=f"{name} is out of range ({int_range[0]} to {int_range[1]})"
            )

    # NOTE: a value of the column's own type that the check above passes is let through
    # by one test (a check runs per value written); any other value takes the check.
    if kinds == (str,):
        if max_length is None:

            def check_text(value: Any) -> None:
                if type(value) is not str:
                    check(value)

            return check_text
        limit = max_length

        def check_short_text(value: Any) -> None:
            if type(value) is not str or len(value) > limit:
                check(value)

        return check_short_text
    if kinds == (int,) and int_range is not None:
        low, high = int_range

        def check_int(value: Any) -> None:
            if type(value) is not int or not low <= value <= high:
                check(value)

        return check_int
    if kinds is not None and len(kinds) == 1:
        kind = kinds[0]  # bool, datetime

        def check_kind(value: Any) -> None:
            if type(value) is not kind:
                check(value)

        return check_kind
    return check


def check_limit(limit: Any) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= INT64[1]:
        raise exception.ObjectValueError(
            reason=f"limit must be a non-negative int below 2**63, not {limit!r}"
        )
