"""Peak memory and time of one hostile picture through import and predict.

    python scripts/bench_images.py [--json] [--keep DIR]

Cases (generated here): the issue's 100 x 890,000 px and 20 x 4,470,000 px PNG strips, a
full-range 16-bit greyscale PNG of 8000 x 8000 px, and a plain 4000 x 3000 JPEG for
comparison. Each step runs in a fresh process, started by a fresh wrapper that reads
`resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`, so the peak is that of the step alone; the
"baseline" row is the same step on a 64 x 64 picture (the interpreter, torch and the model),
and "above" is the peak minus that baseline. Target (issue 12): under 1.5 GB above it.

- import: `tl_core.data.sources.add_images` into a data set (decode, check, store);
- decode: `load_rgb` and the resize to 256 px that training's image cache does;
- predict: `tl_core.evaluate.predict_files` with a small_cnn run trained here (load_rgb,
  resize, the model), which is also the path training decodes through.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

WRAPPER = textwrap.dedent(
    """
    import json, resource, subprocess, sys, time
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", sys.argv[1]], capture_output=True, text=True)
    print(json.dumps({
        "rc": done.returncode,
        "out": done.stdout.strip()[-300:],
        "err": done.stderr.strip()[-600:],
        "peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "seconds": time.monotonic() - start,
    }))
    """
)

STEPS = {
    "import": textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from tl_core.data.sources import add_images
        path = Path(sys.argv[1])
        report = add_images("bench", "case", [(path.name, path.read_bytes())])
        print(report.added, [s.reason for s in report.skipped])
        """
    ),
    "decode": textwrap.dedent(
        """
        import sys
        from tl_core.data.images import ImageDecodeError, load_rgb
        from tl_core.transforms import to_uint8_tensor
        try:
            print(tuple(to_uint8_tensor(load_rgb(sys.argv[1]), 256).shape))
        except ImageDecodeError as exc:
            print(exc)
        """
    ),
    "predict": textwrap.dedent(
        """
        import sys
        from tl_core.evaluate import load_trained, predict_files
        from tl_core.runs import RunStore
        trained = load_trained(RunStore(), sys.argv[2])
        (result,) = predict_files(trained, [sys.argv[1]])
        print(result.get("error") or result["top"][0]["class"])
        """
    ),
}


def measure(step: str, image: Path, run_id: str, env: dict) -> dict:
    """Run one step on one picture in a fresh process; its peak RSS and wall time."""
    code = f"import sys; sys.argv = ['x', {str(image)!r}, {run_id!r}]\n" + STEPS[step]
    out = subprocess.run(
        [sys.executable, "-c", WRAPPER, code],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=ROOT,
    )
    return json.loads(out.stdout)


def make_cases(folder: Path, *, photo: bool = True) -> dict[str, Path]:
    import numpy as np
    from data_fixtures import strip_png
    from PIL import Image

    cases = {"baseline 64x64": folder / "small.png"}
    Image.new("RGB", (64, 64), (90, 140, 60)).save(cases["baseline 64x64"])
    cases["strip 100x890000 png"] = folder / "strip-100.png"
    strip_png(cases["strip 100x890000 png"], 100, 890_000)
    cases["strip 20x4470000 png"] = folder / "strip-20.png"
    strip_png(cases["strip 20x4470000 png"], 20, 4_470_000)
    cases["16-bit 8000x8000 png"] = folder / "deep.png"
    row = np.linspace(0, 65535, 8000).astype("<u2")
    deep = np.ascontiguousarray(np.broadcast_to(row, (8000, 8000)))
    Image.frombytes("I;16", (8000, 8000), deep.tobytes()).save(
        cases["16-bit 8000x8000 png"], compress_level=1
    )
    del deep
    if not photo:
        return cases
    cases["photo 4000x3000 jpeg"] = folder / "photo.jpg"
    noise = np.random.default_rng(0).integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
    Image.fromarray(noise).save(cases["photo 4000x3000 jpeg"], quality=85)
    return cases


def train_small_run(env: dict, folder: Path) -> str:
    """A one-epoch small_cnn run on generated stripes, for the predict step."""
    from conftest import make_stripes_dataset

    data = make_stripes_dataset(folder / "stripes", per_class=6)
    out = subprocess.run(
        [sys.executable, "-m", "tl_core", "train", "--data", str(data), "--backbone",
         "small_cnn", "--strategy", "scratch", "--epochs", "1", "--json"],
        capture_output=True, text=True, check=True, env=env, cwd=ROOT,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])["run_id"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--keep", help="generate the pictures and lab home in this folder")
    args = parser.parse_args()
    folder = Path(args.keep or tempfile.mkdtemp(prefix="bench-images-"))
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TL_LAB_HOME": str(folder / "home"), "PYTHONPATH": str(ROOT)}
    cases = make_cases(folder)
    run_id = train_small_run(env, folder)
    rows = []
    for step in STEPS:
        base = None
        for case, image in cases.items():
            got = measure(step, image, run_id, env)
            base = got["peak_mb"] if base is None else base
            rows.append(
                {
                    "step": step,
                    "case": case,
                    "peak_mb": round(got["peak_mb"]),
                    "above_baseline_mb": round(got["peak_mb"] - base),
                    "seconds": round(got["seconds"], 2),
                    "outcome": got["out"] if got["rc"] == 0 else f"exit {got['rc']}: {got['err']}",
                }
            )
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(f"{'step':8} {'case':24} {'peak MB':>8} {'above':>7} {'s':>6}  outcome")
        for r in rows:
            print(
                f"{r['step']:8} {r['case']:24} {r['peak_mb']:8} {r['above_baseline_mb']:7} "
                f"{r['seconds']:6}  {r['outcome'][:70]}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
