"""Fault injection: killed workers, full disks during checkpoints, running out of memory."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tl_core import run
from tl_core.cli import main
from tl_core.errors import LabError
from tl_core.jobs import CHECKPOINT_FILE, RunSpec, execute_run, queue_runs, resume_run
from tl_core.runs import RunStore
from tl_core.train import TrainConfig
from tl_core.worker import fail_orphans


def _spec(data, epochs: int = 3, strategy: str = "scratch", **kw) -> RunSpec:
    return RunSpec(
        data=str(data),
        backbone="small_cnn",
        strategy=strategy,
        train=TrainConfig(epochs=epochs, batch_size=8, lr=0.02, precision="fp32", seed=5),
        **kw,
    )


def _weights(store: RunStore, run_id: str) -> dict[str, torch.Tensor]:
    return torch.load(store.run_dir(run_id) / "weights.pt", weights_only=True)


def test_a_run_killed_mid_epoch_resumes_exactly_where_it_stopped(stripes, lab_home) -> None:
    store = RunStore()
    # The reference: the same run, never interrupted.
    (reference,) = queue_runs(store, [_spec(stripes, epochs=4)])
    execute_run(store, reference)

    (victim,) = queue_runs(store, [_spec(stripes, epochs=4)])
    marker = lab_home / "in-epoch-3"
    script = (
        "import sys, time, pathlib\n"
        "from tl_core.jobs import execute_run\n"
        "from tl_core.runs import RunStore\n"
        "store = RunStore(sys.argv[1])\n"
        "def hold(p):\n"
        "    # A batch of epoch 3 is done: say so, then wait here for the kill (mid-epoch, on\n"
        "    # a loaded machine too).\n"
        "    if p.stage == 'train' and p.epoch >= 3 and p.epoch_stats is None and p.done >= 1:\n"
        "        pathlib.Path(sys.argv[2]).touch()\n"
        "        time.sleep(300)\n"
        f"execute_run(store, {victim!r}, on_progress=hold)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(lab_home), str(marker)])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not marker.exists() and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    record = store.get(victim)
    assert record["status"] == "running" and record["epoch"] == 2  # killed during epoch 3
    assert fail_orphans(store) == [victim]
    failed = store.get(victim)
    assert failed["status"] == "failed" and f"tl_core resume {victim}" in failed["error"]

    resumed = resume_run(store, victim)
    assert resumed["status"] == "done" and resumed["epoch"] == 4
    assert [e["epoch"] for e in store.epochs(victim)] == [1, 2, 3, 4]
    ref, got = _weights(store, reference), _weights(store, victim)
    for name in ref:
        assert torch.equal(ref[name], got[name]), name
    assert not (store.run_dir(victim) / CHECKPOINT_FILE).exists()  # done: no checkpoint left
    assert [e["train_loss"] for e in store.epochs(victim)] == [
        e["train_loss"] for e in store.epochs(reference)
    ]


def test_a_run_stopped_between_its_checkpoint_and_its_epoch_row_resumes_with_every_row(
    stripes, lab_home
) -> None:
    """The checkpoint is saved just before its epoch's row; a stop between the two (or a Ray
    node lost before the row came back) must not leave a hole in the curve after resume."""
    store = RunStore()
    (run_id,) = queue_runs(store, [_spec(stripes, epochs=4)])

    def stop_after_epoch_2(p) -> None:
        if p.stage == "train" and p.epoch_stats is not None and p.epoch == 2:
            raise KeyboardInterrupt  # stands for a kill after the checkpoint of epoch 2

    with contextlib.suppress(KeyboardInterrupt):
        execute_run(store, run_id, on_progress=stop_after_epoch_2)
    assert (store.run_dir(run_id) / CHECKPOINT_FILE).is_file()
    with store._conn(write=True) as conn:  # the row of epoch 2 never reached the store
        conn.execute("DELETE FROM epochs WHERE run_id = ? AND epoch = 2", (run_id,))
    store.finish(run_id, "failed", error="stopped")
    assert [e["epoch"] for e in store.epochs(run_id)] == [1]

    resumed = resume_run(store, run_id)
    assert resumed["status"] == "done"
    assert [e["epoch"] for e in store.epochs(run_id)] == [1, 2, 3, 4]


def test_resume_through_the_command_prints_the_train_json(stripes, capsys) -> None:
    store = RunStore()
    (run_id,) = queue_runs(store, [_spec(stripes, epochs=2)])
    calls = {"n": 0}

    def cancel_after_first_epoch(p) -> None:
        if p.epoch_stats is not None and not calls["n"]:
            calls["n"] += 1
            store.request_cancel(run_id)
            time.sleep(0.6)  # the run looks at cancel requests at most twice a second

    execute_run(store, run_id, on_progress=cancel_after_first_epoch)
    assert store.get(run_id)["status"] == "cancelled"
    assert main(["resume", run_id, "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["run_id"] == run_id and result["status"] == "done" and result["epochs"] == 2
    assert main(["resume", run_id]) == 2  # done runs cannot resume
    assert "only failed or cancelled" in capsys.readouterr().err


def test_resume_without_a_checkpoint_says_what_to_do(stripes) -> None:
    store = RunStore()
    (run_id,) = queue_runs(store, [_spec(stripes)])
    store.finish(run_id, "failed", error="killed before the first epoch")
    with pytest.raises(LabError, match="no checkpoint.*start it again"):
        resume_run(store, run_id)


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(stripes, monkeypatch) -> None:
    store = RunStore()
    (run_id,) = queue_runs(store, [_spec(stripes, epochs=3)])
    real_save = run.atomic_torch_save
    saves = {"n": 0}

    def full_on_second_checkpoint(obj, path):
        if path.name == CHECKPOINT_FILE:
            saves["n"] += 1
            if saves["n"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(obj, path)

    monkeypatch.setattr(run, "atomic_torch_save", full_on_second_checkpoint)
    with pytest.raises(OSError):
        execute_run(store, run_id)
    record = store.get(run_id)
    assert record["status"] == "failed" and "No space left on device" in record["error"]
    assert "free some space" in record["error"]
    checkpoint = torch.load(store.run_dir(run_id) / CHECKPOINT_FILE, weights_only=True)
    assert checkpoint["epoch"] == 1  # the last good checkpoint survived the failed write
    monkeypatch.setattr(run, "atomic_torch_save", real_save)
    resumed = resume_run(store, run_id)
    assert resumed["status"] == "done" and resumed["epoch"] == 3


def test_out_of_memory_retries_once_with_half_the_batch(stripes, monkeypatch) -> None:
    store = RunStore()
    (run_id,) = queue_runs(store, [_spec(stripes, epochs=1)])
    real_fit = run.fit
    seen = []

    def fit_that_fits_only_small_batches(model, train, val, config, *args, **kwargs):
        seen.append(config.batch_size)
        if config.batch_size > 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_fit(model, train, val, config, *args, **kwargs)

    monkeypatch.setattr(run, "fit", fit_that_fits_only_small_batches)
    record = execute_run(store, run_id)
    assert seen == [8, 4]
    assert record["status"] == "done"
    assert record["config"]["train"]["batch_size"] == 4

    (second,) = queue_runs(store, [_spec(stripes, epochs=1)])
    seen.clear()
    monkeypatch.setattr(
        run,
        "fit",
        lambda *a, **k: (_ for _ in ()).throw(torch.OutOfMemoryError("CUDA out of memory")),
    )
    with pytest.raises(LabError, match="out of memory even with batch size 4"):
        execute_run(store, second)
    assert "lower --batch-size" in store.get(second)["error"]


def test_the_worker_moves_on_after_a_crashed_run(stripes, lab_home) -> None:
    store = RunStore()
    first, second = queue_runs(store, [_spec(stripes, epochs=1), _spec(stripes, epochs=1)])
    store.claim_next(worker_pid=2**22 + 12345)  # a worker pid that does not exist
    env = {**os.environ, "TL_LAB_HOME": str(lab_home)}
    done = subprocess.run(
        [sys.executable, "-m", "tl_core", "worker", "--once"],
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert store.get(first)["status"] == "failed"
    assert store.get(second)["status"] == "done"


def _wait_for(store: RunStore, predicate, seconds: float = 180.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        runs = store.list()
        if runs and predicate(runs[0]):
            return runs[0]
        time.sleep(0.05)
    raise AssertionError("the condition was not reached in time")


def test_a_killed_train_command_can_be_cancelled_and_resumed_at_once(stripes, lab_home) -> None:
    """kill -9 of `python -m tl_core train`: the README's promise is that resume continues it."""
    env = {**os.environ, "TL_LAB_HOME": str(lab_home)}
    argv = ["--data", str(stripes), "--backbone", "small_cnn", "--strategy", "scratch"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tl_core", "train", *argv, "--epochs", "200", "--batch-size", "8"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store = RunStore()
    try:
        record = _wait_for(store, lambda r: r["epoch"] >= 1 and r["status"] == "running")
        assert record["worker_pid"] == proc.pid
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    run_id = record["id"]
    assert store.get(run_id)["status"] == "running"  # nobody told the store

    assert main(["cancel", run_id]) == 0  # was: "running", and nothing happened
    cancelled = store.get(run_id)
    assert cancelled["status"] == "cancelled"
    assert "ended without finishing" in cancelled["error"]

    first_epoch = []

    def stop_soon(p) -> None:
        if p.epoch >= 1:  # a training batch, not a one-off step
            first_epoch.append(p.epoch)
            store.request_cancel(run_id)

    resumed = resume_run(store, run_id, on_progress=stop_soon)
    assert first_epoch[0] >= 2  # continued from its checkpoint, not from the start
    assert resumed["status"] == "cancelled" and resumed["worker_pid"] == os.getpid()


def test_resume_fails_a_run_whose_process_is_gone_then_continues_it(stripes) -> None:
    store = RunStore()
    (run_id,) = queue_runs(store, [_spec(stripes, epochs=2)])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=60)
    store.mark_running(run_id)
    store.update(run_id, worker_pid=dead.pid)  # as a killed `train` leaves it
    (store.run_dir(run_id) / CHECKPOINT_FILE).unlink(missing_ok=True)
    with pytest.raises(LabError, match="has no checkpoint"):
        resume_run(store, run_id)  # was: "is running; only failed or cancelled runs can resume"
    record = store.get(run_id)
    assert record["status"] == "failed" and "ended without finishing" in record["error"]


