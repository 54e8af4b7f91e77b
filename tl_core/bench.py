"""`python -m tl_core bench`: the lab's own path against the classic tutorial loop.

Both run in one process, on the same data and split, one after the other, so that their
ratio means something on a machine shared with other work. The reference is the loop of the
PyTorch transfer-learning tutorial, written here: an ImageFolder-style data set that opens
and decodes each JPEG on every access, a DataLoader with batch 4 and 2 workers,
RandomResizedCrop and flip for training, Resize and CenterCrop for validation, the whole
model in `train()` mode and every image through the whole network every epoch, SGD 0.001 /
0.9, fp32, best validation accuracy kept. The lab's path is `tl_core.jobs.execute_run` with
the lab's defaults for the strategy, in a fresh lab home, so building its caches (decoded
images, features, frozen-prefix outputs) is counted in its time and shown apart.

`python -m tl_core bench-scale` times the lab's path against data set size, on data sets
made by augmenting a source data set's images (`make_scaled_dataset`).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import resource
import sys
import tempfile
import time
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from tl_core.allocator import release_free_memory
from tl_core.errors import LabError
from tl_core.strategies import STRATEGIES

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


# ---------------------------------------------------------------------------- reference loop


class JpegFolder(Dataset):
    """ImageFolder's behaviour over a list of items: open and decode the file on every access."""

    def __init__(self, items, transform) -> None:
        self.items, self.transform = list(items), transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        from PIL import Image

        item = self.items[index]
        with open(item.path, "rb") as fh:
            img = Image.open(fh).convert("RGB")  # torchvision's pil_loader
        return self.transform(img), item.label


def tutorial_transforms(backbone) -> dict:
    """The tutorial's `data_transforms`, with the backbone's sizes and normalisation."""
    from torchvision import transforms as T

    norm = T.Normalize(list(backbone.mean), list(backbone.std))
    return {
        "train": T.Compose(
            [
                T.RandomResizedCrop(backbone.input_size),
                T.RandomHorizontalFlip(),
                T.ToTensor(),
                norm,
            ]
        ),
        "val": T.Compose(
            [
                T.Resize(backbone.resize_size),
                T.CenterCrop(backbone.input_size),
                T.ToTensor(),
                norm,
            ]
        ),
    }


def reference_run(
    split,
    backbone_name: str,
    strategy: str,
    *,
    epochs: int,
    seed: int,
    device: torch.device,
    trainable_blocks: int = 1,
    weights: str | None = None,
    lr: float = 0.001,
    momentum: float = 0.9,
    batch_size: int = 4,
    workers: int = 2,
    log=None,
) -> dict:
    """Train with the tutorial's loop; returns accuracies and wall time (model build included)."""
    from tl_core.models import build_model, get_backbone

    t_start = time.perf_counter()
    backbone = get_backbone(backbone_name)
    torch.manual_seed(seed)
    random.seed(seed)
    model = build_model(
        backbone_name,
        len(split.classes),
        strategy,
        trainable_blocks=trainable_blocks,
        weights_file=weights,
    ).model.to(device)
    tfs = tutorial_transforms(backbone)
    loaders = {
        "train": DataLoader(
            JpegFolder(split.train, tfs["train"]),
            batch_size=batch_size,
            shuffle=True,
            num_workers=workers,
        ),
        "val": DataLoader(
            JpegFolder(split.val, tfs["val"]),
            batch_size=batch_size,
            shuffle=False,
            num_workers=workers,
        ),
    }
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=lr, momentum=momentum
    )
    best_acc, best_state, history = 0.0, None, []
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        row = {"epoch": epoch}
        for phase in ("train", "val"):
            model.train() if phase == "train" else model.eval()
            loss_sum, correct, seen = 0.0, 0, 0
            for inputs, labels in loaders[phase]:
                inputs, labels = inputs.to(device), labels.to(device)
                optimizer.zero_grad()
                with torch.set_grad_enabled(phase == "train"):
                    outputs = model(inputs)
                    loss = criterion(outputs, labels)
                    if phase == "train":
                        loss.backward()
                        optimizer.step()
                loss_sum += loss.item() * inputs.size(0)
                correct += (outputs.argmax(1) == labels).sum().item()
                seen += inputs.size(0)
            row[f"{phase}_loss"], row[f"{phase}_acc"] = loss_sum / seen, correct / seen
        if row["val_acc"] > best_acc or best_state is None:
            best_acc = row["val_acc"]
            best_state = copy.deepcopy(model.state_dict())
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        if log is not None:
            log(
                f"reference epoch {epoch}/{epochs}: val_acc {row['val_acc']:.4f} "
                f"({row['seconds']:.1f}s)"
            )
    return {
        "seconds": time.perf_counter() - t_start,
        "best_val_acc": best_acc,
        "final_val_acc": history[-1]["val_acc"],
        "epoch_seconds": [r["seconds"] for r in history],
    }


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
        store = RunStore(home)
        (run_id,) = queue_runs(store, [spec])
        with redirect_stdout(sys.stderr):
            record = execute_run(store, run_id)
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
        "path": timings.get("path"),
    }


