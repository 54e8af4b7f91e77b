"""Built-in data sets: the registry (`BUILTINS`, `build_builtin`) and the downloaded ones.

- `shapes`: drawn here, no network (`tl_core.data.shapes`).
- `hymenoptera`: the PyTorch transfer-learning tutorial's ants/bees archive.
- `cifar10`, `fashion_mnist`, `caltech101`: through torchvision's dataset classes, which
  download into `cache_dir("torchvision")` on first use. Fashion-MNIST is also read
  straight from the four `.gz` idx files of Debian's `dataset-fashion-mnist` package.

Offline without a cached copy, building a downloaded set raises a `LabError` naming the
file to fetch, the folder to put it in, and the sets that work offline. Class splits into
source/target pairs are `tl_core.data.class_splits`.
"""

from __future__ import annotations

import gzip
import math
import random
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tl_core.data.download import FetchError, SafeFetcher, default_policy
from tl_core.data.shapes import build_shapes
from tl_core.data.sources import import_zip
from tl_core.data.store import (
    DataReport,
    ProgressFn,
    check_dataset_name,
    dataset_path,
    load_manifest,
    sanitize_class_name,
)
from tl_core.data.writer import DatasetWriter
from tl_core.errors import LabError
from tl_core.paths import cache_dir

HYMENOPTERA_URL = "https://download.pytorch.org/tutorial/hymenoptera_data.zip"
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "val": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# Where Debian's dataset-fashion-mnist package puts the files (`dpkg -L` is asked too).
FASHION_MNIST_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)
OFFLINE_SETS = "shapes (always), fashion_mnist (with Debian's dataset-fashion-mnist package)"


def _offline_error(what: str, url: str, where: Path, exc: Exception) -> LabError:
    return LabError(
        f"cannot download {what} ({exc}). Download {url} on a machine with network access "
        f"and put it in {where}, then run this again. Sets that work offline: {OFFLINE_SETS}."
    )


# ---------------------------------------------------------------------------------------
# Array-backed sets (CIFAR-10, Fashion-MNIST)


def _write_arrays(
    name: str,
    builtin: str,
    classes: Iterable[str],
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    per_class: int | None,
    seed: int,
    on_progress: ProgressFn | None,
) -> DataReport:
    """Store uint8 images (N,H,W) or (N,H,W,3) with integer labels as PNG class folders."""
    classes = list(classes)
    labels = [sanitize_class_name(c) for c in classes]
    rng = np.random.default_rng(seed)
    chosen: dict[str, np.ndarray] = {}
    for split, (_, y) in splits.items():
        picks = []
        for k in range(len(classes)):
            idx = np.flatnonzero(y == k)
            if per_class is not None and len(idx) > per_class:
                idx = np.sort(rng.choice(idx, per_class, replace=False))
            picks.append(idx)
        chosen[split] = np.sort(np.concatenate(picks))
    total = sum(len(v) for v in chosen.values())
    done = 0
    with DatasetWriter(name, replace=True) as writer:
        writer.manifest.class_order = labels
        writer.manifest.info = {"builtin": builtin, "per_class": per_class, "seed": seed}
        for split, (x, y) in splits.items():
            for i in chosen[split]:
                img = Image.fromarray(np.asarray(x[i], dtype=np.uint8)).convert("RGB")
                writer.add_pil(
                    img,
                    label=labels[int(y[i])],
                    filename=f"{split}_{i:05d}",
                    split=split,
                    origin={"kind": "builtin", "source": f"{builtin} {split} #{int(i)}"},
                )
                done += 1
                if on_progress and (done % 200 == 0 or done == total):
                    on_progress(done, total, split)
    return writer.report


