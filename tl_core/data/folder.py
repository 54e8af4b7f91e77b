"""A data set on disk, as the training code sees it.

A data set is a folder with one subfolder per class, or with `train/` and `val/` (optional
`test/`) each holding class folders. Without `val/`, a stratified split with a fixed seed
makes one. `per_class=N` keeps a deterministic subset of N training images per class (for
data-efficiency studies). Images are decoded once, resized so their shorter side is the
backbone's resize size, and kept as uint8 tensors (in memory, and on disk under the lab's
cache keyed by content); unreadable files are skipped and counted, never fatal.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from tl_core import paths
from tl_core.data.images import DecodedImage, ImageDecodeError, load_rgb, placeholder_reason
from tl_core.data.layout import read_layout
from tl_core.data.store import MANIFEST, check_dataset_name, load_manifest
from tl_core.errors import LabError
from tl_core.progress import Progress, ProgressFn
from tl_core.transforms import to_uint8_tensor


@dataclass(frozen=True)
class Item:
    path: str  # absolute path
    label: int


@dataclass
class DataSplit:
    """The images of one data set, split for training; paths only, nothing decoded yet."""

    root: Path
    classes: list[str]
    train: list[Item]
    val: list[Item]
    test: list[Item] = field(default_factory=list)
    content_hash: str = ""
    split_kind: str = "folders"  # "folders" (train/ and val/ on disk) or "stratified"

    def counts(self, part: str = "train") -> dict[str, int]:
        out = dict.fromkeys(self.classes, 0)
        for item in getattr(self, part):
            out[self.classes[item.label]] += 1
        return out


def looks_like_path(name_or_path: str | Path) -> bool:
    """Whether `name_or_path` was given as a path: a `Path`, or text holding a folder
    separator or starting with `.` or `~`. Anything else is a data set name."""
    if isinstance(name_or_path, Path):
        return True
    text = str(name_or_path)
    separators = [s for s in ("/", os.sep, os.altsep) if s]
    return text.startswith((".", "~")) or any(s in text for s in separators)


def resolve_dataset(name_or_path: str | Path) -> Path:
    """A data set's folder: a path (see `looks_like_path`) is that folder; a name is a data
    set in the lab home, never a folder of the working directory."""
    if looks_like_path(name_or_path):
        candidate = Path(name_or_path).expanduser()
        if candidate.is_dir():
            return candidate.resolve()
        if candidate.exists():
            raise LabError(f"{candidate} is a file, not a data set folder (a zip? import it first)")
        raise LabError(f"data set not found: there is no folder {str(name_or_path)!r}")
    with contextlib.suppress(LabError):
        named = paths.datasets_dir() / check_dataset_name(str(name_or_path))
        if named.is_dir():
            return named
    hint = ""
    if Path(name_or_path).is_dir():
        hint = f"; to use the folder {name_or_path!r} here, give it as a path: ./{name_or_path}"
    raise LabError(
        f"data set not found: no data set named {str(name_or_path)!r} in the lab home (list them with "
        f"`python -m tl_core data list`){hint}"
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def content_hash(root: Path, files: Sequence[Path]) -> str:
    """A digest of `files` (each one's path under `root` and SHA-256).

    The SHA-256 of a file comes from the data set's manifest (`store.load_manifest`), which
    every lab import keeps, when it has a record of the same size; only files it does not
    describe (a folder made by hand) are read.
    """
    known: dict[str, tuple[str, int]] = {}
    if (root / MANIFEST).is_file():
        known = {r.path: (r.sha256, r.bytes) for r in load_manifest(root).images}
    digest = hashlib.blake2b(digest_size=16)
    for path in files:
        rel = path.relative_to(root).as_posix()
        record = known.get(rel)
        sha = record[0] if record and record[1] == path.stat().st_size else _sha256(path)
        digest.update(f"{rel}\0{sha}\n".encode())
    return digest.hexdigest()


def _stratified_split(
    items: list[Item], num_classes: int, val_fraction: float, seed: int
) -> tuple[list[Item], list[Item]]:
    rng = random.Random(seed)
    train, val = [], []
    for label in range(num_classes):
        members = [it for it in items if it.label == label]
        rng.shuffle(members)
        # Every class with two or more images gets at least one validation image.
        n_val = round(len(members) * val_fraction)
        n_val = min(max(n_val, 1), len(members) - 1) if len(members) >= 2 else 0
        val.extend(members[:n_val])
        train.extend(members[n_val:])
    return sorted(train, key=lambda i: i.path), sorted(val, key=lambda i: i.path)


def cap_per_class(items: list[Item], per_class: int, seed: int) -> list[Item]:
    """A deterministic subset of at most `per_class` items per label.

    Subsets are nested: the 10 images kept for per_class=10 are among the 20 kept for 20, so
    a data-efficiency curve adds images rather than swapping them.
    """
    if per_class < 1:
        raise LabError(f"images per class must be at least 1, got {per_class}")
    by_label: dict[int, list[Item]] = {}
    for it in sorted(items, key=lambda i: i.path):
        by_label.setdefault(it.label, []).append(it)
    kept = []
    for label, members in sorted(by_label.items()):
        random.Random(f"{seed}-{label}").shuffle(members)
        kept.extend(members[:per_class])
    return sorted(kept, key=lambda i: i.path)


def scan_dataset(
    name_or_path: str | Path,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    per_class: int | None = None,
    hash_content: bool = True,
) -> DataSplit:
    """List a data set's images and split them; raises LabError for unusable folders.

    `hash_content=False` leaves `content_hash` empty (to check a data set without needing
    its identity, e.g. when runs are queued).
    """
    root = resolve_dataset(name_or_path)
    if not 0.0 < val_fraction < 1.0:
        raise LabError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    layout = read_layout(root)
    first = "train" if layout.kind == "split" else None
    classes = layout.classes.get(first, [])
    if not classes:
        raise LabError(
            f"{root} holds no class folders: put each class's images in a subfolder "
            "(e.g. ants/, bees/), or train/ and val/ each holding class folders"
        )
    index = {c: i for i, c in enumerate(classes)}
    for split in ("val", "test"):
        unknown = [c for c in layout.classes.get(split, []) if c not in index]
        if unknown:
            raise LabError(
                f"class {unknown[0]!r} in {root / split} is not among the training classes "
                f"({', '.join(classes)})"
            )

    def items(split: str | None) -> list[Item]:
        return [Item(str(e.path), index[e.label]) for e in layout.of_split(split)]

    train = items(first)
    if "val" in layout.classes:
        val = items("val")
        split_kind = "folders"
    else:
        train, val = _stratified_split(train, len(classes), val_fraction, seed)
        split_kind = "stratified"
    test = items("test")
    all_files = sorted(e.path for e in layout.images)
    if not all_files:
        raise LabError(
            f"{root} holds no images (looked for {', '.join(sorted({'.jpg', '.png'}))}, ...)"
        )
    present = {it.label for it in train}
    empty = [c for c, i in index.items() if i not in present]
    if empty:
        raise LabError(
            f"class folder(s) with no training images: {', '.join(empty)}; add images or remove them"
        )
    if len(classes) < 2:
        raise LabError(f"{root} has a single class ({classes[0]}); a classifier needs at least 2")
    if not val:
        raise LabError(f"{root} has too few images for a validation set; add at least 2 per class")
    if per_class is not None:
        train = cap_per_class(train, per_class, seed)
    return DataSplit(
        root=root,
        classes=classes,
        train=train,
        val=val,
        test=test,
        content_hash=content_hash(root, all_files) if hash_content else "",
        split_kind=split_kind,
    )


# ---------------------------------------------------------------------------- decoding


@dataclass
class DecodedImages:
    """uint8 CHW tensors of one list of items; `skipped` holds (path, reason) of bad files."""

    images: list[torch.Tensor]
    labels: list[int]
    paths: list[str]
    skipped: list[tuple[str, str]]


def _cache_key(items: Sequence[Item], resize_size: int, checked: bool = False) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"v1-{resize_size}{'-placeholders' if checked else ''}".encode())
    for it in items:
        st = os.stat(it.path)
        digest.update(f"{it.path}|{st.st_size}|{st.st_mtime_ns}|{it.label}".encode())
    return digest.hexdigest()


def decode_items(
    items: Sequence[Item],
    resize_size: int,
    *,
    use_cache: bool = True,
    on_progress: ProgressFn | None = None,
    message: str = "decoding images",
    check_placeholders: bool = False,
) -> DecodedImages:
    """Decode and resize every image once; reuse a disk cache keyed by file identities.

    `check_placeholders` skips what a dead image host serves instead of a photo
    (`images.placeholder_reason`, the check every import into the lab makes): for a folder
    that never went through an import.
    """
    cache_file = None
    if use_cache and items:
        key = _cache_key(items, resize_size, check_placeholders)
        cache_file = paths.cache_dir("images") / f"{key}.pt"
        cached = paths.load_cache(cache_file)
        if cached is not None:
            skipped = [tuple(s) for s in cached["skipped"]]
            return DecodedImages(cached["images"], cached["labels"], cached["paths"], skipped)
    images, labels, kept, skipped = [], [], [], []
    for n, it in enumerate(items, start=1):
        try:
            rgb = load_rgb(it.path)
            reason = check_placeholders and placeholder_reason(
                it.path, DecodedImage(rgb, "", "", False)
            )
            if reason:
                skipped.append((it.path, reason))
            else:
                images.append(to_uint8_tensor(rgb, resize_size))
                labels.append(it.label)
                kept.append(it.path)
        except ImageDecodeError as exc:
            skipped.append((it.path, str(exc)))
        if on_progress is not None:
            on_progress(Progress("decode", n, len(items), message))
    if cache_file is not None:
        paths.save_cache(
            {
                "images": images,
                "labels": labels,
                "paths": kept,
                "skipped": [list(s) for s in skipped],
            },
            cache_file,
        )
    return DecodedImages(images, labels, kept, skipped)


class TensorImageDataset(Dataset):
    """Decoded uint8 images with a transform applied on access."""

    def __init__(self, decoded: DecodedImages, transform: Callable[[torch.Tensor], torch.Tensor]):
        self.decoded = decoded
        self.transform = transform

    def __len__(self) -> int:
        return len(self.decoded.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.decoded.images[index]), self.decoded.labels[index]
