"""The queue of runs: record specs in the store, resume stopped runs, summarise a run.

A `RunSpec` (`tl_core.spec`) says what to train; `queue_runs` validates it once and records
it; `execute_run` (`tl_core.run`) trains a queued run top to bottom. The names of both
modules are re-exported here, where the CLI, the pages and the worker import them.
"""

from __future__ import annotations

from tl_core.data.folder import scan_dataset
from tl_core.errors import LabError
from tl_core.run import (  # noqa: F401 - re-exported
    CHECKPOINT_FILE,
    META_FILE,
    PREDICTIONS_FILE,
    TIMINGS_FILE,
    WEIGHTS_FILE,
    execute_run,
    init_state,
)
from tl_core.runs import GROUP_REF, NewRun, RoomCheck, RunStore
from tl_core.spec import RunSpec, expand  # noqa: F401 - re-exported


def queue_runs(
    store: RunStore,
    specs: list[RunSpec],
    *,
    request_id: str | None = None,
    workspace: str = "",
    group_id: str | None = None,
    depends_on: str | None = None,
    check: RoomCheck | None = None,
) -> list[str]:
    """Validate and record runs as one group (one comparison); returns their ids.

    Each spec is validated once, each distinct data set and split is scanned once (its
    content is not hashed here: the run does that when it starts), and a starting run is
    checked to be finished and of the same backbone. With `depends_on` (a group id) the runs
    wait for that group (`tl_core.run_deps`); an `init_from` of "@GROUP" is then checked when
    the run is claimed, not now. `check` runs in the store's write transaction
    (`RunStore.create_groups`), as `workspaces.room_check` does for the queue limits.
    """
    new = new_runs(store, specs, workspace=workspace)
    return store.create_group(
        new, request_id=request_id, group_id=group_id, depends_on=depends_on, check=check
    )


def new_runs(store: RunStore, specs: list[RunSpec], *, workspace: str = "") -> list[NewRun]:
    """Validate `specs` (see `queue_runs`) and make the store's records of them."""
    scanned: set[tuple] = set()
    for spec in specs:
        spec.validate()
        key = (spec.data, spec.val_fraction, spec.split_seed, spec.per_class)
        if key not in scanned:
            scan_dataset(
                spec.data,
                val_fraction=spec.val_fraction,
                seed=spec.split_seed,
                per_class=spec.per_class,
                hash_content=False,
            )
            scanned.add(key)
        if spec.init_from and not spec.init_from.startswith(GROUP_REF):
            init_state(store, spec)
    return [
        NewRun(
            data_path=str(spec.data),
            backbone=spec.backbone,
            strategy=spec.strategy,
            config=spec.to_dict(),
            name=spec.name,
            seed=spec.train.seed,
            recipe=spec.recipe,
            workspace=workspace,
        )
        for spec in specs
    ]


def resumable(store: RunStore, run_id: str) -> bool:
    """Whether `run_id` stopped part-way and has a checkpoint to continue from."""
    record = store.get(run_id)
    return (
        record["status"] in ("failed", "cancelled")
        and (store.run_dir(run_id, create=False) / CHECKPOINT_FILE).is_file()
    )


def _check_resumable(store: RunStore, run_id: str) -> None:
    store.fail_if_orphaned(run_id)  # a killed `train` stays "running" until this
    record = store.get(run_id)
    if record["status"] in ("queued", "running", "done"):
        raise LabError(
            f"run {run_id} is {record['status']}; only failed or cancelled runs can resume"
        )
    if not resumable(store, run_id):
        raise LabError(
            f"run {run_id} has no checkpoint (it stopped before finishing its first epoch); "
            "start it again with the same settings"
        )


def resume_run(store: RunStore, run_id: str, **kwargs) -> dict:
    """Continue a failed or cancelled run from its last finished epoch, in this process."""
    _check_resumable(store, run_id)
    store.update(run_id, cancel_requested=0, error=None, finished=None)
    store.mark_running(run_id)
    return execute_run(store, run_id, **kwargs)


def queue_resume(store: RunStore, run_id: str) -> None:
    """Put a failed or cancelled run back in the queue; the worker continues it from its
    checkpoint (`execute_run` picks the checkpoint up)."""
    _check_resumable(store, run_id)
    store.update(run_id, status="queued", cancel_requested=0, error=None, finished=None)


def run_summary(record: dict) -> dict:
    """The JSON object of the CLI contract for one run."""
    return {
        "run_id": record["id"],
        "name": record.get("name"),
        "group_id": record.get("group_id"),
        "status": record["status"],
        "backbone": record["backbone"],
        "strategy": record["strategy"],
        "seed": record.get("seed"),
        "best_val_acc": record.get("best_val_acc"),
        "final_val_acc": record.get("final_val_acc"),
        "epochs": record.get("epoch") or 0,
        "epochs_total": record.get("epochs_total"),
        "train_seconds": record.get("train_seconds"),
        "num_train": record.get("num_train"),
        "num_val": record.get("num_val"),
        "num_classes": record.get("num_classes"),
        "trainable_params": record.get("trainable_params"),
        "total_params": record.get("total_params"),
        "device": record.get("device"),
        "executor": record.get("executor") or "local",
        "node": record.get("node"),
        "world_size": record.get("world_size") or 1,
        "data": record.get("data_path"),
        "recipe": record.get("recipe"),
        "created": record.get("created"),
        "error": record.get("error"),
    }
