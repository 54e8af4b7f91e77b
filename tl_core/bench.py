"""`python -m tl_core bench`: the lab's path against the classic tutorial loop.

Both run in one process, on the same data and split, one after the other, so that their
ratio means something on a machine shared with other work. The reference is the loop of the
PyTorch transfer-learning tutorial, kept outside the library in `benchmarks/reference.py`
(it ships with the source checkout). The lab's path is `tl_core.jobs.execute_run` with the
lab's defaults for the strategy, in a fresh lab home, so building its caches (decoded
images, features, frozen-prefix outputs) is counted in its time and shown apart.

`run_bench_scale` times the lab's path against data set size, on data sets made by
augmenting a source data set's images (`make_scaled_dataset`).
"""

from __future__ import annotations

import json
import os
import random
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

from tl_core.allocator import release_free_memory
from tl_core.errors import LabError
from tl_core.models import BACKBONES
from tl_core.strategies import CLASSIC, STRATEGIES
from tl_core.train import DEVICES

Log = Callable[[str], None]


@dataclass(frozen=True)
class BenchConfig:
    """One `bench`: which run to time, how often, and how to run the reference."""

    # Each field's metadata gives its command-line help (see tl_core/cli/options.py).
    data: str = field(metadata={"help": "a data set folder (or imported data set name)"})
    backbone: str = field(metadata={"choices": BACKBONES})
    strategy: str = field(metadata={"choices": STRATEGIES})
    epochs: int = 25
    seeds: int = field(default=1, metadata={"help": "repeat both with seeds seed..seed+N-1"})
    seed: int = 0
    device: str = field(default="auto", metadata={"choices": DEVICES})
    trainable_blocks: int = 1
    feature_views: int | None = field(default=None, metadata={"help": "default: the lab's"})
    weights: str | None = field(
        default=None, metadata={"metavar": "FILE", "help": "a local weights file"}
    )
    untrained: bool = field(
        default=False,
        metadata={
            "help": "random weights for both (speed only; for backbones without offline weights)"
        },
    )
    reference_epochs: int | None = field(
        default=None,
        metadata={
            "help": "run the reference for only this many epochs and project its time to "
            "--epochs (its per-epoch work is the same every epoch); its accuracy is then that "
            "shorter run's"
        },
    )
    skip_reference: bool = field(default=False, metadata={"help": "time the lab's path only"})
    target_acc: float = field(
        default=0.95,
        metadata={
            "help": "report the seconds until validation accuracy first reaches this, each side"
        },
    )

    def __post_init__(self) -> None:
        from tl_core.models import get_backbone
        from tl_core.strategies import get_strategy

        get_backbone(self.backbone)
        get_strategy(self.strategy)
        if not 0 < self.target_acc <= 1:
            raise LabError(
                f"--target-acc is a fraction in (0, 1], e.g. 0.95; got {self.target_acc}"
            )


@dataclass(frozen=True)
class ScaleConfig:
    """One `bench-scale`: the lab's path on scaled copies of `data`."""

    data: str
    backbone: str = "efficientnet_lite0"
    strategies: tuple[str, ...] = CLASSIC
    sizes: tuple[int, ...] = (100, 300, 1000, 3000)
    epochs: int = 2
    device: str = "auto"
    workdir: str = "/tmp/tl-bench-scale"


# ---------------------------------------------------------------------------- memory


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset this process's peak resident set size (Linux `clear_refs` 5); False if unable.

    Free memory an earlier run left in the heap is returned first, so that it is not
    counted in the next run's peak.
    """
    release_free_memory()
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident memory of this process since start or the last `reset_peak_rss`, in MB."""
    kb = _status_kb("VmHWM")
    if kb is None:
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024


def children_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


# ---------------------------------------------------------------------------- the lab's path


@contextmanager
def fresh_lab_home():
    """A throw-away lab home, so every cache the lab uses is built (and timed) from scratch."""
    old = os.environ.get("TL_LAB_HOME")
    with tempfile.TemporaryDirectory(prefix="tl-bench-") as home:
        os.environ["TL_LAB_HOME"] = home
        try:
            yield Path(home)
        finally:
            if old is None:
                os.environ.pop("TL_LAB_HOME", None)
            else:
                os.environ["TL_LAB_HOME"] = old


