"""Recording queued runs: a group of them, written inside the run store's transaction.

`RunStore.create_groups` opens one write transaction (BEGIN IMMEDIATE), looks up each
group's request id (`request_runs`: a repeated click gets its runs back), runs the caller's
`RoomCheck` (`workspaces.room_check`: the queue limits) and writes the new groups
(`insert_group`), so a check there cannot be passed by simultaneous callers.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tl_core.runs import NewRun

# check(queued and running runs, how many runs are about to be added): raise LabError to refuse.
RoomCheck = Callable[[list[dict[str, Any]], int], None]


@dataclass(frozen=True)
class NewGroup:
    """Runs queued together (one comparison, one stage of a recipe); see
    `RunStore.create_group` for the fields."""

    runs: Sequence[NewRun]
    request_id: str | None = None
    group_id: str | None = None
    depends_on: str | None = None


def request_runs(conn: sqlite3.Connection, request_id: str | None) -> list[str]:
    """The ids of the runs queued by `request_id` (none without one)."""
    if request_id is None:
        return []
    rows = conn.execute(
        "SELECT id FROM runs WHERE request_id = ? ORDER BY slot", (request_id,)
    ).fetchall()
    return [r[0] for r in rows]


def insert_group(conn: sqlite3.Connection, group: NewGroup) -> list[str]:
    """Write the group's runs as queued, in order; their new ids."""
    from tl_core.runs import library_versions, new_run_id

    group_id = group.group_id or "g" + new_run_id()
    now = time.time()
    versions = json.dumps(library_versions())
    ids = []
    for slot, run in enumerate(group.runs):
        run_id = new_run_id()
        conn.execute(
            """INSERT INTO runs (id, name, created, group_id, request_id, slot, seed, recipe,
               workspace, data_path, backbone, strategy, config, status, epochs_total, versions,
               depends_on) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?)""",
            (
                run_id,
                run.name,
                now + slot * 1e-6,
                group_id,
                group.request_id,
                slot,
                run.seed,
                run.recipe,
                run.workspace,
                run.data_path,
                run.backbone,
                run.strategy,
                json.dumps(run.config),
                int(run.config.get("train", {}).get("epochs", 0)),
                versions,
                group.depends_on,
            ),
        )
        ids.append(run_id)
    return ids
