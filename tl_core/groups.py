"""Groups of runs, cancelled as a whole.

A group is what one click queued: a comparison (the runs of one Start, one `group_id` in the
run store) or a recipe launch (one run-store group per stage, `LAUNCH-sN`, all queued at
once, each stage waiting for the one before). `cancel_group` stops every queued or running
run of either; `python -m tl_core cancel --group GROUP_ID` and the Experiments page's
"Cancel all" button call it.
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


def _launch_or_none(store: RunStore, launch_id: str) -> list[dict] | None:
    from tl_core import recipes

    try:
        return [run for stage in recipes.launch_runs(store, launch_id) for run in stage]
    except LabError:
        return None


def group_runs(store: RunStore, group_id: str) -> tuple[list[dict], str | None]:
    """(the runs of group or recipe launch `group_id`, the recipe launch id or None).

    A stage's group id stands for its whole recipe launch: cancelling one stage alone would
    only let the next one start.
    """
    runs = sorted(store.list(group_id=group_id), key=lambda r: (r["created"], r["slot"]))
    launch_id = recipe_launch(runs[0]) if runs else group_id
    launch = _launch_or_none(store, launch_id) if launch_id else None
    if launch is not None:
        runs = launch
    elif not runs:
        raise LabError(
            f"no group or recipe launch {group_id!r}: `python -m tl_core runs --json` shows "
            "each run's group_id (a recipe launch id is a stage's group_id without its -sN)"
        )
    return runs, launch_id if launch is not None else None


def cancel_runs(store: RunStore, run_ids: Sequence[str]) -> list[dict]:
    """Cancel several runs (queued ones at once, running ones after their current batch);
    every id is checked before any is cancelled. Returns `{"run_id", "status"}` rows."""
    for run_id in run_ids:
        store.get(run_id)  # raises, naming the unknown id, before anything changes
    return [{"run_id": run_id, "status": store.request_cancel(run_id)} for run_id in run_ids]


def cancel_group(store: RunStore, group_id: str) -> list[dict]:
    """Cancel every queued or running run of a comparison or recipe launch (every stage of
    a recipe). Returns a `{"run_id", "status"}` row for each run it asked."""
    runs, _ = group_runs(store, group_id)
    return cancel_runs(store, [r["id"] for r in runs if r["status"] not in FINISHED])


def active_groups(runs: Sequence[dict]) -> dict[str, list[dict]]:
    """The queued and running runs among `runs`, by `group_key`, in first-seen order."""
    groups: dict[str, list[dict]] = {}
    for run in runs:
        if run["status"] not in FINISHED:
            groups.setdefault(group_key(run), []).append(run)
    return groups
