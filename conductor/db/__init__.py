"""The conductor's database layer: engines, models, migrations, and the Storage seam.

Only the conductor opens a database. The service creates an engine once, checks the
schema is at head, and per request opens a :class:`Transaction`, binds a
:class:`SQLStorage` to it as ``context.db`` (with a :class:`WriteTracker` that tells
which requests wrote), and commits (storing the result for exactly-once replies through
:mod:`conductor.db.requests`; see :mod:`conductor.unit_of_work`).
"""

from __future__ import annotations

from sqlalchemy.engine import Engine

from conductor.db.engine import (
    ConductorSession,
    Transaction,
    create_engine,
    session_factory,
    session_scope,
    transaction_scope,
)
from conductor.db.errors import SchemaNotAtHead, error_detail, mask_url, translate_errors
from conductor.db.migration import check_at_head, current_revision, head_revision, upgrade
from conductor.db.models import (
    Base,
    Revisioned,
    UTCDateTime,
    ensure_user_tables,
    get_table,
    register_model,
    registered_models,
)
from conductor.db.requests import lookup_result, prune, store_result
from conductor.db.storage import SQLStorage
from conductor.db.writes import WriteTracker

__all__ = [
    # engines and sessions
    "ConductorSession",
    "Engine",
    "create_engine",
    "session_factory",
    "session_scope",
    "Transaction",
    "transaction_scope",
    # migrations
    "check_at_head",
    "current_revision",
    "head_revision",
    "upgrade",
    # models
    "Base",
    "Revisioned",
    "UTCDateTime",
    "ensure_user_tables",
    "get_table",
    "register_model",
    "registered_models",
    # storage and exactly-once
    "SQLStorage",
    "WriteTracker",
    "lookup_result",
    "prune",
    "store_result",
    # errors
    "SchemaNotAtHead",
    "error_detail",
    "mask_url",
    "translate_errors",
]
