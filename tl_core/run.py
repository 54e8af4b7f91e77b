"""One training run, top to bottom.

`execute_run` reads a queued run's spec from the store (trusted: it was validated when it
was queued) and does, in order:

1. `load_data` (`tl_core.prepare`): scan the data set once and decode its images;
2. `build`: the backbone under the strategy, from ImageNet weights, a run or random ones;
3. `prepare_fast_path` (`tl_core.prepare`): what `fit` trains, by the strategy's
   `fast_path` (cached features, cached frozen-prefix outputs, or batched images);
4. `fit_run`: the training loop, with a checkpoint after every epoch;
5. `save`: the best weights, the preprocessing and the timings;
6. `evaluate_run`: validation predictions of the saved model, and the final record.

`RunReporter` keeps the store's heartbeat, progress and epochs current and turns cancel
requests into a stop between batches. The CLI calls `execute_run` in-process; the web
app's background worker (`tl_core.worker`) calls it for each queued run.
"""

from __future__ import annotations

import gc
import socket
import time
import traceback
from dataclasses import asdict, replace
from pathlib import Path

import torch

from tl_core import distributed
from tl_core.atomic import load_weights
from tl_core.errors import LabError, as_lab_error
from tl_core.machine import Runtime, device_label, resolve_runtime, seed_everything
from tl_core.models import (
    BuiltModel,
    build_model,
    count_params,
)
from tl_core.prepare import Prepared, RunData, load_data, prepare_fast_path
from tl_core.progress import Progress, ProgressFn
from tl_core.runs import RunStore, atomic_torch_save
from tl_core.spec import RunSpec
from tl_core.train import (
    History,
    evaluate,
    fit,
    make_loader,
)

WEIGHTS_FILE = "weights.pt"
META_FILE = "meta.json"
PREDICTIONS_FILE = "predictions.json"
TIMINGS_FILE = "timings.json"  # one-off costs (decoding, caches) apart from training
CHECKPOINT_FILE = "checkpoint.pt"  # the state after the last finished epoch, for `resume`


def execute_run(
    store: RunStore,
    run_id: str,
    *,
    on_progress: ProgressFn | None = None,
    heartbeat_every: float = 1.0,
) -> dict:
    """Train the queued (or just created) run `run_id`; returns its final record.

    `on_progress` receives every `Progress` event of the run (decoding, caches, training).

    A run that stopped part-way (its process killed, a full disk) and left a checkpoint
    continues from its last finished epoch. Out of GPU memory, it is retried once with half the
    batch size. A LabError or any other exception marks the run failed with the message, and is
    raised again for the caller; a cancel request stops it between batches as `cancelled`.
    """
    record = store.get(run_id)
    if record["status"] != "running":
        store.mark_running(run_id)
    spec = RunSpec.from_dict(record["config"], trusted=True)
    report = RunReporter(store, run_id, on_progress, heartbeat_every)
    try:
        _run(store, run_id, spec, report)
    except LabError as exc:
        store.finish(run_id, "failed", error=str(exc))
        raise
    except OSError as exc:
        disk = as_lab_error(exc)
        store.finish(
            run_id, "failed", error=str(disk) if disk else f"{exc.__class__.__name__}: {exc}"
        )
        raise
    except Exception as exc:
        store.finish(
            run_id,
            "failed",
            error=f"{exc.__class__.__name__}: {exc}\n{traceback.format_exc(limit=8)}",
        )
        raise
    return store.get(run_id)


