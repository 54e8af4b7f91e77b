"""TL_LAB_PERSIST: runs and data sets survive a restart with an empty local lab home."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tl_core import persist
from tl_core.data.shapes import build_shapes
from tl_core.data.store import dataset_path
from tl_core.data.writer import delete_dataset
from tl_core.jobs import RunSpec, execute_run, queue_runs
from tl_core.runs import RunStore
from tl_core.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def _files(folder: Path) -> dict[str, str]:
    """Every file under `folder` with its SHA-256, by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _state(home: Path) -> dict:
    store = RunStore(home)
    runs = store.list()
    return {
        "runs": {r["id"]: (r["status"], r["best_val_acc"], r["epoch"]) for r in runs},
        "epochs": {r["id"]: store.epochs(r["id"]) for r in runs},
        "run_files": {r["id"]: _files(home / "runs" / r["id"]) for r in runs},
        "pictures": _files(home / "datasets"),
    }


@pytest.mark.slow
def test_a_restart_with_an_empty_home_brings_back_every_run_epoch_and_picture(
    tmp_path, lab_home, monkeypatch
) -> None:
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    monkeypatch.setenv("TL_LAB_PERSIST", str(bucket))

    build_shapes("shapes", per_class=6, val_per_class=3, size=32)
    build_shapes("gone", per_class=2, val_per_class=1, size=32)
    delete_dataset("gone")  # a deletion is a data set change too
    spec = RunSpec(
        data=str(dataset_path("shapes")),
        backbone="small_cnn",
        strategy="scratch",
        train=TrainConfig(epochs=2, batch_size=8, precision="fp32"),
    )
    run_id, deleted = queue_runs(RunStore(), [spec, spec])
    assert execute_run(RunStore(), run_id)["status"] == "done"
    RunStore().delete(deleted)  # kept as queued by the snapshot above; gone after this one
    before = _state(lab_home)
    assert len(before["epochs"][run_id]) == 2 and before["run_files"][run_id]
    assert any(name.endswith(".png") for name in before["pictures"])
    kept = {p.name for p in bucket.rglob("*")}
    assert "runs.sqlite" in kept and not {"runs.sqlite-wal", "runs.sqlite-shm"} & kept
    assert not (bucket / "datasets" / "gone").exists()

    # The restart: the local disk is wiped; a new process starts with an empty lab home.
    shutil.move(lab_home, tmp_path / "wiped")
    env = {**os.environ, "TL_LAB_HOME": str(lab_home), "TL_LAB_PERSIST": str(bucket)}
    out = subprocess.run(
        [sys.executable, "-m", "tl_core", "runs", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "restored the lab home" in out.stderr
    listed = json.loads(out.stdout.strip().splitlines()[-1])
    assert [(r["run_id"], r["status"]) for r in listed] == [(run_id, "done")]

    after = _state(lab_home)
    assert after == before
    assert not (lab_home / "datasets" / "gone").exists()
    assert not (lab_home / "runs" / deleted).exists()
    assert not (lab_home / persist.RESTORING).exists()


def test_a_home_that_is_not_empty_is_never_overwritten(tmp_path, lab_home, monkeypatch) -> None:
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    monkeypatch.setenv("TL_LAB_PERSIST", str(bucket))
    build_shapes("shapes", per_class=2, val_per_class=1, size=16)
    RunStore()  # a run store in the bucket ...
    persist.dataset_changed(dataset_path("shapes"))
    assert (bucket / "runs.sqlite").is_file()
    local = tmp_path / "other-home"
    (local / "datasets" / "mine").mkdir(parents=True)
    (local / "datasets" / "mine" / "note.txt").write_text("local")
    # ... is not restored over a home that holds a data set.
    assert persist.restore_if_empty(local) is False
    assert sorted(p.name for p in (local / "datasets").iterdir()) == ["mine"]
    assert not (local / "runs.sqlite").exists()


def test_a_missing_persist_folder_warns_and_changes_nothing(
    tmp_path, lab_home, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("TL_LAB_PERSIST", str(tmp_path / "not-mounted"))
    report = build_shapes("shapes", per_class=2, val_per_class=1, size=16)
    assert report.counts and dataset_path("shapes").is_dir()
    assert "is not a folder (is the bucket mounted?)" in capsys.readouterr().err
    assert not (tmp_path / "not-mounted").exists()


def test_the_default_lab_home_is_never_a_mounted_data_folder(monkeypatch, tmp_path) -> None:
    """A bucket mounted at /data (Spaces) must not become the live home that SQLite writes."""
    import os
    from pathlib import Path

    from tl_core import paths

    monkeypatch.delenv("TL_LAB_HOME", raising=False)
    monkeypatch.delenv("TL_LAB_PERSIST", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    real_is_dir, real_access = Path.is_dir, os.access
    monkeypatch.setattr(Path, "is_dir", lambda p: str(p) == "/data" or real_is_dir(p))
    monkeypatch.setattr(os, "access", lambda p, m: str(p) == "/data" or real_access(p, m))
    real_mkdir = Path.mkdir

    def mkdir(p, *args, **kwargs):  # never create /data on the test machine
        if str(p).startswith("/data"):
            raise PermissionError(13, "not on the test machine", str(p))
        return real_mkdir(p, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    home = paths.lab_home()
    assert home == tmp_path / paths.APP_DIR_NAME
