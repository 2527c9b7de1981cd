"""A user's own object served by the conductor: ``conductor serve --objects examples.widgets``
(from the repository root; compute code does ``import examples.widgets``).

One module holds the object (what compute code uses) and its table (what the conductor
uses). Compute processes import it too, so they know the class; they never open the
database: with ``conductor.connect()`` called, every ``@remotable`` method runs on the
conductor.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from conductor.db import Base, Revisioned, register_model
from objects import base, fields
from objects.persistent import PersistentObject


class WidgetModel(Revisioned, Base):
    """The ``widgets`` table; ``conductor serve`` creates it when it is missing."""

    __tablename__ = "widgets"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(255), unique=True)
    size: Mapped[int] = mapped_column(sa.Integer)


register_model("Widget", WidgetModel)


@base.VersionedObjectRegistry.register
class Widget(PersistentObject, base.VersionedObject):
    """A widget. Version history: 1.0 initial."""

    VERSION = "1.0"
    fields = {
        "id": fields.IntegerField(read_only=True),
        "name": fields.StringField(),
        "size": fields.IntegerField(default=1),
    }

    @base.remotable_classmethod
    def get(cls, context: Any, id: int) -> Widget:
        return cls._db_get(context, id)

    @base.remotable
    def create(self) -> None:
        self._db_create()

    @base.remotable
    def save(self) -> None:
        self._db_save()

    @base.remotable_classmethod
    def total_size(cls, context: Any) -> int:
        """A method body that uses SQLAlchemy directly: ``context.db.session``."""
        query = sa.select(sa.func.coalesce(sa.func.sum(WidgetModel.size), 0))
        return int(context.db.session.execute(query).scalar_one())