def _run(store: RunStore, run_id: str, spec: RunSpec, report: RunReporter) -> None:
    """Resolve the runtime and read the data once; train, and once more with half the batch
    when the first try ran out of GPU memory."""
    started = time.perf_counter()
    runtime = resolve_runtime(spec.train.device, spec.train.precision)
    data = load_data(spec, report)
    try:
        _train(store, run_id, spec, runtime, data, report, started)
    except torch.OutOfMemoryError:
        half = max(1, spec.train.batch_size // 2)
        if half == spec.train.batch_size:
            raise
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        (store.run_dir(run_id) / CHECKPOINT_FILE).unlink(missing_ok=True)
        spec = replace(spec, train=replace(spec.train, batch_size=half))
        store.update(
            run_id, config=spec.to_dict(), error=f"out of memory; retrying with batch size {half}"
        )
        try:
            _train(store, run_id, spec, runtime, data, report, started)
        except torch.OutOfMemoryError as exc:
            raise LabError(
                f"out of memory even with batch size {half}; lower --batch-size further, "
                "choose a smaller backbone, or train on the CPU (--device cpu)"
            ) from exc


def _train(
    store: RunStore,
    run_id: str,
    spec: RunSpec,
    runtime: Runtime,
    data: RunData,
    report: RunReporter,
    started: float,
) -> None:
    """Build -> prepare the strategy's fast path -> fit -> save -> evaluate."""
    built = build(store, spec, data)
    _record_start(store, run_id, data, built, runtime)
    prepared = prepare_fast_path(spec, built, data, runtime, report, report.should_stop)
    checkpoints = Checkpoints(store.run_dir(run_id) / CHECKPOINT_FILE, started)
    if checkpoints.resume is not None:
        epoch = checkpoints.resume["epoch"]
        # The checkpoint is saved just before its epoch's row: a run stopped between the two
        # (or a Ray node lost before the row came back) gets the row from the checkpoint.
        for stats in checkpoints.resume.get("epochs", []):
            store.add_epoch(run_id, stats)
        report(Progress("resume", 1, 1, f"resuming after epoch {epoch}"))
    history = fit_run(prepared, runtime, report, checkpoints)
    save(store, run_id, spec, data, built, prepared, history)
    evaluate_run(store, run_id, data, prepared, runtime, history, checkpoints)


# ---------------------------------------------------------------------------- progress


class RunReporter:
    """The run's progress callback: keeps the store current and forwards every event.

    Heartbeats go to the store at most once per `every` seconds (and at the end of every
    step and epoch); finished epochs become epoch rows; `should_stop` polls the store's cancel
    request at most twice a second.
    """

    def __init__(
        self,
        store: RunStore,
        run_id: str,
        on_progress: ProgressFn | None,
        every: float,
    ) -> None:
        self.store, self.run_id, self.every = store, run_id, every
        self.on_progress = on_progress
        self.last_beat = 0.0
        self.cancel_checked = 0.0
        self.cancelled = False

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        if p.stage == "train":
            if p.epoch_stats is not None:
                self.store.add_epoch(self.run_id, asdict(p.epoch_stats))
            if p.epoch_stats is not None or now - self.last_beat >= self.every:
                self.last_beat = now
                self.store.heartbeat(
                    self.run_id,
                    phase="training",
                    epoch=p.epoch - (p.epoch_stats is None),
                    batch=0 if p.epoch_stats is not None else p.done,  # the next epoch's count
                    batches=p.total,
                    running_loss=p.loss,
                    running_acc=p.acc,
                )
        elif now - self.last_beat >= self.every or p.done == p.total:
            self.last_beat = now
            self.store.heartbeat(self.run_id, phase=p.message, batch=p.done, batches=p.total)
        if self.on_progress is not None:
            self.on_progress(p)

    def should_stop(self) -> bool:
        now = time.monotonic()
        if now - self.cancel_checked >= 0.5:
            self.cancel_checked = now
            self.cancelled = self.store.cancel_requested(self.run_id)
        return self.cancelled


# ---------------------------------------------------------------------------- 2. build


def init_state(store: RunStore, spec: RunSpec) -> dict[str, torch.Tensor]:
    """The trained weights of the finished run `spec.init_from` starts from."""
    source = store.get(spec.init_from)
    if source["status"] != "done":
        raise LabError(
            f"run {spec.init_from} is {source['status']}, not done; start from a finished run"
        )
    if source["backbone"] != spec.backbone:
        raise LabError(
            f"run {spec.init_from} trained {source['backbone']}, not {spec.backbone}; "
            f"use --backbone {source['backbone']} to start from it"
        )
    path = store.run_dir(spec.init_from, create=False) / WEIGHTS_FILE
    if not path.is_file():
        raise LabError(f"run {spec.init_from} has no saved weights")
    return load_weights(path)


def build(store: RunStore, spec: RunSpec, data: RunData) -> BuiltModel:
    """The model for the spec, its new head seeded by the training seed."""
    start = init_state(store, spec) if spec.init_from else None
    seed_everything(spec.train.seed)  # the new head's (or a scratch model's) initial weights
    return build_model(
        spec.backbone,
        len(data.split.classes),
        spec.strategy,
        trainable_blocks=spec.trainable_blocks,
        weights_file=spec.weights,
        init_state=start,
        init_label=f"run:{spec.init_from}" if spec.init_from else None,
    )


def _record_start(
    store: RunStore, run_id: str, data: RunData, built: BuiltModel, runtime: Runtime
) -> None:
    trainable, total = count_params(built.model)
    store.update(
        run_id,
        data_hash=data.split.content_hash,
        classes=data.split.classes,
        num_classes=len(data.split.classes),
        num_train=len(data.train.images),
        num_val=len(data.val.images),
        trainable_params=trainable,
        total_params=total,
        device=device_label(runtime.device),
        world_size=distributed.world_size(),
        **placement(),
    )


def placement() -> dict:
    """Where this process trains: the local executor, on this host. (A run on Ray trains in
    a temporary store on its node; the worker records `ray` and that node, `tl_core.ray_exec`.)"""
    return {"executor": "local", "node": socket.gethostname()}


# ---------------------------------------------------------------------------- 4. fit


def _load_checkpoint(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a damaged checkpoint means starting over, said below
        path.rename(path.with_name(path.name + ".damaged"))
        return None


class Checkpoints:
    """The run's checkpoint file: the state to resume from, and a save after every epoch."""

    def __init__(self, path: Path, started: float) -> None:
        self.path, self.started = path, started
        self.resume = _load_checkpoint(path)
        self.elapsed_before = self.resume.get("elapsed", 0.0) if self.resume else 0.0

    def elapsed(self) -> float:
        """Seconds the run has worked, over every process that worked on it."""
        return self.elapsed_before + time.perf_counter() - self.started

    def save(self, state: dict) -> None:
        state["elapsed"] = self.elapsed()
        atomic_torch_save(state, self.path)


def fit_run(
    prepared: Prepared, runtime: Runtime, report: RunReporter, checkpoints: Checkpoints
) -> History:
    """Train the prepared module; afterwards the whole model holds the best epoch's weights."""
    if prepared.cancelled:
        return History(status="cancelled", device=str(runtime.device), precision=runtime.precision)
    history = fit(
        prepared.net,
        prepared.train_set,
        prepared.val_set,
        prepared.config,
        on_progress=report,
        should_stop=report.should_stop,
        set_train_mode=prepared.train_mode,
        head_names=prepared.head_names,
        checkpoint=checkpoints.save,
        resume=checkpoints.resume,
        runtime=runtime,
    )
    if history.best_state is not None:
        prepared.net.load_state_dict(history.best_state)
    return history


# ---------------------------------------------------------------------------- 5. save


def save(
    store: RunStore,
    run_id: str,
    spec: RunSpec,
    data: RunData,
    built: BuiltModel,
    prepared: Prepared,
    history: History,
) -> None:
    """Timings, then the weights, preprocessing and classes of the best epoch."""
    store.write_json(
        run_id,
        TIMINGS_FILE,
        {
            "decode_seconds": data.decode_seconds,
            "cache_seconds": prepared.cache_seconds,
            "train_seconds": history.seconds,
            "epoch_seconds": [e.seconds for e in history.epochs],
            "path": prepared.path,
        },
    )
    model = prepared.model.eval()
    best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    atomic_torch_save(best_state, store.run_dir(run_id) / WEIGHTS_FILE)
    store.write_json(
        run_id,
        META_FILE,
        {
            "run_id": run_id,
            "backbone": spec.backbone,
            "strategy": spec.strategy,
            "classes": data.split.classes,
            "preprocessing": data.pre.to_dict(),
            "weights_source": built.weights_source,
            "best_epoch": history.best_epoch,
        },
    )


# ---------------------------------------------------------------------------- 6. evaluate


def evaluate_run(
    store: RunStore,
    run_id: str,
    data: RunData,
    prepared: Prepared,
    runtime: Runtime,
    history: History,
    checkpoints: Checkpoints,
) -> None:
    """Validation predictions of the saved model, then the run's final record."""
    loader = make_loader(
        prepared.predict_set,
        prepared.predict_batch,
        shuffle=False,
        generator=None,
        device=runtime.device,
    )
    fp32 = prepared.predict_in_fp32  # the cached validation features: the head alone predicts
    _, _, probs, labels = evaluate(
        prepared.predictor,
        loader,
        device=runtime.device,
        precision="fp32" if fp32 else runtime.precision,
        channels_last=not fp32,
        return_outputs=True,
    )
    store.write_json(run_id, PREDICTIONS_FILE, _predictions(data, probs, labels))
    cancelled = history.status == "cancelled"
    if not cancelled:
        checkpoints.path.unlink(missing_ok=True)  # done: weights.pt is the result
    store.finish(
        run_id,
        "cancelled" if cancelled else "done",
        best_val_acc=history.best_val_acc if history.epochs else None,
        final_val_acc=history.final_val_acc,
        train_seconds=checkpoints.elapsed(),
        epoch=len(history.epochs),
        phase=f"cache {prepared.cache_seconds:.1f}s" if prepared.cache_seconds else None,
        error=f"skipped {data.skipped} unreadable file(s)" if data.skipped else None,
    )


def _predictions(data: RunData, probs: torch.Tensor, labels: torch.Tensor) -> dict:
    root = str(data.split.root)
    rows = []
    for path, p, y in zip(data.val.paths, probs.tolist(), labels.tolist(), strict=True):
        pred = max(range(len(p)), key=p.__getitem__)
        rows.append(
            {
                "path": path,
                "rel": path[len(root) + 1 :] if path.startswith(root) else path,
                "true": y,
                "pred": pred,
                "confidence": p[pred],
                "probs": [round(v, 5) for v in p],
            }
        )
    return {"classes": data.split.classes, "items": rows}
