"""Groups of runs that wait for another group: a recipe's later stage for the one before.

A run queued with `depends_on=GROUP` is claimed only once every run of GROUP is done; if a
run of GROUP failed or was cancelled, the waiting runs fail with that reason. An `init_from`
of "@GROUP" (`GROUP_REF` + a group id) names the first run of GROUP, and is replaced by its
run id when the run is claimed, so a recipe can queue all its stages at launch time.
`RunStore.create_group` and `RunStore.claim_next` call these inside their transactions.
"""

from __future__ import annotations

import json
import sqlite3

from tl_core.errors import LabError

GROUP_REF = "@"


def fail_broken_dependents(conn: sqlite3.Connection, now: float) -> None:
    """Fail the queued runs whose dependency group has a failed or cancelled run."""
    rows = conn.execute(
        "SELECT r.id, d.id AS source, d.group_id, d.status FROM runs r JOIN runs d "
        "ON d.group_id = r.depends_on WHERE r.status = 'queued' "
        "AND d.status IN ('failed', 'cancelled') ORDER BY d.created"
    ).fetchall()
    for row in rows:
        conn.execute(
            "UPDATE runs SET status = 'failed', finished = ?, error = ? WHERE id = ? "
            "AND status = 'queued'",
            (
                now,
                f"this run waited for group {row['group_id']}, but its run {row['source']} "
                f"{row['status']}; queue this run again once that group is done",
                row["id"],
            ),
        )


def resolve_group_ref(conn: sqlite3.Connection, row: sqlite3.Row) -> None:
    """Replace an `init_from` of "@GROUP" by the id of that group's first run."""
    config = json.loads(row["config"])
    ref = config.get("init_from") or ""
    if not ref.startswith(GROUP_REF):
        return
    source = conn.execute(
        "SELECT id FROM runs WHERE group_id = ? ORDER BY slot LIMIT 1", (ref[len(GROUP_REF) :],)
    ).fetchone()
    if source is None:
        raise LabError(f"run {row['id']} starts from group {ref[1:]!r}, which has no runs")
    config["init_from"] = source["id"]
    conn.execute("UPDATE runs SET config = ? WHERE id = ?", (json.dumps(config), row["id"]))
