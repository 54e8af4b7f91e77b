"""Running a plan: build its data, queue every stage in the run store, train.

A launch queues all its stages at once, stage k as group `LAUNCH-sk`, each waiting for the
group before it (`depends_on`, see `tl_core.run_deps`): the store's `claim_next` hands out a
stage's runs only once the stage before is all done, and fails them with the reason if it
failed. A spec's `init_from="@stage0"` becomes "@LAUNCH-s0", the first run of that group,
resolved when the run is claimed. So the app's worker needs no loop of its own for recipes,
and `run_recipe` (the CLI) trains the same queued runs in this process.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace

from tl_core.errors import LabError
from tl_core.jobs import RunSpec, execute_run, new_runs
from tl_core.progress import Progress, ProgressFn
from tl_core.recipes.model import Plan, Stage
from tl_core.recipes.planning import SOURCE_PREFIX, dataset_exists, plan
from tl_core.runs import FINISHED, GROUP_REF, NewGroup, RoomCheck, RunStore

DataProgressFn = Callable[[int, int, str], None]  # a data builder's (done, total, what)
RunCallback = Callable[[int, int, dict], None]  # (run number, total, queued run record)


def stage_group(launch_id: str, stage: int) -> str:
    """The run group (and request id) of a launch's stage."""
    return f"{launch_id}-s{stage}"


def bind_stage(stage: Stage, groups: list[str]) -> list[RunSpec]:
    """The stage's specs with `"@stageN"` replaced by a reference to stage N's group."""
    out = []
    for spec in stage.specs:
        if spec.init_from and spec.init_from.startswith(SOURCE_PREFIX):
            n = int(spec.init_from[len(SOURCE_PREFIX) :])
            if n >= len(groups):
                raise LabError(f"stage {n} is not queued yet; it must be queued before this one")
            spec = replace(spec, init_from=GROUP_REF + groups[n])
        out.append(spec)
    return out


def prepare_data(plan: Plan, on_progress: DataProgressFn | None = None) -> None:
    """Build the data sets the plan needs and does not have yet (a download when online)."""
    from tl_core.data.builtin import build_builtin
    from tl_core.data.class_splits import make_source_target
    from tl_core.data.store import load_manifest

    for step in plan.prepare:
        if not step.target_classes:
            build_builtin(
                step.builtin, name=step.name, per_class=step.per_class, on_progress=on_progress
            )
            continue
        if dataset_exists(step.name) and dataset_exists(step.target_name or ""):
            info = load_manifest(step.target_name).info
            if info.get("split_from") == step.builtin and info.get("per_class") == (
                step.per_class_target
            ):
                continue
        if on_progress is not None:
            on_progress(0, 1, step.description)
        make_source_target(
            step.builtin,
            list(step.target_classes),
            source_name=step.name,
            target_name=step.target_name,
            per_class_target=step.per_class_target,
        )
        if on_progress is not None:
            on_progress(1, 1, step.description)


def start_recipe(
    store: RunStore,
    plan: Plan,
    *,
    launch_id: str | None = None,
    workspace: str = "",
    check: RoomCheck | None = None,
) -> str:
    """Queue every stage of the plan (its data must be there: `prepare_data`) in one write
    to the run store, with `check` (`workspaces.room_check`) inside it; returns the launch
    id. Calling it again with the same `launch_id` queues nothing new."""
    launch_id = launch_id or "r" + uuid.uuid4().hex[:12]
    groups = [stage_group(launch_id, k) for k in range(len(plan.stages))]
    stages = [
        NewGroup(
            new_runs(store, bind_stage(stage, groups[:k]), workspace=workspace),
            request_id=groups[k],
            group_id=groups[k],
            depends_on=groups[k - 1] if k else None,
        )
        for k, stage in enumerate(plan.stages)
    ]
    store.create_groups(stages, check=check)
    return launch_id