def random_weights_file(backbone_name: str, folder: Path, seed: int = 0) -> Path:
    """A state_dict of the architecture with random weights (speed only: no ImageNet needed)."""
    from tl_core.models import get_backbone

    torch.manual_seed(seed)
    path = folder / f"{backbone_name}-random.pt"
    torch.save(get_backbone(backbone_name).build().state_dict(), path)
    return path


# ---------------------------------------------------------------------------- bench


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def run_bench(args: argparse.Namespace, log) -> dict:
    from tl_core.data.folder import scan_dataset
    from tl_core.jobs import RunSpec
    from tl_core.models import check_strategy, get_backbone
    from tl_core.train import TrainConfig, configure_threads, resolve_device

    check_strategy(args.strategy)
    get_backbone(args.backbone)
    device = resolve_device(args.device)
    threads = configure_threads()
    split = scan_dataset(args.data, seed=0)
    ref_epochs = min(args.reference_epochs or args.epochs, args.epochs)
    with tempfile.TemporaryDirectory(prefix="tl-bench-weights-") as tmp:
        weights = args.weights
        if args.untrained:
            weights = str(random_weights_file(args.backbone, Path(tmp)))
        runs = []
        for k in range(args.seeds):
            seed = args.seed + k
            ref = None
            ref_peak = None
            if not args.skip_reference:
                reset_peak_rss()
                ref = reference_run(
                    split,
                    args.backbone,
                    args.strategy,
                    epochs=ref_epochs,
                    seed=seed,
                    device=device,
                    trainable_blocks=args.trainable_blocks,
                    weights=weights,
                    log=log,
                )
                ref_peak = peak_rss_mb()
                # Every epoch of the reference does the same work; when fewer epochs were
                # run, its time for `epochs` is the measured time plus the missing epochs at
                # the measured mean rate (its accuracy is then the shorter run's).
                ref["measured_seconds"] = ref["seconds"]
                ref["seconds"] += (args.epochs - ref_epochs) * _mean(ref["epoch_seconds"])
            spec = RunSpec(
                data=args.data,
                backbone=args.backbone,
                strategy=args.strategy,
                train=TrainConfig(epochs=args.epochs, seed=seed, device=args.device),
                trainable_blocks=args.trainable_blocks,
                weights=weights,
                **({"feature_views": args.feature_views} if args.feature_views else {}),
            ).validate()
            reset_peak_rss()
            lab = lab_run(spec, log=log)
            lab["peak_rss_mb"] = peak_rss_mb()
            if ref is not None:
                ref["peak_rss_mb"] = ref_peak
            runs.append({"seed": seed, "reference": ref, "lab": lab})
    labs = [r["lab"] for r in runs]
    refs = [r["reference"] for r in runs if r["reference"] is not None]
    lab_seconds = _mean([r["seconds"] for r in labs])
    lab_epoch = _mean([s for r in labs for s in r["epoch_seconds"]])
    result = {
        "backbone": args.backbone,
        "strategy": args.strategy,
        "epochs": args.epochs,
        "seeds": [r["seed"] for r in runs],
        "weights": "random (untrained)" if args.untrained else (args.weights or "imagenet"),
        "num_train": len(split.train),
        "num_val": len(split.val),
        "device": str(device),
        "threads": threads,
        "lab_seconds": lab_seconds,
        "lab_val_acc": _mean([r["best_val_acc"] for r in labs]),
        "lab_final_val_acc": _mean([r["final_val_acc"] for r in labs]),
        "lab_decode_seconds": _mean([r["decode_seconds"] for r in labs]),
        "lab_cache_seconds": _mean([r["cache_seconds"] for r in labs]),
        "lab_one_off_seconds": _mean([r["decode_seconds"] + r["cache_seconds"] for r in labs]),
        "lab_epoch_seconds": lab_epoch,
        "lab_path": labs[0]["path"],
        "lab_peak_rss_mb": max(r["peak_rss_mb"] for r in labs),
        "reference_seconds": None,
        "reference_val_acc": None,
        "speedup": None,
        "speedup_per_epoch": None,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in labs),
        "runs": runs,
    }
    if refs:
        ref_seconds = _mean([r["seconds"] for r in refs])
        ref_epoch = _mean([s for r in refs for s in r["epoch_seconds"]])
        result.update(
            reference_seconds=ref_seconds,
            reference_epochs=ref_epochs,
            reference_projected=ref_epochs < args.epochs,
            reference_measured_seconds=_mean([r["measured_seconds"] for r in refs]),
            reference_val_acc=_mean([r["best_val_acc"] for r in refs]),
            reference_final_val_acc=_mean([r["final_val_acc"] for r in refs]),
            reference_epoch_seconds=ref_epoch,
            reference_peak_rss_mb=max(r["peak_rss_mb"] for r in refs),
            reference_workers_peak_rss_mb=children_peak_rss_mb(),
            speedup=ref_seconds / lab_seconds,
            speedup_per_epoch=ref_epoch / lab_epoch if lab_epoch else None,
            peak_rss_mb=max(result["peak_rss_mb"], *(r["peak_rss_mb"] for r in refs)),
        )
    return result


