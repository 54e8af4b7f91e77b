"""Estimated against actual run times: the classroom preset and a 4-strategy comparison.

    python scripts/check_estimates.py                    # hymenoptera, 10 epochs, fresh home
    python scripts/check_estimates.py --data PATH --epochs 10 --json

Queues the classroom quick recipe (on the generated `shapes` set) and a comparison of every
strategy but probe_finetune on `--data` (efficientnet_lite0), in a fresh lab home unless
`--home` names one. Just before each run starts it takes the estimate the queue view would
show (`schedule.estimate_seconds` with the store, so earlier runs of the same backbone and
strategy calibrate later ones: "measured here"), then trains the run in this process and
compares with its wall time (`finished - started`). Exits 1 when any run is outside 1.5x.

Run it on an otherwise idle machine (`uptime` load well under the number of cores): timings
taken while other work runs say little.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: tl_core lives beside scripts/
COMPARED = ("scratch", "feature_extractor", "partial_finetune", "full_finetune")
TARGET = 1.5


def _cases(store, data: str, epochs: int) -> list[tuple[str, str]]:
    """(label, run id) of the classroom preset's runs, then the comparison's, queued in
    that order."""
    from tl_core.jobs import queue_runs
    from tl_core.recipes import queue_recipe
    from tl_core.spec import RunSpec
    from tl_core.train import TrainConfig

    ids = queue_recipe(store, "classroom_quick")
    cases = [(f"classroom quick: {store.get(i)['strategy']}", i) for i in ids]
    base = RunSpec(
        data=str(Path(data).expanduser().resolve()),
        backbone="efficientnet_lite0",
        strategy=COMPARED[0],
        train=TrainConfig(epochs=epochs),
    )
    specs = [RunSpec.from_dict({**base.to_dict(), "strategy": s}) for s in COMPARED]
    ids = queue_runs(store, specs)
    return cases + [(f"comparison: {s}", i) for s, i in zip(COMPARED, ids, strict=True)]


def _measure(store, label: str, run_id: str) -> dict:
    from tl_core.jobs import execute_run
    from tl_core.schedule import estimate_seconds, image_counts, table_cost
    from tl_core.spec import RunSpec

    spec = RunSpec.from_dict(store.get(run_id)["config"], trusted=True)
    counts = image_counts(spec)
    estimate = estimate_seconds(spec, *counts, store)
    table = table_cost(spec, *counts).total(spec.train.epochs)
    record = execute_run(store, run_id)
    actual = (record.get("finished") or 0.0) - (record.get("started") or 0.0)
    ratio = estimate.seconds / actual if actual > 0 else float("inf")
    return {
        "run": label,
        "run_id": run_id,
        "status": record["status"],
        "images": list(counts),
        "epochs": spec.train.epochs,
        "estimate_s": round(estimate.seconds, 1),
        "source": estimate.basis,
        "table_s": round(table, 1),
        "actual_s": round(actual, 1),
        "ratio": round(ratio, 2),
        "within": 1 / TARGET <= ratio <= TARGET,
    }


def _text(rows: list[dict]) -> str:
    header = f"{'run':42} {'estimate':>9} {'source':14} {'table':>8} {'actual':>8} {'ratio':>6}"
    lines = [header, "-" * len(header)]
    for r in rows:
        mark = "" if r["within"] else f"  outside {TARGET}x"
        lines.append(
            f"{r['run'][:42]:42} {r['estimate_s']:>8.1f}s {r['source']:14} {r['table_s']:>7.1f}s "
            f"{r['actual_s']:>7.1f}s {r['ratio']:>6.2f}{mark}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "hymenoptera"))
    parser.add_argument("--epochs", type=int, default=10, help="the comparison's epochs")
    parser.add_argument("--home", default=None, help="lab home (default: a fresh temporary one)")
    parser.add_argument("--json", action="store_true", help="one JSON object as the last line")
    args = parser.parse_args(argv)
    if not Path(args.data).expanduser().is_dir():
        print(f"error: no data set folder at {args.data}; give one with --data", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="check-estimates-") as tmp:
        os.environ["TL_LAB_HOME"] = args.home or tmp
        from tl_core.runs import RunStore

        store = RunStore()
        rows = [_measure(store, label, i) for label, i in _cases(store, args.data, args.epochs)]
    ok = all(r["within"] and r["status"] == "done" for r in rows)
    if args.json:
        print(json.dumps({"target": TARGET, "all_within": ok, "runs": rows}))
    else:
        print(_text(rows))
        print(f"all within {TARGET}x: {'yes' if ok else 'no'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