def lab_run(spec, log=None) -> dict:
    """One `execute_run` of `spec` in a fresh lab home; wall time includes every one-off cost."""
    from tl_core.jobs import TIMINGS_FILE, execute_run, queue_runs
    from tl_core.runs import RunStore

    with fresh_lab_home() as home:
        t0 = time.perf_counter()
        epoch_ends: list[tuple[float, float | None]] = []

        def on_progress(p) -> None:
            if p.epoch_stats is not None:  # when each validated epoch (a probe's too) ended
                epoch_ends.append((time.perf_counter() - t0, p.epoch_stats.val_acc))

        store = RunStore(home)
        (run_id,) = queue_runs(store, [spec])
        with redirect_stdout(sys.stderr):
            record = execute_run(store, run_id, on_progress=on_progress)
        seconds = time.perf_counter() - t0
        timings = store.read_json(run_id, TIMINGS_FILE) or {}
    if log is not None:
        log(f"lab run: best_val_acc {record['best_val_acc']:.4f} ({seconds:.1f}s)")
    return {
        "seconds": seconds,
        "best_val_acc": record["best_val_acc"],
        "final_val_acc": record["final_val_acc"],
        "decode_seconds": timings.get("decode_seconds", 0.0),
        "cache_seconds": timings.get("cache_seconds", 0.0),
        "train_seconds": timings.get("train_seconds"),
        "epoch_seconds": timings.get("epoch_seconds", []),
        "epoch_ends": epoch_ends,
        "path": timings.get("path"),
    }


def random_weights_file(backbone_name: str, folder: Path, seed: int = 0) -> Path:
    """A state_dict of the architecture with random weights (speed only: no ImageNet needed)."""
    import torch

    from tl_core.models import get_backbone

    torch.manual_seed(seed)
    path = folder / f"{backbone_name}-random.pt"
    torch.save(get_backbone(backbone_name).build().state_dict(), path)
    return path


# ---------------------------------------------------------------------------- bench


def reference_loop() -> Callable[..., dict]:
    """`benchmarks.reference.reference_run`, or a LabError where the folder is absent."""
    try:
        from benchmarks.reference import reference_run
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("benchmarks"):
            raise
        raise LabError(
            "the tutorial reference loop is in the source checkout's benchmarks/ folder, which "
            "this installation lacks; run bench from a checkout, or add --skip-reference"
        ) from None
    return reference_run


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def time_to_acc(epoch_ends: list[tuple[float, float | None]], target: float) -> float | None:
    """Seconds from the start until the first validation accuracy >= `target` (DAWNBench's
    time to accuracy); None if no epoch reached it. `epoch_ends`: (seconds, val_acc) pairs."""
    return next((t for t, acc in epoch_ends if acc is not None and acc >= target), None)


def _mean_time_to_acc(runs: list[dict], target: float) -> float | None:
    """The mean over seeds, or None when any seed never reached the target."""
    times = [time_to_acc(r["epoch_ends"], target) for r in runs]
    return None if not times or None in times else _mean(times)


def _bench_reference(config: BenchConfig, split, seed: int, weights, device, log) -> dict:
    """The tutorial loop for one seed, its time projected to `config.epochs`."""
    reference_run = reference_loop()
    ref_epochs = min(config.reference_epochs or config.epochs, config.epochs)
    reset_peak_rss()
    ref = reference_run(
        split,
        config.backbone,
        config.strategy,
        epochs=ref_epochs,
        seed=seed,
        device=device,
        trainable_blocks=config.trainable_blocks,
        weights=weights,
        log=log,
    )
    ref["peak_rss_mb"] = peak_rss_mb()
    # Every epoch of the reference does the same work; when fewer epochs were run, its time
    # for `epochs` is the measured time plus the missing epochs at the measured mean rate
    # (its accuracy is then the shorter run's).
    ref["measured_seconds"] = ref["seconds"]
    ref["seconds"] += (config.epochs - ref_epochs) * _mean(ref["epoch_seconds"])
    return ref


def _bench_lab(config: BenchConfig, seed: int, weights, log) -> dict:
    from tl_core.spec import RunSpec
    from tl_core.train import TrainConfig

    spec = RunSpec(
        data=config.data,
        backbone=config.backbone,
        strategy=config.strategy,
        train=TrainConfig(epochs=config.epochs, seed=seed, device=config.device),
        trainable_blocks=config.trainable_blocks,
        weights=weights,
        **({"feature_views": config.feature_views} if config.feature_views else {}),
    )
    reset_peak_rss()
    lab = lab_run(spec, log=log)
    lab["peak_rss_mb"] = peak_rss_mb()
    return lab


