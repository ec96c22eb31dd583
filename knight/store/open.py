"""Opening a run store for reading (never writes) or writing (backs up, then upgrades)."""

from __future__ import annotations

from typing import Literal

from knight.store.db import open_database
from knight.store.runs import RunStore

Access = Literal["read", "write"]


def open_store(where: str, access: Access = "read", *, create: bool = False) -> RunStore:
    """A `RunStore` on the database at `where` (a path or SQLAlchemy URL).

    "read": the database must exist and be at this Knight's schema; nothing is written.
    "write": created when missing (with `create`), an older schema is copied aside and upgraded;
    what happened is in `RunStore.schema_upgrade`.
    """
    if access == "read":
        return RunStore(open_database(where, create=False, readonly=True))
    database = open_database(where, create=create, migrate=False)
    try:
        upgrade = database.upgrade_with_backup()
    except BaseException:
        database.close()
        raise
    return RunStore(database, schema_upgrade=upgrade)