def _fmt(x, spec: str = ".1f", suffix: str = "") -> str:
    return "-" if x is None else f"{x:{spec}}{suffix}"


def bench_text(r: dict) -> str:
    pct = ".1%"
    lines = [
        f"bench {r['backbone']} {r['strategy']}, {r['epochs']} epochs, seeds {r['seeds']}, "
        f"{r['num_train']} train / {r['num_val']} val images, {r['device']} ({r['threads']} threads)",
        f"  reference (tutorial loop): {_fmt(r['reference_seconds'], '.1f', ' s')}"
        + (
            f" (projected from {r['reference_epochs']} epoch(s), "
            f"{r['reference_measured_seconds']:.1f} s measured)"
            if r.get("reference_projected")
            else ""
        )
        + ", "
        f"val acc {_fmt(r['reference_val_acc'], pct)}, "
        f"{_fmt(r.get('reference_epoch_seconds'), '.2f', ' s')}/epoch",
        f"  lab ({r['lab_path']}): {r['lab_seconds']:.1f} s, val acc {r['lab_val_acc']:.1%}, "
        f"{r['lab_epoch_seconds']:.2f} s/epoch, one-off {r['lab_one_off_seconds']:.1f} s "
        f"(decode {r['lab_decode_seconds']:.1f} s, cache {r['lab_cache_seconds']:.1f} s)",
        f"  speedup {_fmt(r['speedup'], '.1f', 'x')} overall, "
        f"{_fmt(r['speedup_per_epoch'], '.1f', 'x')} per epoch; peak RSS {r['peak_rss_mb']:.0f} MB",
    ]
    return "\n".join(lines)


def cmd_bench(args: argparse.Namespace) -> int:
    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    result = run_bench(args, log)
    if args.json:
        print(bench_text(result), file=sys.stderr)
        sys.stdout.write(json.dumps(result, default=str) + "\n")
    else:
        sys.stdout.write(bench_text(result) + "\n")
    sys.stdout.flush()
    return 0


# ---------------------------------------------------------------------------- scaling


