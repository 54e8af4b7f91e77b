"""The worker's Ray executor on a local Ray cluster (`ray.init(num_cpus=2)`, loopback only).

One cluster serves the module's tests. Each test queues runs with the CLI's `--queue`, starts
`python -m tl_core worker --once` with `TL_LAB_EXECUTOR=ray` pointed at the cluster, and
stops that worker by its process id if it overruns; the cluster stops with `ray.shutdown()`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_stripes_dataset

from tl_core.cli import main
from tl_core.jobs import execute_run, queue_resume, queue_runs
from tl_core.runs import RunStore
from tl_core.spec import RunSpec
from tl_core.train import TrainConfig

# Loopback only: Ray binds this machine's cluster to 127.0.0.1 (read when Ray is imported).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ray = pytest.importorskip("ray", reason="Ray is the optional [cluster] extra")
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
WORKER_TIMEOUT = 150
EPOCHS = 60  # of the queued comparison: enough that a cancel lands before the end


def test_a_run_whose_node_dies_fails_with_the_reason_and_resumes_on_another_node(
    tmp_path, lab_home
):
    """A head without CPUs and one training node, each its own processes (Ray's `Cluster`
    starts and stops them by pid); the run's node is killed part-way. Runs before the
    module's cluster starts (one Ray cluster per test process at a time)."""
    from ray.cluster_utils import Cluster

    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    data = make_stripes_dataset(tmp_path / "stripes", per_class=24)
    store = RunStore()
    # Enough epochs that the node is killed before the run ends, even on a fast machine.
    epochs = 40
    spec = RunSpec(str(data), "small_cnn", "scratch", TrainConfig(epochs=epochs, batch_size=8))
    (run_id,) = queue_runs(store, [spec])
    nodes = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False}
    )
    try:
        first = nodes.add_node(num_cpus=1)
        worker = _start_worker(lab_home, nodes.address)
        try:
            _wait_for(lambda: store.get(run_id)["epoch"] >= 1)
            killed_on = store.get(run_id)["node"]
            nodes.remove_node(first)  # kills that node's raylet and its workers
        finally:
            _finish(worker)
        failed = store.get(run_id)
        assert failed["status"] == "failed"
        assert "Ray task was lost" in failed["error"] and "resume" in failed["error"]
        assert (store.run_dir(run_id) / "checkpoint.pt").is_file()
        stopped_at = failed["epoch"]
        assert 1 <= stopped_at < epochs

        nodes.add_node(num_cpus=1)
        queue_resume(store, run_id)
        _finish(_start_worker(lab_home, nodes.address))
    finally:
        nodes.shutdown()
    resumed = store.get(run_id)
    assert resumed["status"] == "done", resumed["error"]
    assert resumed["node"] != killed_on
    assert [e["epoch"] for e in store.epochs(run_id)] == list(range(1, epochs + 1))


@pytest.fixture(scope="module")
def cluster() -> str:
    """A local two-CPU Ray cluster for the module; its address for the worker."""
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    info = ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield info.address_info["gcs_address"]
    finally:
        ray.shutdown()


def _start_worker(lab_home: Path, address: str) -> subprocess.Popen:
    env = dict(
        os.environ,
        TL_LAB_HOME=str(lab_home),
        TL_LAB_EXECUTOR="ray",
        TL_LAB_RAY_ADDRESS=address,
        TL_LAB_MAX_WORKERS="2",
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        PYTHONPATH=str(ROOT),
    )
    command = [sys.executable, "-m", "tl_core", "worker", "--once", "--nice", "0", "--json"]
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(proc: subprocess.Popen) -> str:
    try:
        out, err = proc.communicate(timeout=WORKER_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"the worker did not finish in {WORKER_TIMEOUT} s")
    assert proc.returncode == 0, err[-3000:]
    return out


