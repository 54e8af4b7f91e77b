"""Many users at once: the run store under concurrent writers, and the app under load."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tl_core.runs import NewRun, RunStore

ROOT = Path(__file__).resolve().parent.parent


def test_concurrent_writers_and_readers_never_see_database_is_locked(lab_home) -> None:
    store = RunStore()
    (run_id,) = store.create_group([NewRun("/d", "small_cnn", "scratch", {"train": {"epochs": 1}})])
    script = textwrap.dedent(
        f"""
        import sys
        from tl_core.runs import NewRun, RunStore
        store = RunStore({str(lab_home)!r})
        me = int(sys.argv[1])
        for i in range(60):
            store.heartbeat({run_id!r}, batch=i, batches=60)
            store.add_epoch({run_id!r}, dict(epoch=me * 1000 + i, train_loss=1.0, train_acc=0.5,
                            val_loss=None, val_acc=None, seconds=0.01, lr=0.1))
            store.create_group([NewRun("/d", "small_cnn", "scratch", {{"train": {{"epochs": 1}}}})],
                               request_id=f"click-{{i % 7}}")
            store.list(limit=20)
            store.queue()
        print("ok")
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(8)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    for (out, err), proc in zip(results, procs, strict=True):
        assert proc.returncode == 0 and out.strip() == "ok", err[-2000:]
        assert "locked" not in err and "busy" not in err
    assert len(store.epochs(run_id)) == 8 * 60
    # Seven request ids shared by every process: seven runs, not 8 x 60, plus the first.
    assert len(store.list()) == 1 + 7


@pytest.mark.slow
def test_ten_sessions_keep_getting_pages_while_a_run_trains(lab_home) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "loadtest.py"), "--sessions", "10",
         "--seconds", "20", "--train", "--json"],
        capture_output=True, text=True, timeout=400,
        env={**__import__("os").environ, "TL_LAB_HOME": str(lab_home)},
    )  # fmt: skip
    assert done.stdout.strip(), done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["failures"] == [] and result["exceptions"] == {}, result
    assert set(result["pages"]) == {"Home", "data", "experiments", "results", "predict", "learn"}
    assert all(row["requests"] >= 2 for row in result["pages"].values())
    training = result["training"]
    assert training["status"] in ("running", "done") and training["phase"], training
    assert done.returncode == 0
    shutil.rmtree(lab_home, ignore_errors=True)
