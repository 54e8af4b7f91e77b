"""One run across two processes with DistributedDataParallel (gloo on the CPU, loopback only).

`torchrun --standalone` starts the two ranks on 127.0.0.1; the test stops the whole launch by
its process id (its own process group) if it overruns.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_stripes_dataset

from tl_core.runs import RunStore

pytestmark = pytest.mark.slow

# Both reach high accuracy on this set, so that "within 2 points" compares something.
ARGS = [
    "--backbone", "small_cnn", "--strategy", "scratch", "--epochs", "10", "--batch-size", "16",
    "--lr", "0.03", "--precision", "fp32", "--device", "cpu", "--val-fraction", "0.25", "--json",
]  # fmt: skip
TIMEOUT = 240


def _launch(command: list[str], lab_home: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, TL_LAB_HOME=str(lab_home), MASTER_ADDR="127.0.0.1")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).parent.parent), env.get("PYTHONPATH", "")]
    )
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group: the ranks are stopped with it
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{command[:4]} did not finish in {TIMEOUT} s")
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def _torchrun(n: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"]


def test_two_gloo_processes_train_one_run_as_well_as_one_process(tmp_path, lab_home) -> None:
    # 100 validation pictures: one picture is one point, so "within 2 points" can hold.
    data = make_stripes_dataset(tmp_path / "s200", per_class=200)
    train = ["-m", "tl_core", "train", "--data", str(data), *ARGS]
    ddp = _launch([*_torchrun(2), *train], lab_home)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    # Rank 0 alone reports: one JSON object on stdout, one run in the store.
    lines = [line for line in ddp.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, ddp.stdout
    result = json.loads(lines[0])
    assert result["status"] == "done"
    assert result["world_size"] == 2
    assert result["executor"] == "local"
    (record,) = RunStore(lab_home).list()
    assert record["world_size"] == 2 and record["id"] == result["run_id"]
    assert len(RunStore(lab_home).epochs(record["id"])) == 10
    assert (RunStore(lab_home).run_dir(record["id"]) / "weights.pt").is_file()

    single = _launch([sys.executable, *train], lab_home)
    assert single.returncode == 0, single.stderr[-3000:]
    one = json.loads(single.stdout.strip().splitlines()[-1])
    assert one["world_size"] == 1
    assert one["best_val_acc"] >= 0.85  # chance is 0.5
    assert abs(result["best_val_acc"] - one["best_val_acc"]) <= 0.02 + 1e-9


def test_a_global_batch_that_does_not_split_over_the_processes_is_refused(tmp_path, lab_home):
    data = make_stripes_dataset(tmp_path / "s", per_class=6)
    args = [*ARGS[:-1]]
    args[args.index("--batch-size") + 1] = "15"
    args[args.index("--epochs") + 1] = "1"
    run = _launch([*_torchrun(2), "-m", "tl_core", "train", "--data", str(data), *args], lab_home)
    assert run.returncode != 0
    assert "use a multiple of 2" in run.stderr
