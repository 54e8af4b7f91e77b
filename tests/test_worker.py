"""The background worker: one per lab home, trains the queue, heartbeat, orphaned and
stale runs, clean stop on SIGTERM, queue positions and expected starts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from app_fixtures import small_specs, wait_for

from tl_core import schedule, worker
from tl_core.cli import main
from tl_core.errors import LabError
from tl_core.jobs import queue_runs
from tl_core.runs import RunStore

ROOT = Path(__file__).resolve().parent.parent


def test_worker_once_trains_the_queue_in_order(stripes, lab_home):
    store = RunStore()
    ids = queue_runs(store, small_specs(stripes, seeds=2, epochs=1))
    assert worker.run_worker(once=True, nice=0) == 2
    runs = [store.get(i) for i in ids]
    assert [r["status"] for r in runs] == ["done", "done"]
    assert runs[0]["started"] <= runs[1]["started"]
    assert not (lab_home / worker.HEARTBEAT_FILE).exists()  # removed on exit
    assert not worker.worker_running(lab_home)  # lock released


def test_only_one_worker_per_lab_home(lab_home):
    lock = worker.WorkerLock(lab_home)
    assert lock.acquire()
    try:
        assert worker.worker_running(lab_home)
        assert worker.run_worker(once=True) == 0
    finally:
        lock.release()
    assert not worker.worker_running(lab_home)


def test_orphaned_and_stale_runs_are_failed_with_a_reason(stripes):
    store = RunStore()
    dead, stale, alive = queue_runs(store, small_specs(stripes, seeds=3))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    store.update(dead, status="running", worker_pid=gone.pid, heartbeat=time.time())
    store.update(stale, status="running", worker_pid=os.getpid(), heartbeat=time.time() - 999)
    store.update(alive, status="running", worker_pid=os.getpid(), heartbeat=time.time())
    assert sorted(worker.fail_orphans(store, stale_after=60)) == sorted([dead, stale])
    assert "stopped before the run finished" in store.get(dead)["error"]
    assert "no heartbeat" in store.get(stale)["error"]
    assert store.get(alive)["status"] == "running"


def test_queue_view_positions_and_expected_start(stripes):
    store = RunStore()
    first, second, third = queue_runs(store, small_specs(stripes, seeds=3))
    store.claim_next(os.getpid())  # the first one runs
    view = schedule.queue_view(store)
    assert [(r["id"], r["position"]) for r in view] == [(first, 0), (second, 1), (third, 2)]
    assert view[1]["expected_start"] >= time.time() - 1
    assert view[2]["expected_start"] == pytest.approx(
        view[1]["expected_start"] + view[1]["estimate"]
    )
    assert schedule.queue_view(store, workspace="someone-else") == []


def test_ensure_worker_starts_one_detached_worker_that_trains(stripes, lab_home, monkeypatch):
    monkeypatch.setenv("TL_LAB_WORKER_IDLE_EXIT", "1")
    store = RunStore()
    (run_id,) = queue_runs(store, small_specs(stripes, seeds=1, epochs=1))
    pid = worker.ensure_worker(lab_home)
    assert pid
    assert worker.ensure_worker(lab_home) is None  # still starting: not a second one
    try:
        wait_for(lambda: worker.worker_running(lab_home), 30)
        assert worker.ensure_worker(lab_home) is None  # one is running already
        wait_for(lambda: "pid" in worker.worker_status(lab_home), 30)  # its first heartbeat
        status = worker.worker_status(lab_home)
        assert status["running"] is True and status["pid"] == pid and status["age"] < 60
        wait_for(lambda: store.get(run_id)["status"] == "done", 120)
        wait_for(lambda: not worker.worker_running(lab_home), 30)  # idle exit
        assert worker.worker_status(lab_home) == {"running": False}
    finally:
        if worker.worker_running(lab_home):  # still ours: the lock is held while it lives
            os.kill(pid, signal.SIGKILL)
    assert "started" in (lab_home / worker.LOG_FILE).read_text()


def test_sigterm_fails_the_run_in_progress_with_the_reason(stripes, lab_home):
    store = RunStore()
    (run_id,) = queue_runs(store, small_specs(stripes, seeds=1, epochs=500))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tl_core", "worker", "--idle-exit", "1"],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: store.get(run_id)["phase"] == "training", 90)
        beat = json.loads((lab_home / worker.HEARTBEAT_FILE).read_text())
        assert beat["pid"] == proc.pid and beat["run_id"] == run_id
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    record = store.get(run_id)
    assert record["status"] == "failed"
    assert "worker was stopped (SIGTERM)" in record["error"]
    assert not worker.worker_running(lab_home)


def test_cli_worker_once(stripes, capsys):
    store = RunStore()
    (run_id,) = queue_runs(store, small_specs(stripes, seeds=1, epochs=1))
    assert main(["worker", "--once", "--nice", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"runs": 1}
    assert store.get(run_id)["status"] == "done"


def test_format_duration():
    from tl_core.fmt import format_duration

    assert format_duration(42) == "42 s"
    assert format_duration(185) == "3 min 5 s"
    assert format_duration(3720) == "1 h 2 min"
    assert format_duration(None) == "-"


def test_max_workers_sets_how_many_runs_train_at_once(stripes, lab_home, monkeypatch):
    """With one slot held by another worker, a second worker trains only if a slot is free."""
    from tl_core.jobs import RunSpec
    from tl_core.train import TrainConfig

    store = RunStore()
    (run_id,) = queue_runs(
        store,
        [
            RunSpec(
                data=str(stripes),
                backbone="small_cnn",
                strategy="scratch",
                train=TrainConfig(epochs=1),
            )
        ],
    )
    held = worker.WorkerLock(lab_home, 0)
    assert held.acquire()  # the first worker, busy
    try:
        env = {**os.environ, "TL_LAB_HOME": str(lab_home)}
        one = subprocess.run(
            [sys.executable, "-m", "tl_core", "worker", "--once"], env=env, timeout=300
        )
        assert one.returncode == 0
        assert store.get(run_id)["status"] == "queued"  # default: one run at a time
        env["TL_LAB_MAX_WORKERS"] = "2"
        two = subprocess.run(
            [sys.executable, "-m", "tl_core", "worker", "--once"], env=env, timeout=300
        )
        assert two.returncode == 0
        assert store.get(run_id)["status"] == "done"  # the second slot took it
        assert (lab_home / "worker-1.lock").is_file()  # it ran in the second slot
    finally:
        held.release()
    monkeypatch.setenv("TL_LAB_MAX_WORKERS", "0")
    with pytest.raises(LabError, match="between 1 and 16"):
        worker.max_workers()


def test_queue_view_never_reads_an_image(stripes, monkeypatch):
    """The Experiments page refreshes the queue every 2 s: counting images must not read
    (or hash) the data set's files (queued runs have no stored image counts yet)."""
    import builtins

    from tl_core.data.images import is_image_name

    store = RunStore()
    queue_runs(store, small_specs(stripes, seeds=2))
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        if isinstance(file, str | os.PathLike) and is_image_name(file):
            raise AssertionError(f"the queue view read {file}")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    view = schedule.queue_view(store)
    assert len(view) == 2 and all(r["estimate"] > 0 for r in view)


def test_image_counts_match_the_split_without_reading_images(stripes):
    from tl_core.data.folder import scan_dataset

    spec = small_specs(stripes, seeds=1)[0]
    split = scan_dataset(stripes)
    assert schedule.image_counts(spec) == (len(split.train), len(split.val))


def test_rough_estimates_read_the_registries_and_refuse_unknown_names(stripes):
    from dataclasses import replace

    spec = replace(small_specs(stripes, seeds=1, epochs=4)[0], backbone="resnet18", fast=False)
    partial = schedule.estimate_seconds(replace(spec, strategy="partial_finetune"), 100, 20)
    full = schedule.estimate_seconds(replace(spec, strategy="full_finetune"), 100, 20)
    assert partial.basis == full.basis == "table"
    assert partial.seconds < full.seconds  # Strategy.cost_factor
    vgg = schedule.estimate_seconds(
        replace(spec, backbone="vgg16", strategy="full_finetune"), 100, 20
    )
    assert vgg.seconds > full.seconds  # Backbone.cpu_cost
    with pytest.raises(LabError, match="resnet18"):
        schedule.estimate_seconds(replace(spec, backbone="resnet50"), 100, 20)
