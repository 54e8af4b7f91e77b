"""How much the malloc tuning of `tl_core/allocator.py` buys: the same work with and without it.

Each case runs in a fresh process, once with `TL_LAB_MALLOC_TUNING=0` and once with the
default, alternating, so both see the same machine. Prints images/s, the ratio and peak RSS.

    python scripts/bench_malloc.py [--backbone efficientnet_lite0] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CASE = r"""
import json, resource, sys, time
import torch
import tl_core
from tl_core.allocator import tune_malloc
from tl_core.models import build_model
from tl_core.train import autocast, configure_threads

configure_threads()
backbone, kind, batch, precision = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
torch.manual_seed(0)
model = build_model(backbone, 2, "full_finetune").model.to(memory_format=torch.channels_last)
x = torch.randn(batch, 3, 224, 224).contiguous(memory_format=torch.channels_last)
y = torch.randint(2, (batch,))
cpu = torch.device("cpu")
if kind == "inference":
    model.eval()

    def step():
        with torch.inference_mode(), autocast(cpu, precision):
            model(x)
    images = 256
else:
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)

    def step():
        with autocast(cpu, precision):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    images = 128
step()
t0, done = time.perf_counter(), 0
while done < images:
    step()
    done += batch
print(json.dumps({
    "tuned": tune_malloc(),
    "images_per_s": done / (time.perf_counter() - t0),
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
"""

CASES = [
    ("inference", 16, "bf16"),
    ("inference", 32, "bf16"),
    ("inference", 32, "fp32"),
    ("training", 16, "bf16"),
]


def run_case(backbone: str, case: tuple, tuned: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["TL_LAB_MALLOC_TUNING"] = "1" if tuned else "0"
    kind, batch, precision = case
    out = subprocess.run(
        [sys.executable, "-c", CASE, backbone, kind, str(batch), precision],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"{args.backbone}: images/s without -> with the malloc tuning (best of {args.repeats})")
    for case in CASES:
        best = {False: None, True: None}
        for _ in range(args.repeats):
            for tuned in (False, True):
                r = run_case(args.backbone, case, tuned)
                if best[tuned] is None or r["images_per_s"] > best[tuned]["images_per_s"]:
                    best[tuned] = r
        off, on = best[False], best[True]
        kind, batch, precision = case
        print(
            f"  {kind:9} batch {batch:2} {precision}: {off['images_per_s']:6.1f} -> "
            f"{on['images_per_s']:6.1f} img/s ({on['images_per_s'] / off['images_per_s']:.2f}x); "
            f"peak RSS {off['peak_rss_mb']:.0f} -> {on['peak_rss_mb']:.0f} MB",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
