"""What a run store error means for the user, checking the store file, and moving a damaged
one aside (`python -m tl_core store`)."""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import closing
from pathlib import Path

from tl_core import paths
from tl_core.errors import LabError


def damaged_message(db_path: Path, exc: Exception | str) -> str:
    return (
        f"the run store {db_path} is damaged or unreadable ({exc}). Nothing was changed. "
        "To keep the damaged file aside and start a new store, run `python -m tl_core store reset` "
        "(run folders with their weights are kept)"
    )


def refuse_if_damaged(conn: sqlite3.Connection, db_path: Path) -> bool:
    """Raise the damaged-store LabError unless SQLite's quick check passes; True when it does.

    Run before a store object's first write, so that writers refuse a damaged file as readers
    do: a write can succeed on an intact page of a file whose other pages are garbage."""
    found = "; ".join(str(r[0]) for r in conn.execute("PRAGMA quick_check").fetchall())
    if found != "ok":
        raise LabError(damaged_message(db_path, found))
    return True


def check_store(home: str | Path | None = None) -> str:
    """'ok', or what SQLite's integrity check found wrong with the store file."""
    home = Path(home) if home is not None else paths.lab_home()
    db_path = home / "runs.sqlite"
    if not db_path.exists():
        return "ok"
    try:
        with closing(sqlite3.connect(db_path, timeout=30)) as conn:
            rows = conn.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    found = "; ".join(str(r[0]) for r in rows)
    return "ok" if found == "ok" else found


def move_store_aside(home: str | Path | None = None) -> Path | None:
    """Rename runs.sqlite (and its WAL files) to `runs.sqlite.damaged-TIME`; returns the new name.

    The next `RunStore()` then starts an empty store. The old file is kept for recovery.
    """
    home = Path(home) if home is not None else paths.lab_home()
    db_path = home / "runs.sqlite"
    if not db_path.exists():
        return None
    kept = db_path.with_name(f"runs.sqlite.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{db_path}{suffix}")
        if src.exists():
            os.replace(src, Path(f"{kept}{suffix}"))
    return kept


def store_error(db_path: Path, exc: sqlite3.DatabaseError) -> Exception:
    """The run store's error as a message the user can act on; programming errors stay."""
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return LabError("the run store is busy; try again in a moment")
    if any(
        k in text for k in ("readonly", "read-only", "disk is full", "unable to open", "disk i/o")
    ):
        return LabError(
            f"cannot write the run store {db_path} ({exc}); free some space or make the "
            "folder writable, or set TL_LAB_HOME to another folder. Nothing saved was changed"
        )
    if isinstance(exc, sqlite3.OperationalError) and "no such" in text:
        return exc
    return LabError(damaged_message(db_path, exc))


HOME_CHECK_TTL = 2.0  # seconds a home check holds for every session of this process
_home_checks: dict[str | None, tuple[float, str | None]] = {}


def home_problem() -> str | None:
    """Why the lab home cannot be used now (not writable, not creatable, its run store
    unreadable), or None. The app and every page check this first, so that a broken home is
    one clear message instead of a traceback per page. The answer is shared by all sessions
    for `HOME_CHECK_TTL` seconds (a page view asks twice; a class asks dozens of times a
    second)."""
    from tl_core.runs import RunStore  # the store module imports this one

    key = os.environ.get("TL_LAB_HOME")
    checked = _home_checks.get(key)
    if checked is not None and time.monotonic() - checked[0] < HOME_CHECK_TTL:
        return checked[1]
    try:
        paths.check_writable_home()
        RunStore()
        problem = None
    except LabError as exc:
        problem = str(exc)
    _home_checks[key] = (time.monotonic(), problem)
    return problem
