"""Looking after a data set: what is in it, what is wrong with it, and fixing that.

`inspect_dataset` gives the summary (classes, counts per split, image sizes, formats),
the class balance, and the problems worth a look before training:

- exact duplicates (same SHA-256), within a class or across classes;
- near-duplicates across train and val/test by difference hash (leakage: a validation
  score on pictures the model has practically seen is too good to be true);
- placeholders that dead image hosts serve instead of the photo (`imageNotFound.gif`),
  by name and look, and the same file repeated under several classes.

The fixes (`remove_images`, `remove_class`, `rename_class`, `resplit`) go through the
`DatasetWriter`, so each one is all-or-nothing.
"""

from __future__ import annotations

import random
import statistics
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field

import numpy as np

from tl_core.data.images import (
    ImageDecodeError,
    colour_distance,
    decode_bytes,
    placeholder_reason,
)
from tl_core.data.store import (
    DataReport,
    ImageRecord,
    dataset_path,
    load_manifest,
    sanitize_class_name,
)
from tl_core.data.writer import DatasetWriter
from tl_core.errors import LabError

# Near-duplicates: difference hashes at most this many bits apart (of 64), and 4x4 colour
# signatures at most this far apart (mean absolute difference, 0-255). A photo shrunk to a
# third and saved as a poor JPEG stays within both; different drawn shapes with similar
# backgrounds pass the first test but not the second.
NEAR_DUPLICATE_BITS = 4
NEAR_DUPLICATE_COLOUR = 12.0


def _similar(a: ImageRecord, b: ImageRecord) -> bool:
    if not a.colour or not b.colour:
        return True
    return colour_distance(a.colour, b.colour) <= NEAR_DUPLICATE_COLOUR


@dataclass
class Inspection:
    name: str
    layout: str
    classes: list[str]
    counts: dict[str, int]  # per class, all splits
    split_counts: dict[str, dict[str, int]]  # split -> class -> count ("all" when flat)
    images: int
    total_bytes: int
    formats: dict[str, int]
    width: dict[str, int]  # min, median, max
    height: dict[str, int]
    balance: float  # smallest class / largest class, 1.0 = balanced
    duplicates: list[list[str]] = field(default_factory=list)  # groups of identical files
    leakage: list[dict] = field(default_factory=list)  # {train, other, distance}
    placeholders: list[dict] = field(default_factory=list)  # {path, reason}
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        import json

        return json.dumps(self.to_dict(), ensure_ascii=False)


def _spread(values: list[int]) -> dict[str, int]:
    if not values:
        return {"min": 0, "median": 0, "max": 0}
    return {"min": min(values), "median": int(statistics.median(values)), "max": max(values)}


def find_duplicates(records: list[ImageRecord]) -> list[list[str]]:
    """Groups of paths whose files are byte-for-byte identical."""
    groups: dict[str, list[str]] = defaultdict(list)
    for r in records:
        groups[r.sha256].append(r.path)
    return [sorted(paths) for paths in groups.values() if len(paths) > 1]


def find_leakage(records: list[ImageRecord], *, max_bits: int = NEAR_DUPLICATE_BITS) -> list[dict]:
    """Pairs (train image, val/test image) whose difference hashes are within `max_bits`."""
    train = [r for r in records if r.split == "train"]
    other = [r for r in records if r.split in ("val", "test")]
    if not train or not other:
        return []
    a = np.array([int(r.dhash, 16) for r in train], dtype=np.uint64)
    pairs = []
    for r in other:
        x = np.bitwise_xor(a, np.uint64(int(r.dhash, 16)))
        dist = np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)
        for i in np.flatnonzero(dist <= max_bits):
            if not _similar(train[i], r):
                continue
            pairs.append({"train": train[i].path, "other": r.path, "distance": int(dist[i])})
    return pairs


def find_placeholders(name: str, records: list[ImageRecord]) -> list[dict]:
    """Images that look like a dead host's placeholder, or repeat under several classes."""
    root = dataset_path(name)
    found: dict[str, str] = {}
    for r in records:
        file = root / r.path
        try:
            reason = placeholder_reason(r.path, decode_bytes(file.read_bytes()))
        except (OSError, ImageDecodeError) as exc:
            reason = f"unreadable: {exc}"
        if reason:
            found[r.path] = reason
    labels_by_hash: dict[str, set[str]] = defaultdict(set)
    for r in records:
        labels_by_hash[r.sha256].add(r.label)
    for r in records:
        labels = labels_by_hash[r.sha256]
        if len(labels) > 1 and r.path not in found:
            found[r.path] = (
                f"the same file is in classes {', '.join(sorted(labels))} "
                "(a placeholder, or a mislabelled image)"
            )
    return [{"path": p, "reason": why} for p, why in sorted(found.items())]


def inspect_dataset(name: str, *, check_placeholders: bool = True) -> Inspection:
    """Summary and problems of data set NAME. See the module docstring."""
    manifest = load_manifest(name)
    records = manifest.images
    counts = manifest.counts()
    split_counts: dict[str, dict[str, int]] = defaultdict(dict)
    for (split, label), n in sorted(Counter((r.split or "all", r.label) for r in records).items()):
        split_counts[split][label] = n
    report = Inspection(
        name=name,
        layout=manifest.layout,
        classes=manifest.classes,
        counts=counts,
        split_counts=dict(split_counts),
        images=len(records),
        total_bytes=sum(r.bytes for r in records),
        formats=dict(Counter(r.format for r in records).most_common()),
        width=_spread([r.width for r in records]),
        height=_spread([r.height for r in records]),
        balance=round(min(counts.values()) / max(counts.values()), 3) if counts else 0.0,
        duplicates=find_duplicates(records),
        leakage=find_leakage(records),
        placeholders=find_placeholders(name, records) if check_placeholders else [],
    )
    w = report.warnings
    if len(counts) < 2:
        w.append("fewer than 2 classes: add another class before training")
    if counts and report.balance < 0.5:
        small = min(counts, key=counts.get)
        big = max(counts, key=counts.get)
        w.append(
            f"unbalanced: {small!r} has {counts[small]} images, {big!r} has {counts[big]}; "
            "add images to the small class or cap the large one"
        )
    if manifest.layout == "split" and "val" not in split_counts:
        w.append("no val/ split: training will make a stratified one (or use `resplit`)")
    if report.duplicates:
        w.append(f"{len(report.duplicates)} groups of identical files")
    if report.leakage:
        w.append(
            f"leakage: {len(report.leakage)} val/test images are near-duplicates of train "
            "images; their scores will look better than they are"
        )
    if report.placeholders:
        w.append(f"{len(report.placeholders)} images look like placeholders, not photos")
    return report


