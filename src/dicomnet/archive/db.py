"""One way to open the archive's SQLite file for a table of its own.

Rules: every store that keeps a table in the index's file (worklist items, MPPS, commitment
reports, metadata fragments) opens it here: autocommit (the store runs its own transactions),
usable from worker threads (each store serialises with its own lock), WAL so that another process
(``dicomnet worklist add`` while ``dicomnet serve`` runs) can write while this one reads, and the
store's schema created if missing. ``synchronous=NORMAL`` only for data that can be rebuilt
(metadata, worklist items re-added); what must survive a power cut (MPPS state, commitment reports
not yet delivered) keeps SQLite's default, FULL.
"""

from __future__ import annotations

import os
import sqlite3


def open_store(
    path: str | os.PathLike[str], schema: str, *, timeout: float = 30.0, durable: bool = True
) -> sqlite3.Connection:
    """A connection to ``path`` with ``schema`` applied (closed again if that fails)."""
    db = sqlite3.connect(str(path), timeout=timeout, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        if not durable:
            db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(schema)
    except BaseException:
        db.close()
        raise
    return db
