"""Reading a run's SQLite files from a test while the run may still be writing them."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def count_readonly(db: Path, query: str, *, timeout: float = 30) -> int:
    """The count ``query`` returns on ``db`` opened read-only (never written, never created); 0 before the
    database or its table exists."""
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=timeout) as conn:
            return conn.execute(query).fetchone()[0]
    except sqlite3.OperationalError:  # created but no table yet
        return 0