# ---------------------------------------------------------------------------------------
# Fixes


def remove_images(name: str, paths: list[str]) -> DataReport:
    """Remove images by their path in the data set (as `inspect_dataset` lists them)."""
    _require(name)
    with DatasetWriter(name) as writer:
        for path in paths:
            writer.remove(path)
            writer.report.warnings.append(f"removed {path}")
        writer.prune_empty_folders()
    return writer.report


def remove_placeholders(name: str) -> DataReport:
    """Remove every image `find_placeholders` flags."""
    found = find_placeholders(name, load_manifest(name).images)
    return remove_images(name, [f["path"] for f in found])


def remove_class(name: str, class_name: str) -> DataReport:
    """Remove a class and all its images (in every split)."""
    manifest = _require(name)
    if class_name not in manifest.classes:
        raise LabError(_no_class(name, class_name, manifest.classes))
    with DatasetWriter(name) as writer:
        for r in writer.records:
            if r.label == class_name:
                writer.remove(r.path)
        writer.prune_empty_folders()
        if writer.manifest.class_order:
            writer.manifest.class_order = [
                c for c in writer.manifest.class_order if c != class_name
            ]
    return writer.report


def rename_class(name: str, old: str, new: str) -> DataReport:
    """Rename a class; renaming onto an existing class merges the two."""
    manifest = _require(name)
    if old not in manifest.classes:
        raise LabError(_no_class(name, old, manifest.classes))
    new = sanitize_class_name(new)
    with DatasetWriter(name) as writer:
        if new in manifest.classes:
            writer.report.warnings.append(f"{old!r} merged into the existing class {new!r}")
        for r in writer.records:
            if r.label == old:
                writer.move(r.path, label=new, split=r.split)
        writer.prune_empty_folders()
        if writer.manifest.class_order:
            order = [new if c == old else c for c in writer.manifest.class_order]
            writer.manifest.class_order = list(dict.fromkeys(order))
    return writer.report


def resplit(
    name: str, *, val_fraction: float = 0.2, test_fraction: float = 0.0, seed: int = 0
) -> DataReport:
    """Shuffle each class's images into train/val(/test) anew, stratified, with a seed.

    A flat set becomes a split one. Near-duplicate pictures are kept on the same side, so
    the new split does not leak.
    """
    if not (0 < val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise LabError("val and test fractions must be between 0 and 1 and sum to less than 1")
    _require(name)
    rng = random.Random(seed)
    with DatasetWriter(name) as writer:
        records = sorted(writer.records, key=lambda r: r.path)
        groups = _near_duplicate_groups(records)
        by_class: dict[str, list[list[ImageRecord]]] = defaultdict(list)
        for group in groups:
            by_class[group[0].label].append(group)
        writer.manifest.layout = "split"
        moves = []
        for label in sorted(by_class):
            class_groups = by_class[label]
            rng.shuffle(class_groups)
            n = sum(len(g) for g in class_groups)
            n_val = max(1, round(n * val_fraction)) if n > 1 else 0
            n_test = round(n * test_fraction)
            placed = 0
            for group in class_groups:
                split = "val" if placed < n_val else "test" if placed < n_val + n_test else "train"
                placed += len(group)
                moves += [(r, split) for r in group]
        # Move through a neutral folder first so names cannot clash between old and new.
        staged = [(writer.move(r.path, label=r.label, split="_resplit"), s) for r, s in moves]
        for r, split in staged:
            writer.move(r.path, label=r.label, split=split)
        writer.prune_empty_folders()
    return writer.report


def _near_duplicate_groups(records: list[ImageRecord]) -> list[list[ImageRecord]]:
    """Records grouped so that identical or near-identical pictures of a class stay together."""
    parent = list(range(len(records)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    by_label: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        by_label[r.label].append(i)
    for idx in by_label.values():
        hashes = np.array([int(records[i].dhash, 16) for i in idx], dtype=np.uint64)
        for j, i in enumerate(idx):
            x = np.bitwise_xor(hashes[j + 1 :], hashes[j])
            dist = np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)
            for k in np.flatnonzero(dist <= NEAR_DUPLICATE_BITS):
                if _similar(records[i], records[idx[j + 1 + int(k)]]):
                    parent[find(idx[j + 1 + int(k)])] = find(i)
    groups: dict[int, list[ImageRecord]] = defaultdict(list)
    for i, r in enumerate(records):
        groups[find(i)].append(r)
    return list(groups.values())


def _require(name: str):
    if not dataset_path(name).is_dir():
        raise LabError(f"no data set {name!r}; `data list` shows the sets there are")
    return load_manifest(name)


def _no_class(name: str, class_name: str, classes: list[str]) -> str:
    return f"no class {class_name!r} in {name!r}; its classes are {', '.join(classes)}"