def queue_recipe(
    store: RunStore, name: str, *, workspace: str = "", request_id: str | None = None
) -> list[str]:
    """The app's one click: plan recipe `name` for the workspace, build its data, and queue
    it within the workspace's limit of queued runs; returns the run ids (a repeated
    `request_id` returns the first click's runs)."""
    from tl_core.workspaces import check_room, check_workspace, room_check

    workspace = check_workspace(workspace)
    p = plan(name, workspace=workspace)
    launch_id = request_id or "r" + uuid.uuid4().hex[:12]
    if not store.list(group_id=stage_group(launch_id, 0)):
        check_room(store, workspace, len(p.specs))
    prepare_data(p)
    start_recipe(store, p, launch_id=launch_id, workspace=workspace, check=room_check(workspace))
    return [r["id"] for stage in launch_runs(store, launch_id) for r in stage]


def launch_runs(store: RunStore, launch_id: str) -> list[list[dict]]:
    """The run records of a launch, stage by stage, in queue order."""
    stages = []
    while runs := store.list(group_id=stage_group(launch_id, len(stages))):
        stages.append(sorted(runs, key=lambda r: r["slot"]))
    if not stages:
        raise LabError(f"no recipe launch {launch_id!r} in the run store")
    return stages


@dataclass
class LaunchStatus:
    launch_id: str
    recipe: str
    status: str  # "running" (something queued or training), "done", "failed", "cancelled"
    stage: int  # the first stage not finished yet (the last when all are)
    stages: int
    run_ids: list[list[str]]
    message: str = ""


def launch_status(store: RunStore, launch_id: str) -> LaunchStatus:
    """Where a launch stands, read from the run store."""
    stages = launch_runs(store, launch_id)
    runs = [r for stage in stages for r in stage]
    waiting = [
        k for k, stage in enumerate(stages) if any(r["status"] not in FINISHED for r in stage)
    ]
    bad = [r for r in runs if r["status"] in FINISHED and r["status"] != "done"]
    cancelled = any(r["status"] == "cancelled" for r in bad)
    status = "running" if waiting else "cancelled" if cancelled else "failed" if bad else "done"
    message = ""
    if bad and not waiting:
        message = f"{len(bad)} run(s) did not finish: " + ", ".join(
            f"{r['name'] or r['id']} {r['status']}" for r in bad
        )
    return LaunchStatus(
        launch_id,
        runs[0].get("recipe") or "",
        status,
        waiting[0] if waiting else len(stages) - 1,
        len(stages),
        [[r["id"] for r in stage] for stage in stages],
        message,
    )


def _data_progress(on_progress: ProgressFn) -> DataProgressFn:
    """A data builder's (done, total, what) callback, as the library's `Progress` event."""

    def report(done: int, total: int, what: str) -> None:
        on_progress(Progress("data", done, total, f"data: {what}"))

    return report


def run_recipe(
    plan: Plan,
    store: RunStore | None = None,
    *,
    on_run: RunCallback | None = None,
    on_progress: ProgressFn | None = None,
    workspace: str = "",
) -> dict:
    """Prepare the data and train every stage here, one run after another, recorded in
    `workspace`; returns `recipe_results` for the launch. A failed run is recorded and the
    others go on (runs that start from it fail with the reason). `on_progress` receives
    every `Progress` event: building the data (stage "data") and each run's steps."""
    from tl_core.recipes.results import recipe_results

    store = store or RunStore()
    prepare_data(plan, on_progress=None if on_progress is None else _data_progress(on_progress))
    launch_id = start_recipe(store, plan, workspace=workspace)
    groups = [stage_group(launch_id, k) for k in range(len(plan.stages))]
    done = 0
    while (record := store.claim_next(groups=groups)) is not None:
        done += 1
        if on_run is not None:
            on_run(done, len(plan.specs), record)
        try:
            execute_run(store, record["id"], on_progress=on_progress)  # its one-off steps too
        except KeyboardInterrupt:
            store.finish(record["id"], "cancelled", error="interrupted from the keyboard")
            raise
        except Exception:  # noqa: BLE001 - recorded as failed by execute_run; go on
            pass
    return recipe_results(store, launch_id, plan=plan)