def read_idx_gz(path: Path) -> np.ndarray:
    """Read a gzipped idx file (the MNIST format): a magic number, dims, then uint8 data."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise LabError(f"{path} is not an unsigned-byte idx file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != math.prod(dims):
        raise LabError(f"{path} is truncated: expected {math.prod(dims)} values")
    return data.reshape(dims)


def fashion_mnist_dirs() -> list[Path]:
    """Folders that may hold the four Fashion-MNIST .gz files, most likely first."""
    dirs = list(FASHION_MNIST_DIRS)
    dpkg = shutil.which("dpkg")
    if dpkg:
        try:
            out = subprocess.run(
                [dpkg, "-L", "dataset-fashion-mnist"], capture_output=True, text=True, timeout=10
            ).stdout
            dirs += [Path(line).parent for line in out.splitlines() if line.endswith("-ubyte.gz")]
        except (OSError, subprocess.SubprocessError):
            pass
    dirs.append(cache_dir("torchvision") / "FashionMNIST" / "raw")
    return list(dict.fromkeys(dirs))


def fashion_mnist_folder(search_dirs: list[Path] | None = None) -> Path | None:
    """The folder holding the four Fashion-MNIST files (Debian's dataset-fashion-mnist, or a
    finished download), or None: then building the set needs a network."""
    names = [n for pair in FASHION_MNIST_FILES.values() for n in pair]
    for folder in search_dirs or fashion_mnist_dirs():
        if all((folder / n).is_file() for n in names):
            return folder
    return None


def _fashion_mnist_arrays(search_dirs: list[Path] | None) -> dict:
    names = [n for pair in FASHION_MNIST_FILES.values() for n in pair]
    folder = fashion_mnist_folder(search_dirs)
    if folder is not None:
        return {
            split: (read_idx_gz(folder / xs), read_idx_gz(folder / ys))
            for split, (xs, ys) in FASHION_MNIST_FILES.items()
        }
    root = cache_dir("torchvision")
    try:
        from torchvision.datasets import FashionMNIST

        train = FashionMNIST(root, train=True, download=True)
        test = FashionMNIST(root, train=False, download=True)
    except Exception as exc:  # torchvision raises URLError, RuntimeError, OSError, ...
        raise LabError(
            f"cannot find or download Fashion-MNIST ({_reason(exc)}). Install Debian's "
            "package (apt-get install dataset-fashion-mnist), or put the four files "
            f"{', '.join(names)} (from https://github.com/zalandoresearch/fashion-mnist) in "
            f"{root / 'FashionMNIST' / 'raw'}. Sets that work offline: {OFFLINE_SETS}."
        ) from None
    return {
        "train": (train.data.numpy(), train.targets.numpy()),
        "val": (test.data.numpy(), test.targets.numpy()),
    }


def _reason(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


def build_fashion_mnist(
    name: str = "fashion_mnist",
    *,
    per_class: int | None = None,
    seed: int = 0,
    search_dirs: list[Path] | None = None,
    on_progress: ProgressFn | None = None,
) -> DataReport:
    """Fashion-MNIST as RGB PNGs: train (60k) and val (the 10k test set), optionally capped."""
    splits = _fashion_mnist_arrays(search_dirs)
    return _write_arrays(
        name,
        "fashion_mnist",
        FASHION_MNIST_CLASSES,
        splits,
        per_class=per_class,
        seed=seed,
        on_progress=on_progress,
    )


def build_cifar10(
    name: str = "cifar10",
    *,
    per_class: int | None = None,
    seed: int = 0,
    on_progress: ProgressFn | None = None,
) -> DataReport:
    """CIFAR-10 as PNGs: train (50k) and val (the 10k test set), optionally capped."""
    root = cache_dir("torchvision")
    try:
        from torchvision.datasets import CIFAR10

        train = CIFAR10(root, train=True, download=True)
        test = CIFAR10(root, train=False, download=True)
    except Exception as exc:
        raise _offline_error(
            "CIFAR-10", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", root, exc
        ) from None
    splits = {
        "train": (train.data, np.asarray(train.targets)),
        "val": (test.data, np.asarray(test.targets)),
    }
    return _write_arrays(
        name,
        "cifar10",
        train.classes,
        splits,
        per_class=per_class,
        seed=seed,
        on_progress=on_progress,
    )


def build_caltech101(
    name: str = "caltech101",
    *,
    per_class: int | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    on_progress: ProgressFn | None = None,
) -> DataReport:
    """Caltech-101 (101 classes of JPEGs), split train/val at random per class."""
    root = cache_dir("torchvision")
    try:
        from torchvision.datasets import Caltech101

        dataset = Caltech101(root, target_type="category", download=True)
    except Exception as exc:
        raise _offline_error(
            "Caltech-101",
            "101_ObjectCategories.tar.gz (https://data.caltech.edu/records/mzrjq-6wc02)",
            root / "caltech101",
            exc,
        ) from None
    folder = Path(dataset.root) / "101_ObjectCategories"
    rng = random.Random(seed)
    jobs = []
    for category in dataset.categories:
        files = sorted((folder / category).glob("*.jpg"))
        rng.shuffle(files)
        if per_class is not None:
            files = files[:per_class]
        n_val = max(1, round(len(files) * val_fraction)) if len(files) > 1 else 0
        jobs += [(f, category, "val" if i < n_val else "train") for i, f in enumerate(files)]
    with DatasetWriter(name, replace=True) as writer:
        writer.manifest.class_order = [sanitize_class_name(c) for c in dataset.categories]
        writer.manifest.info = {"builtin": "caltech101", "per_class": per_class, "seed": seed}
        for i, (file, category, split) in enumerate(jobs, 1):
            writer.add(
                file.read_bytes(),
                label=sanitize_class_name(category),
                filename=file.name,
                split=split,
                origin={"kind": "builtin", "source": f"caltech101 {category}/{file.name}"},
            )
            if on_progress:
                on_progress(i, len(jobs), category)
    return writer.report


def build_hymenoptera(
    name: str = "hymenoptera", *, on_progress: ProgressFn | None = None, **_: object
) -> DataReport:
    """The ants/bees tutorial set, downloaded once into the cache; its placeholder is skipped."""
    where = cache_dir("downloads")
    archive = where / "hymenoptera_data.zip"
    if not archive.is_file():
        fetcher = SafeFetcher(default_policy(max_bytes=200 * 1024**2, total_timeout=900))
        try:
            fetched = fetcher.get(HYMENOPTERA_URL)
        except FetchError as exc:
            raise _offline_error("hymenoptera", HYMENOPTERA_URL, where, exc) from None
        part = archive.with_suffix(".part")
        part.write_bytes(fetched.data)
        part.rename(archive)
    return import_zip(archive, name, replace=True, on_progress=on_progress)


@dataclass(frozen=True)
class Builtin:
    build: Callable[..., DataReport]
    description: str
    offline: bool


BUILTINS = {
    "shapes": Builtin(build_shapes, "drawn shapes, 4 classes, 64x64, generated here", True),
    "hymenoptera": Builtin(build_hymenoptera, "ants and bees photos (PyTorch tutorial)", False),
    "cifar10": Builtin(build_cifar10, "CIFAR-10, 10 classes, 32x32", False),
    "fashion_mnist": Builtin(build_fashion_mnist, "Fashion-MNIST, 10 classes, 28x28 grey", False),
    "caltech101": Builtin(build_caltech101, "Caltech-101, 101 object classes", False),
}


def build_builtin(
    builtin: str,
    *,
    name: str | None = None,
    per_class: int | None = None,
    seed: int = 0,
    force: bool = False,
    on_progress: ProgressFn | None = None,
) -> DataReport:
    """Build built-in set `builtin` as data set `name` (default: its own name).

    An existing set of that name is left alone (report with `added=0`) unless `force`.
    """
    if builtin not in BUILTINS:
        raise LabError(f"unknown built-in set {builtin!r}; choose from {', '.join(BUILTINS)}")
    name = check_dataset_name(name or builtin)
    if dataset_path(name).is_dir() and not force:
        manifest = load_manifest(name)
        return DataReport(
            name=name,
            classes=manifest.classes,
            counts=manifest.counts(),
            warnings=[f"data set {name!r} already exists; use --force to rebuild it"],
            path=str(dataset_path(name)),
        )
    kwargs: dict = {"on_progress": on_progress}
    if builtin == "shapes":
        kwargs["seed"] = seed
        if per_class is not None:
            kwargs["per_class"] = per_class
    elif builtin != "hymenoptera":
        kwargs.update(per_class=per_class, seed=seed)
    return BUILTINS[builtin].build(name, **kwargs)