def run_bench(config: BenchConfig, log: Log | None = None) -> dict:
    """Time the lab's path (and, unless skipped, the tutorial loop) for each seed."""
    from tl_core.data.folder import scan_dataset
    from tl_core.train import configure_threads, resolve_device

    device = resolve_device(config.device)
    threads = configure_threads()
    split = scan_dataset(config.data, seed=0)
    if not config.skip_reference:
        reference_loop()  # fail before any work where the reference is absent
    with tempfile.TemporaryDirectory(prefix="tl-bench-weights-") as tmp:
        weights = config.weights
        if config.untrained:
            weights = str(random_weights_file(config.backbone, Path(tmp)))
        runs = []
        for seed in range(config.seed, config.seed + config.seeds):
            ref = None
            if not config.skip_reference:
                ref = _bench_reference(config, split, seed, weights, device, log)
            runs.append(
                {"seed": seed, "reference": ref, "lab": _bench_lab(config, seed, weights, log)}
            )
    result = {
        "backbone": config.backbone,
        "strategy": config.strategy,
        "epochs": config.epochs,
        "seeds": [r["seed"] for r in runs],
        "weights": "random (untrained)" if config.untrained else (config.weights or "imagenet"),
        "num_train": len(split.train),
        "num_val": len(split.val),
        "device": str(device),
        "threads": threads,
    }
    for run in runs:
        for side in (run["lab"], run["reference"]):
            if side is not None:
                side["time_to_acc"] = time_to_acc(side["epoch_ends"], config.target_acc)
    result.update(_lab_summary([r["lab"] for r in runs]), runs=runs)
    result.update(
        target_acc=config.target_acc,
        lab_time_to_acc=_mean_time_to_acc([r["lab"] for r in runs], config.target_acc),
        reference_time_to_acc=None,
    )
    refs = [r["reference"] for r in runs if r["reference"] is not None]
    if refs:
        result.update(_reference_summary(config, refs, result))
        result["reference_time_to_acc"] = _mean_time_to_acc(refs, config.target_acc)
    return result


def _lab_summary(labs: list[dict]) -> dict:
    return {
        "lab_seconds": _mean([r["seconds"] for r in labs]),
        "lab_val_acc": _mean([r["best_val_acc"] for r in labs]),
        "lab_final_val_acc": _mean([r["final_val_acc"] for r in labs]),
        "lab_decode_seconds": _mean([r["decode_seconds"] for r in labs]),
        "lab_cache_seconds": _mean([r["cache_seconds"] for r in labs]),
        "lab_one_off_seconds": _mean([r["decode_seconds"] + r["cache_seconds"] for r in labs]),
        "lab_epoch_seconds": _mean([s for r in labs for s in r["epoch_seconds"]]),
        "lab_path": labs[0]["path"],
        "lab_peak_rss_mb": max(r["peak_rss_mb"] for r in labs),
        "reference_seconds": None,
        "reference_val_acc": None,
        "speedup": None,
        "speedup_per_epoch": None,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in labs),
    }


def _reference_summary(config: BenchConfig, refs: list[dict], lab: dict) -> dict:
    ref_seconds = _mean([r["seconds"] for r in refs])
    ref_epoch = _mean([s for r in refs for s in r["epoch_seconds"]])
    ref_epochs = min(config.reference_epochs or config.epochs, config.epochs)
    return {
        "reference_seconds": ref_seconds,
        "reference_epochs": ref_epochs,
        "reference_projected": ref_epochs < config.epochs,
        "reference_measured_seconds": _mean([r["measured_seconds"] for r in refs]),
        "reference_val_acc": _mean([r["best_val_acc"] for r in refs]),
        "reference_final_val_acc": _mean([r["final_val_acc"] for r in refs]),
        "reference_epoch_seconds": ref_epoch,
        "reference_peak_rss_mb": max(r["peak_rss_mb"] for r in refs),
        "reference_workers_peak_rss_mb": children_peak_rss_mb(),
        "speedup": ref_seconds / lab["lab_seconds"],
        "speedup_per_epoch": ref_epoch / lab["lab_epoch_seconds"]
        if lab["lab_epoch_seconds"]
        else None,
        "peak_rss_mb": max(lab["peak_rss_mb"], *(r["peak_rss_mb"] for r in refs)),
    }


