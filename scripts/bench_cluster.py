"""Wall time of queued runs trained through the worker, local executor against Ray.

    python scripts/bench_cluster.py --classroom 4                # throughput, clusters made here
    python scripts/bench_cluster.py --overhead --data DIR       # one run, local against Ray
    python scripts/bench_cluster.py --address HEAD:6379 --data DIR --runs 8   # your cluster

Every measurement uses a fresh lab home: the runs are queued first (`--queue`), then
`python -m tl_core worker --once` is timed from start to exit.

- `--classroom TEAMS`: TEAMS workspaces each press "classroom quick" (2 runs each: a feature
  extractor and a fine-tuning run on the generated shapes set, 10 per class), trained on a
  cluster of one one-CPU node, then on a cluster of two one-CPU nodes. Both clusters run on
  this machine (a head without CPUs plus the nodes, each its own processes, started and
  stopped by Ray's `Cluster`). Target: two nodes take at most 0.6 of the one-node time.
- `--overhead`: the same single run with the local executor and with Ray (a local cluster of
  this machine's CPUs, the task given all of them, so both train with the same threads).
  Target: Ray adds under 3 s.
- `--address`: `--runs` runs of `--strategy` on an existing cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PYTHONPATH", str(ROOT))


def _env(home: Path, extra: dict) -> dict:
    return {**os.environ, **extra, "TL_LAB_HOME": str(home), "PYTHONPATH": str(ROOT)}


def _cli(env: dict, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "tl_core", *args], env=env, check=True,
                   capture_output=True)  # fmt: skip


def timed_worker(env: dict) -> float:
    start = time.perf_counter()
    _cli(env, "worker", "--once", "--nice", "0")
    return time.perf_counter() - start


def classroom(teams: int, nodes: int, home: Path) -> dict:
    """TEAMS classroom-quick launches trained on `nodes` one-CPU Ray nodes of this machine."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False}
    )
    try:
        for _ in range(nodes):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        env = _env(home, {"TL_LAB_EXECUTOR": "ray", "TL_LAB_RAY_ADDRESS": cluster.address,
                          "TL_LAB_MAX_WORKERS": str(2 * teams)})  # fmt: skip
        for team in range(teams):
            _cli(env, "recipe", "classroom_quick", "--workspace", f"team{team}", "--queue")
        seconds = timed_worker(env)
    finally:
        cluster.shutdown()
    return {"nodes": nodes, "runs": 2 * teams, "seconds": round(seconds, 1)}


def overhead(spec: list[str], tmp: Path) -> dict:
    """One run, then three in a row, with each executor; Ray on a cluster started before the
    clock (its start is a one-off, not a per-run cost), the task given every CPU."""
    from ray.cluster_utils import Cluster

    from tl_core.machine import usable_cpus

    cpus = usable_cpus()
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": cpus, "include_dashboard": False}
    )
    out: dict = {}
    try:
        ray = {"TL_LAB_EXECUTOR": "ray", "TL_LAB_RAY_ADDRESS": cluster.address,
               "TL_LAB_RAY_CPUS": str(cpus)}  # fmt: skip
        for runs in (1, 3):
            times = {}
            for name, extra in (("local", {"TL_LAB_EXECUTOR": "local"}), ("ray", ray)):
                env = _env(tmp / f"{name}-{runs}", extra)
                _cli(env, "compare", *spec, "--seeds", str(runs), "--queue")
                times[name] = timed_worker(env)
            out[f"{runs}_runs"] = {
                "local_s": round(times["local"], 1),
                "ray_s": round(times["ray"], 1),
                "overhead_per_run_s": round((times["ray"] - times["local"]) / runs, 2),
            }
    finally:
        cluster.shutdown()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classroom", type=int, metavar="TEAMS", help="throughput: 1 vs 2 nodes")
    p.add_argument("--overhead", action="store_true", help="one run: local against Ray")
    p.add_argument("--address", help="an existing Ray cluster (HEAD:6379)")
    p.add_argument("--data", help="a data set folder (--overhead, --address)")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--strategy", default="feature_extractor")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--runs", type=int, default=8)
    args = p.parse_args()
    spec = ["--data", str(args.data), "--backbone", args.backbone, "--strategies",
            args.strategy, "--epochs", str(args.epochs), "--device", "cpu"]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        if args.classroom:
            one = classroom(args.classroom, 1, Path(tmp) / "one")
            two = classroom(args.classroom, 2, Path(tmp) / "two")
            out = {"one_node": one, "two_nodes": two,
                   "ratio": round(two["seconds"] / one["seconds"], 3)}  # fmt: skip
        elif args.overhead:
            out = overhead(spec, Path(tmp))
        else:
            env = _env(Path(tmp), {"TL_LAB_EXECUTOR": "ray", "TL_LAB_RAY_ADDRESS": args.address,
                                   "TL_LAB_MAX_WORKERS": str(min(args.runs, 16))})  # fmt: skip
            _cli(env, "compare", *spec, "--seeds", str(args.runs), "--queue")
            out = {"runs": args.runs, "ray_s": round(timed_worker(env), 1)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
