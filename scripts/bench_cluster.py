"""Wall time of queued runs trained through the worker, local executor against Ray.

    python scripts/bench_cluster.py --address HEAD:6379 --data DIR --runs 8   # throughput
    python scripts/bench_cluster.py --address HEAD:6379 --data DIR --overhead # one run, both

Each measurement uses a fresh lab home: it queues the runs (one comparison over seeds), then
times `python -m tl_core worker --once` from start to exit. Throughput: `--runs` runs through
the Ray executor on the cluster at `--address` (start it with one or two one-CPU nodes, see
README "Scaling out"), with `TL_LAB_MAX_WORKERS=--runs`; compare the two clusters' times
(target: two nodes <= 0.6 x one node). Overhead: the same single run with the local executor
and with Ray (target: Ray adds under 3 s). Not run on the shared build machine.
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


def timed_worker(home: Path, env: dict, spec_args: list[str], seeds: int) -> float:
    env = {**os.environ, **env, "TL_LAB_HOME": str(home), "PYTHONPATH": str(ROOT)}
    queue = [sys.executable, "-m", "tl_core", "compare", *spec_args, "--seeds", str(seeds)]
    subprocess.run([*queue, "--queue", "--json"], env=env, check=True, capture_output=True)
    start = time.perf_counter()
    worker = [sys.executable, "-m", "tl_core", "worker", "--once", "--nice", "0"]
    subprocess.run(worker, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--address", required=True, help="the Ray cluster (HEAD:6379)")
    p.add_argument("--data", required=True, help="a data set folder")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--strategy", default="feature_extractor")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--runs", type=int, default=8)
    p.add_argument("--overhead", action="store_true", help="one run: local against Ray")
    args = p.parse_args()
    spec = ["--data", args.data, "--backbone", args.backbone, "--strategies", args.strategy,
            "--epochs", str(args.epochs), "--device", "cpu"]  # fmt: skip
    ray = {"TL_LAB_EXECUTOR": "ray", "TL_LAB_RAY_ADDRESS": args.address}
    with tempfile.TemporaryDirectory() as tmp:
        if args.overhead:
            local = timed_worker(Path(tmp) / "local", {"TL_LAB_EXECUTOR": "local"}, spec, 1)
            remote = timed_worker(Path(tmp) / "ray", ray, spec, 1)
            out = {"local_s": local, "ray_s": remote, "overhead_s": remote - local}
        else:
            ray["TL_LAB_MAX_WORKERS"] = str(min(args.runs, 16))
            out = {"runs": args.runs, "ray_s": timed_worker(Path(tmp), ray, spec, args.runs)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