# ---------------------------------------------------------------------------- scaling


def make_scaled_dataset(source: str | Path, size: int, dest: Path, *, seed: int = 0) -> Path:
    """A flat class-folder data set of `size` JPEGs made from `source`'s training images.

    Image k of a class is source image k mod n, as is for the first n; later copies are a
    random crop (50-100 % of each side), a random flip and a brightness change of it, saved
    as JPEG quality 90, so they cost as much to decode as the originals. Classes keep the
    source's proportions. Source images are read by the lab's one bounded loader
    (`images.load_rgb`: its format allowlist and size limits); one it refuses is left out,
    as training leaves it out. Made once per (size, seed): an existing complete folder is
    reused.
    """
    from tl_core.data.folder import scan_dataset

    split = scan_dataset(source)
    done = dest / ".complete"
    if done.is_file():
        return dest
    rng = random.Random(seed)
    by_class: dict[int, list[str]] = {}
    for it in split.train:
        by_class.setdefault(it.label, []).append(it.path)
    total = sum(len(v) for v in by_class.values())
    for label, files in sorted(by_class.items()):
        folder = dest / split.classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        n_out = max(2, round(size * len(files) / total))
        for k, img in enumerate(_source_images(files, n_out, split.classes[label])):
            if k >= len(files):
                img = _varied_copy(img, rng)
            img.save(folder / f"{k:05d}.jpg", quality=90)
    done.write_text("ok\n")
    return dest


def _source_images(files: list[str], count: int, label: str):
    """`count` pictures cycling through the readable ones of `files`, decoded by `load_rgb`
    (a file it refuses leaves the cycle)."""
    from tl_core.data.images import ImageDecodeError, load_rgb

    readable, made = list(files), 0
    while made < count:
        if not readable:
            raise LabError(f"class {label!r} has no readable training image to scale")
        path = readable[made % len(readable)]
        try:
            img = load_rgb(path)
        except ImageDecodeError:
            readable.remove(path)
            continue
        made += 1
        yield img


def _varied_copy(img, rng: random.Random):
    """A random crop (50-100 % of each side), maybe mirrored, with other brightness."""
    from PIL import ImageEnhance, ImageOps

    w, h = img.size
    cw, ch = int(w * rng.uniform(0.5, 1)), int(h * rng.uniform(0.5, 1))
    x, y = rng.randrange(w - cw + 1), rng.randrange(h - ch + 1)
    img = img.crop((x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
    return ImageEnhance.Brightness(img).enhance(rng.uniform(0.7, 1.3))


def run_bench_scale(config: ScaleConfig, log: Log | None = None) -> list[dict]:
    """One row per (size, strategy): the lab's one-off and per-epoch costs on scaled data."""
    from tl_core.spec import RunSpec
    from tl_core.train import TrainConfig, configure_threads

    configure_threads()
    if not config.sizes or not config.strategies:
        raise LabError("--sizes and --strategies need at least one value each")
    rows = []
    for size in config.sizes:
        data = make_scaled_dataset(config.data, size, Path(config.workdir) / f"scaled-{size}")
        for strategy in config.strategies:
            spec = RunSpec(
                data=str(data),
                backbone=config.backbone,
                strategy=strategy,
                # A constant rate: a schedule would decay to 0 within its 1-2 epochs, and
                # the README's accuracy column was measured at a constant rate.
                train=TrainConfig(epochs=config.epochs, device=config.device, schedule="none"),
            )
            reset_peak_rss()
            r = lab_run(spec)
            epoch = _mean(r["epoch_seconds"])
            rows.append(
                {
                    "images": size,
                    "strategy": strategy,
                    "epochs": config.epochs,
                    "seconds": r["seconds"],
                    "one_off_seconds": r["decode_seconds"] + r["cache_seconds"],
                    "epoch_seconds": epoch,
                    # one-off costs plus 25 epochs at the measured rate
                    "projected_25_epochs_seconds": r["seconds"] + (25 - config.epochs) * epoch,
                    "val_acc": r["best_val_acc"],
                    "peak_rss_mb": peak_rss_mb(),
                }
            )
            if log is not None:
                log(json.dumps(rows[-1]))
    return rows
