"""The run store: round trips, idempotent requests, cancellation, and surviving a killed writer."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tl_core.errors import LabError
from tl_core.run_schema import SCHEMA_VERSION
from tl_core.runs import NewRun, RunStore, atomic_write_bytes


def _new(strategy: str = "scratch", **kw) -> NewRun:
    return NewRun(
        data_path="/data/set", backbone="small_cnn", strategy=strategy,
        config={"train": {"epochs": 3}}, **kw,
    )  # fmt: skip


def test_round_trip_of_runs_and_epochs(lab_home) -> None:
    store = RunStore()
    ids = store.create_group([_new("scratch", seed=1), _new("full_finetune", name="b")])
    assert len(ids) == 2
    first = store.get(ids[0])
    assert first["status"] == "queued" and first["seed"] == 1 and first["epochs_total"] == 3
    assert first["config"] == {"train": {"epochs": 3}}
    assert store.get(ids[1])["group_id"] == first["group_id"]
    assert set(first["versions"]) >= {"torch", "torchvision", "python", "tl_core"}
    store.mark_running(ids[0])
    store.add_epoch(
        ids[0],
        dict(
            epoch=1, train_loss=0.9, train_acc=0.5, val_loss=0.8, val_acc=0.6, seconds=1.5, lr=0.001
        ),
    )
    store.add_epoch(
        ids[0],
        dict(
            epoch=2, train_loss=0.5, train_acc=0.8, val_loss=0.4, val_acc=0.9, seconds=1.4, lr=0.001
        ),
    )
    store.finish(ids[0], "done", best_val_acc=0.9, final_val_acc=0.9, classes=["a", "b"])
    again = RunStore()  # a second handle, as another process would open
    record = again.get(ids[0])
    assert record["status"] == "done" and record["epoch"] == 2 and record["classes"] == ["a", "b"]
    assert [e["val_acc"] for e in again.epochs(ids[0])] == [0.6, 0.9]
    assert [r["id"] for r in again.list()] == [ids[1], ids[0]]  # newest first
    assert again.list(status="queued")[0]["id"] == ids[1]
    with sqlite3.connect(store.db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_one_request_id_never_creates_two_sets_of_runs() -> None:
    store = RunStore()
    first = store.create_group([_new(), _new("full_finetune")], request_id="click-1")
    second = store.create_group([_new(), _new("full_finetune")], request_id="click-1")
    assert first == second
    assert len(store.list()) == 2


def test_claim_takes_runs_in_order_and_cancel_works() -> None:
    store = RunStore()
    a, b, c = store.create_group([_new(), _new(), _new()])
    assert store.request_cancel(b) == "cancelled"  # queued: cancelled at once
    assert store.claim_next()["id"] == a
    assert store.get(a)["status"] == "running"
    assert store.request_cancel(a) == "running"  # running: asked to stop
    assert store.cancel_requested(a)
    assert store.claim_next()["id"] == c
    assert store.claim_next() is None
    assert [r["id"] for r in store.queue()] == [a, c]


def test_stale_running_runs_are_failed_with_a_reason() -> None:
    store = RunStore()
    (run_id,) = store.create_group([_new()])
    store.claim_next()
    store.update(run_id, heartbeat=time.time() - 600)
    assert store.fail_stale(max_age=60) == [run_id]
    record = store.get(run_id)
    assert record["status"] == "failed" and "heartbeat" in record["error"]


def test_unknown_run_is_a_clear_error() -> None:
    with pytest.raises(LabError, match="no run with id 'nope'"):
        RunStore().get("nope")


def test_a_writer_killed_mid_way_leaves_the_store_readable(lab_home) -> None:
    store = RunStore()
    (run_id,) = store.create_group([_new()])
    script = textwrap.dedent(
        f"""
        import sys, time
        from tl_core.runs import RunStore
        store = RunStore({str(lab_home)!r})
        store.mark_running({run_id!r})
        print("ready", flush=True)
        epoch = 0
        while True:
            epoch += 1
            store.add_epoch({run_id!r}, dict(epoch=epoch, train_loss=1.0, train_acc=0.5, val_loss=1.0,
                            val_acc=0.5, seconds=0.1, lr=0.1))
            store.heartbeat({run_id!r}, batch=epoch, batches=10)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    after = RunStore()
    record = after.get(run_id)
    assert record["status"] == "running"  # as the killed writer left it, readable
    epochs = after.epochs(run_id)
    assert len(epochs) >= 1 and record["epoch"] >= len(epochs) - 1
    with sqlite3.connect(after.db_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    after.update(run_id, heartbeat=time.time() - 3600)
    assert after.fail_stale(60) == [run_id]


def test_atomic_write_replaces_whole_files_only(tmp_path, monkeypatch) -> None:
    target = tmp_path / "weights.pt"
    atomic_write_bytes(target, b"old weights")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("tl_core.runs.os.replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new weights")
    assert target.read_bytes() == b"old weights"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.pt"]  # no temporary file left


def test_a_corrupted_store_gives_a_clear_message_and_is_only_replaced_on_request(lab_home, capsys):
    from tl_core.cli import main

    store = RunStore()
    (run_id,) = store.create_group([_new()])
    garbage = b"this is not an SQLite database, it was overwritten by accident " * 100
    store.db_path.write_bytes(garbage)
    for suffix in ("-wal", "-shm"):
        Path(f"{store.db_path}{suffix}").unlink(missing_ok=True)
    with pytest.raises(LabError, match="damaged or unreadable.*store reset"):
        RunStore().list()
    assert main(["runs"]) == 2
    assert "store reset" in capsys.readouterr().err
    assert store.db_path.read_bytes() == garbage  # nothing touched without asking
    assert main(["store", "check"]) == 1
    assert main(["store", "reset", "--json"]) == 0
    kept = Path(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["kept"])
    assert kept.read_bytes() == garbage  # the damaged file is kept aside
    assert RunStore().list() == []
    assert main(["store", "reset"]) == 2  # a healthy store is not reset without --force


def test_a_running_run_is_orphaned_only_when_its_process_is_gone() -> None:
    from tl_core.owners import owner_gone, this_host

    store = RunStore()
    (run_id,) = store.create_group([_new()])
    store.mark_running(run_id)
    assert store.get(run_id)["owner_host"] == this_host()
    assert not owner_gone(store.get(run_id))  # this very process
    assert store.request_cancel(run_id) == "running"  # asked to stop, still running

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # A live pid that started after the run's last heartbeat is another process (a
        # recycled pid), not the run's owner.
        store.update(run_id, worker_pid=sleeper.pid, heartbeat=time.time() - 30)
        assert owner_gone(store.get(run_id))
        store.update(run_id, heartbeat=time.time() + 30)
        assert not owner_gone(store.get(run_id))
    finally:
        sleeper.kill()
        sleeper.wait(timeout=30)

    # Another machine: only a stale heartbeat tells.
    store.update(run_id, owner_host="elsewhere", worker_pid=1, heartbeat=time.time())
    assert not owner_gone(store.get(run_id))
    store.update(run_id, heartbeat=time.time() - 3600)
    assert owner_gone(store.get(run_id))
    assert store.fail_if_orphaned(run_id)
    assert store.get(run_id)["status"] == "failed"
    assert not store.fail_if_orphaned(run_id)  # finished runs are left alone


def test_a_store_damaged_in_the_middle_refuses_writers_as_it_refuses_readers(lab_home) -> None:
    store = RunStore()
    for _ in range(40):
        store.create_group([_new(name="x" * 2000)])
    with sqlite3.connect(store.db_path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(store.db_path.read_bytes())
    middle = len(data) // 2 // 4096 * 4096
    data[middle : middle + 4096] = b"garbage!" * 512
    store.db_path.write_bytes(bytes(data))
    with pytest.raises(LabError, match="damaged"):
        RunStore().list()
    with pytest.raises(LabError, match="damaged or unreadable.*store reset"):
        RunStore().create_group([_new()])  # was: written into the damaged file
    from tl_core.cli import main

    assert main(["cancel", "nope"]) == 2
    assert store.db_path.read_bytes() == bytes(data)