def test_temporaries_of_killed_writers_are_removed_when_the_store_is_opened(lab_home) -> None:
    from tl_core.data.store import list_datasets
    from tl_core.paths import datasets_dir

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=60)
    old = time.time() - 2 * 3600
    run_dir = lab_home / "runs" / "20260101-000000-abcdef"
    run_dir.mkdir(parents=True)
    sets = datasets_dir()
    made = {
        "stale checkpoint": run_dir / f".checkpoint.pt.tmp{gone.pid}",
        "stale set": sets / f".tmp-pets-p{gone.pid}-0123abcd",
        "stale url import": sets / f".tmp-u-pets-p{gone.pid}-4567abcd",
        "young": sets / f".tmp-pets-p{gone.pid}-89abcdef",
        "owner alive": sets / f".tmp-pets-p{os.getpid()}-fedcba98",
        "not a temporary": run_dir / "checkpoint.pt",
    }
    for what, path in made.items():
        if path.parent == sets:
            (path / "cat").mkdir(parents=True)
            (path / "cat" / "x.png").write_bytes(b"x")
        else:
            path.write_bytes(b"\0" * 1000)
        if what != "young":
            os.utime(path, (old, old))
    RunStore()
    list_datasets()
    left = {what for what, path in made.items() if path.exists()}
    assert left == {"young", "owner alive", "not a temporary"}