def make_scaled_dataset(source: str | Path, size: int, dest: Path, *, seed: int = 0) -> Path:
    """A flat class-folder data set of `size` JPEGs made from `source`'s training images.

    Image k of a class is source image k mod n, as is for the first n; later copies are a
    random crop (50-100 % of each side), a random flip and a brightness change of it, saved
    as JPEG quality 90, so they cost as much to decode as the originals. Classes keep the
    source's proportions. Made once per (size, seed): an existing complete folder is reused.
    """
    from PIL import Image, ImageEnhance, ImageOps

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
        for k in range(n_out):
            with Image.open(files[k % len(files)]) as src:
                img = src.convert("RGB")
            if k >= len(files):
                w, h = img.size
                cw, ch = int(w * rng.uniform(0.5, 1)), int(h * rng.uniform(0.5, 1))
                x, y = rng.randrange(w - cw + 1), rng.randrange(h - ch + 1)
                img = img.crop((x, y, x + cw, y + ch))
                if rng.random() < 0.5:
                    img = ImageOps.mirror(img)
                img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.7, 1.3))
            img.save(folder / f"{k:05d}.jpg", quality=90)
    done.write_text("ok\n")
    return dest


def cmd_bench_scale(args: argparse.Namespace) -> int:
    from tl_core.jobs import RunSpec
    from tl_core.train import TrainConfig, configure_threads

    configure_threads()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if not sizes or not strategies:
        raise LabError("--sizes and --strategies need at least one value each")
    out = Path(args.workdir)
    rows = []
    for size in sizes:
        data = make_scaled_dataset(args.data, size, out / f"scaled-{size}")
        for strategy in strategies:
            spec = RunSpec(
                data=str(data),
                backbone=args.backbone,
                strategy=strategy,
                train=TrainConfig(epochs=args.epochs, device=args.device),
            ).validate()
            reset_peak_rss()
            r = lab_run(spec)
            epoch = _mean(r["epoch_seconds"])
            row = {
                "images": size,
                "strategy": strategy,
                "epochs": args.epochs,
                "seconds": r["seconds"],
                "one_off_seconds": r["decode_seconds"] + r["cache_seconds"],
                "epoch_seconds": epoch,
                # one-off costs plus 25 epochs at the measured rate
                "projected_25_epochs_seconds": r["seconds"] + (25 - args.epochs) * epoch,
                "val_acc": r["best_val_acc"],
                "peak_rss_mb": peak_rss_mb(),
            }
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    if args.json:
        sys.stdout.write(json.dumps(rows) + "\n")
    else:
        sys.stdout.write(
            "images strategy            one-off s  s/epoch  25-epoch s  val acc  peak MB\n"
        )
        for r in rows:
            sys.stdout.write(
                f"{r['images']:>6} {r['strategy']:18} {r['one_off_seconds']:>9.1f} "
                f"{r['epoch_seconds']:>8.2f} {r['projected_25_epochs_seconds']:>11.1f} "
                f"{r['val_acc']:>7.1%} {r['peak_rss_mb']:>8.0f}\n"
            )
    return 0


# ---------------------------------------------------------------------------- parser


def add_parser(sub) -> None:
    p = sub.add_parser(
        "bench", help="time the lab's path against the classic tutorial loop, in one process"
    )
    p.add_argument("--data", required=True, help="a data set folder (or imported data set name)")
    p.add_argument("--backbone", required=True, help="resnet18, vgg16, efficientnet_lite0, ...")
    p.add_argument(
        "--strategy",
        required=True,
        help=", ".join(STRATEGIES),
    )
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--seeds", type=int, default=1, help="repeat both with seeds seed..seed+N-1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--trainable-blocks", type=int, default=1)
    p.add_argument("--feature-views", type=int, default=None, help="default: the lab's")
    p.add_argument("--weights", default=None, metavar="FILE", help="a local weights file")
    p.add_argument(
        "--untrained",
        action="store_true",
        help="random weights for both (speed only; for backbones without offline weights)",
    )
    p.add_argument(
        "--reference-epochs",
        type=int,
        default=None,
        help="run the reference for only this many epochs and project its time to --epochs "
        "(its per-epoch work is the same every epoch); its accuracy is then that shorter run's",
    )
    p.add_argument("--skip-reference", action="store_true", help="time the lab's path only")
    p.add_argument("--json", action="store_true", help="the last stdout line is one JSON object")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("bench-scale", help="time the lab's path against data set size")
    p.add_argument("--data", required=True, help="the source data set")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument(
        "--strategies", default="feature_extractor,partial_finetune,full_finetune,scratch"
    )
    p.add_argument("--sizes", default="100,300,1000,3000")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--workdir", default="/tmp/tl-bench-scale", help="where the scaled data sets are made"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench_scale)
