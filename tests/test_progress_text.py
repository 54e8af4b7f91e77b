"""What the queue panel says about a running run: a bar and a line that add up (issue 13, 5)."""

from __future__ import annotations

import time

from tl_core.progress import EpochStats, Progress
from tl_core.run import RunReporter
from tl_core.runs import NewRun, RunStore
from tl_core.schedule import queue_view, running_progress, time_left


def _running(store: RunStore, epochs: int = 3) -> str:
    new = NewRun(
        data_path="x",
        backbone="small_cnn",
        strategy="scratch",
        config={"train": {"epochs": epochs}},
    )
    (run_id,) = store.create_group([new])
    store.mark_running(run_id)
    return run_id


def _view(store: RunStore, run_id: str) -> dict:
    return next(r for r in queue_view(store) if r["id"] == run_id)


def _batch(epoch: int, done: int, total: int = 16, stats: EpochStats | None = None) -> Progress:
    return Progress("train", done, total, "training", epoch, 3, 0.5, 0.75, stats)


def _stats(epoch: int) -> EpochStats:
    return EpochStats(epoch, 0.5, 0.75, 0.4, 0.8, seconds=12.0, lr=0.001)


def test_just_after_epoch_one_the_line_says_epoch_two_from_its_start() -> None:
    store = RunStore()
    run_id = _running(store)
    report = RunReporter(store, run_id, None, every=0.0)
    report(_batch(1, 16))  # the last batch: validation follows
    assert running_progress(_view(store, run_id))[1].startswith("epoch 1/3, validating")
    report(_batch(1, 16, stats=_stats(1)))  # epoch 1 done, with validation
    fraction, text = running_progress(_view(store, run_id))
    assert text.startswith("epoch 2/3, batch 0/16 ·")  # epoch 1's running loss is not shown
    assert abs(fraction - 1 / 3) < 1e-9


def test_a_step_before_training_fills_the_bar_with_its_own_count() -> None:
    run = {"epochs_total": 3, "epoch": 0, "phase": "computing features", "batch": 323}
    run |= {"batches": 1368, "estimate": 10.0, "time_left": None}
    fraction, text = running_progress(run)
    assert abs(fraction - 323 / 1368) < 1e-9
    assert text == "before training: computing features 323/1368 · taking longer than estimated"


def test_past_its_estimate_a_run_still_working_has_no_time_left_figure() -> None:
    now = time.time()
    run = {"epochs_total": 3, "epoch": 0, "phase": "computing features", "started": now - 60}
    assert time_left(run, 10.0, now) is None
    assert time_left(run, 100.0, now) == 40.0


def test_a_resumed_run_counts_down_from_its_epoch_times() -> None:
    now = time.time()
    run = {"epochs_total": 3, "epoch": 1, "started": now - 30, "phase": "decoding images"}
    run |= {"batch": 100, "batches": 368}
    assert time_left(run, 15.0, now, epoch_seconds=10.0) == 20.0  # two epochs of 10 s
    assert running_progress({**run, "time_left": 20.0})[1] == (
        "resuming after epoch 1/3: decoding images 100/368 · about 20 s left"
    )
    training = {**run, "phase": "training", "batches": 16}
    lefts = [time_left({**training, "batch": b}, 15.0, now, 10.0) for b in (4, 8, 12)]
    assert lefts[0] > lefts[1] > lefts[2] > 0  # it moves with the batches, not frozen


def test_the_queue_view_times_a_resumed_run_by_its_finished_epochs() -> None:
    store = RunStore()
    run_id = _running(store)
    store.add_epoch(run_id, {**_stats(1).__dict__, "seconds": 30.0})
    store.heartbeat(run_id, phase="decoding images", batch=5, batches=50)
    run = _view(store, run_id)
    assert run["time_left"] == 60.0  # epochs 2 and 3 at 30 s each


def test_the_queue_panel_shows_the_line(monkeypatch) -> None:
    from app_fixtures import app_at

    monkeypatch.setenv("TL_LAB_NO_WORKER", "1")
    store = RunStore()
    run_id = _running(store)
    report = RunReporter(store, run_id, None, every=0.0)
    report(_batch(1, 16, stats=_stats(1)))
    at = app_at("pages/experiments.py")
    shown = [p.proto.text for p in at.get("progress")]
    assert any(t.startswith("epoch 2/3, batch 0/16") for t in shown), shown