def _wait_for(predicate, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail("timed out waiting")


def _json(argv: list[str], capsys) -> object:
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_a_queued_comparison_trains_on_ray_with_live_progress_cancel_and_resume(
    cluster, tmp_path, lab_home, capsys
):
    data = make_stripes_dataset(tmp_path / "stripes", per_class=24)
    store = RunStore()
    # small_cnn has no ImageNet weights: both strategies start from a scratch run, trained
    # here by the local executor (and its weights travel to the Ray task).
    (source,) = queue_runs(
        store,
        [RunSpec(str(data), "small_cnn", "scratch", TrainConfig(epochs=1, batch_size=8))],
    )
    assert execute_run(store, source)["status"] == "done"
    rows = _json(
        ["compare", "--data", str(data), "--backbone", "small_cnn", "--init-from", source,
         "--strategies", "feature_extractor,full_finetune", "--epochs", str(EPOCHS),
         "--batch-size", "8", "--device", "cpu", "--queue"],
        capsys,
    )  # fmt: skip
    fe, ft = rows[0]["run_id"], rows[1]["run_id"]

    worker = _start_worker(lab_home, cluster)
    try:
        # Live progress: the worker writes the task's epochs while it runs, then cancel.
        _wait_for(lambda: store.get(ft)["status"] == "running" and store.get(ft)["epoch"] >= 1)
        seen = store.get(ft)
        assert seen["executor"] == "ray" and seen["node"]
        assert store.epochs(ft)
        store.request_cancel(ft)
    finally:
        out = _finish(worker)
    assert json.loads(out.strip().splitlines()[-1]) == {"runs": 2}

    done, cancelled = store.get(fe), store.get(ft)
    assert done["status"] == "done" and len(store.epochs(fe)) == EPOCHS
    assert cancelled["status"] == "cancelled", cancelled["error"]
    assert 1 <= cancelled["epoch"] < EPOCHS
    for run_id in (fe, ft):
        assert (store.run_dir(run_id) / "weights.pt").is_file()
        predictions = store.read_json(run_id, "predictions.json")
        assert predictions["items"][0]["path"].startswith(str(data))  # this machine's paths
    # Every run row says where it trained: the same fields as a local run.
    runs = {r["run_id"]: r for r in _json(["runs"], capsys)}
    assert runs[source]["executor"] == "local"
    assert runs[fe]["executor"] == runs[ft]["executor"] == "ray"
    assert runs[fe]["node"] and runs[fe]["node"] != runs[source]["node"]
    assert set(runs[fe]) == set(runs[source])
    shown = _json(["show", fe], capsys)
    assert shown["executor"] == "ray" and shown["node"] == runs[fe]["node"]
    assert shown["best_val_acc"] is not None

    # Resume: the cancelled run continues from its last returned checkpoint on Ray.
    assert (store.run_dir(ft) / "checkpoint.pt").is_file()
    stopped_at = cancelled["epoch"]
    queue_resume(store, ft)
    _finish(_start_worker(lab_home, cluster))
    resumed = store.get(ft)
    assert resumed["status"] == "done", resumed["error"]
    epochs = store.epochs(ft)
    assert [e["epoch"] for e in epochs] == list(range(1, EPOCHS + 1))
    assert resumed["epoch"] == EPOCHS and stopped_at < EPOCHS


def test_a_ray_task_trains_on_the_cpus_ray_gave_it(cluster, monkeypatch):
    from tl_core.machine import usable_cpus
    from tl_core.ray_exec import use_assigned_cpus

    def threads() -> tuple[int, int]:
        return use_assigned_cpus(), usable_cpus()

    one = ray.get(ray.remote(num_cpus=1)(threads).remote())
    assert one == (1, 1)  # not the node's two cores
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert usable_cpus() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "not a number")
    assert usable_cpus() >= 1


def test_an_unknown_executor_is_one_clear_line(monkeypatch, capsys):
    monkeypatch.setenv("TL_LAB_EXECUTOR", "spark")
    assert main(["worker", "--once"]) == 2
    assert "TL_LAB_EXECUTOR must be one of: local, ray" in capsys.readouterr().err
