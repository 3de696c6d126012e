"""The start-up schema check: a listener runs only against the schema version it was built for."""

from __future__ import annotations

from listener import __version__
from listener.core.sql_files import SCHEMA_VERSION
from listener.core.store import Store
from listener.errors import SchemaOutOfDate, SchemaTooNew


def verify_schema(store: Store) -> None:
    """Refuse, with one line saying what to run, a database whose schema is not this listener's."""
    installed, version = store.schema_version()
    if not installed:
        raise SchemaOutOfDate("the database has no session ledger: run `listener migrate`")
    if version is None or version < SCHEMA_VERSION:
        raise SchemaOutOfDate(
            f"the database holds schema version {version or 1}, this listener needs {SCHEMA_VERSION}: "
            "run `listener migrate`"
        )
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"the database holds schema version {version}, newer than this listener "
            f"({__version__}, schema {SCHEMA_VERSION}) knows: upgrade the listener"
        )
