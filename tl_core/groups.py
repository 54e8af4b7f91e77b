"""Groups of runs, cancelled as a whole.

A group is what one click queued: a comparison (the runs of one Start, one `group_id` in the
run store) or a recipe launch (one run-store group per stage, under one launch id, whose
later stages queue themselves). `cancel_group` stops every queued or running run of either
and, for a recipe, the stages not queued yet; `python -m tl_core cancel --group GROUP_ID`
and the Experiments page's "Cancel all" button call it.
"""

from __future__ import annotations

from collections.abc import Sequence

from tl_core.errors import LabError
from tl_core.runs import FINISHED, RunStore


def recipe_launch(run: dict) -> str | None:
    """The launch id of a recipe run: its stage was queued under request id `LAUNCH-sN`."""
    if not run.get("recipe"):
        return None
    launch, sep, stage = (run.get("request_id") or "").rpartition("-s")
    return launch if sep and launch and stage.isdigit() else None


def group_key(run: dict) -> str:
    """What `cancel_group` takes to cancel this run's whole group: its recipe launch id, or
    its comparison's group id."""
    return recipe_launch(run) or run["group_id"]


def _launch_or_none(launch_id: str) -> dict | None:
    from tl_core import recipes

    try:
        return recipes.load_launch(launch_id)
    except LabError:
        return None


def group_runs(store: RunStore, group_id: str) -> tuple[list[dict], str | None]:
    """(the runs of group or recipe launch `group_id`, the recipe launch id or None).

    A stage's group id stands for its whole recipe launch: cancelling one stage alone would
    only let the next one start.
    """
    runs = sorted(store.list(group_id=group_id), key=lambda r: (r["created"], r["slot"]))
    launch_id = recipe_launch(runs[0]) if runs else group_id
    launch = _launch_or_none(launch_id) if launch_id else None
    if launch is not None:
        runs = [store.get(run_id) for stage in launch["stages"] for run_id in stage]
    elif not runs:
        raise LabError(
            f"no group or recipe launch {group_id!r}: `python -m tl_core runs --json` shows "
            "each run's group_id, `python -m tl_core recipe --launches` the launch ids"
        )
    return runs, launch_id if launch is not None else None


def cancel_runs(store: RunStore, run_ids: Sequence[str]) -> list[dict]:
    """Cancel several runs (queued ones at once, running ones after their current batch);
    every id is checked before any is cancelled. Returns `{"run_id", "status"}` rows."""
    for run_id in run_ids:
        store.get(run_id)  # raises, naming the unknown id, before anything changes
    return [{"run_id": run_id, "status": store.request_cancel(run_id)} for run_id in run_ids]


def cancel_group(store: RunStore, group_id: str) -> list[dict]:
    """Cancel every queued or running run of a comparison or recipe launch (and a recipe's
    stages not queued yet). Returns a `{"run_id", "status"}` row for each run it asked."""
    runs, launch_id = group_runs(store, group_id)
    if launch_id is None:
        return cancel_runs(store, [r["id"] for r in runs if r["status"] not in FINISHED])
    from tl_core import recipes

    rows: dict[str, dict] = {}
    for _ in range(2):  # again, in case the worker queued a stage while the launch was marked
        recipes.cancel_launch(launch_id)
        runs, _ = group_runs(store, launch_id)
        active = [r["id"] for r in runs if r["status"] not in FINISHED and r["id"] not in rows]
        rows.update((row["run_id"], row) for row in cancel_runs(store, active))
    return list(rows.values())


def active_groups(runs: Sequence[dict]) -> dict[str, list[dict]]:
    """The queued and running runs among `runs`, by `group_key`, in first-seen order."""
    groups: dict[str, list[dict]] = {}
    for run in runs:
        if run["status"] not in FINISHED:
            groups.setdefault(group_key(run), []).append(run)
    return groups
