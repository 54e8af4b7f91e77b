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


def _png(seed: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.effect_noise((32, 32), 40 + seed).convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def test_two_edits_of_one_data_set_at_once_keep_every_picture_reported_added(
    monkeypatch,
) -> None:
    """Writer A snapshots the set and adds a picture; writer B starts meanwhile. Whichever
    way they interleave, both pictures are in the set afterwards."""
    import fcntl
    import threading
    import types

    from tl_core.data import store as data_store
    from tl_core.data.store import load_manifest
    from tl_core.data.writer import DatasetWriter

    b_waits = threading.Event()

    def flock(fh, op):  # the real lock, telling the test when B has to wait for it
        try:
            return fcntl.flock(fh, op)
        except BlockingIOError:
            b_waits.set()
            raise

    monkeypatch.setattr(
        data_store, "fcntl", types.SimpleNamespace(**{**vars(fcntl), "flock": flock}), raising=False
    )
    with DatasetWriter("pets") as w:
        w.add(_png(0), label="cat", filename="first.png", origin={"kind": "test"})
    reports = {}

    def writer_b() -> None:
        with DatasetWriter("pets") as w:
            w.add(_png(2), label="dog", filename="b.png", origin={"kind": "test"})
        reports["b"] = w.report

    b = threading.Thread(target=writer_b)
    with DatasetWriter("pets") as a:
        a.add(_png(1), label="cat", filename="a.png", origin={"kind": "test"})
        b.start()
        # Wait until B either finished (no lock: it committed its own snapshot) or waits.
        for _ in range(600):
            if b_waits.is_set() or not b.is_alive():
                break
            b.join(timeout=0.05)
    reports["a"] = a.report
    b.join(timeout=60)
    assert not b.is_alive()
    assert reports["a"].added == 1 and reports["b"].added == 1
    names = sorted(r.path for r in load_manifest("pets").images)
    assert names == ["cat/a.png", "cat/first.png", "dog/b.png"]
    left = sorted(p.name for p in data_store.datasets_dir().iterdir())
    assert left == ["pets"]  # no temporary folder left behind
