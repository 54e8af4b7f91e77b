"""Class splits: a data set with only some classes of another, and source/target pairs.

`make_source_target("cifar10", CLASS_SPLITS["cifar10"], ...)` makes A (every class but the
target ones) to pre-train on and a small B (those classes) to transfer to. Images are hard
links where the file system allows, so a split costs almost no disk.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import replace

from tl_core.data.store import DataReport, dataset_path, load_manifest
from tl_core.data.writer import DatasetWriter
from tl_core.errors import LabError

# Source/target pairs for the recipes: the target classes leave the source set.
CLASS_SPLITS = {
    "cifar10": ("airplane", "horse"),  # classes 0 and 7
    "fashion_mnist": ("T-shirt_top", "Shirt"),  # classes 0 and 6
}


def split_classes(
    source: str,
    keep: Iterable[str | int],
    new_name: str,
    *,
    per_class: int | None = None,
    seed: int = 0,
) -> DataReport:
    """A new data set with only the `keep` classes of `source`, optionally capped per class
    (and per split). Classes are names, or indices in the set's own label order (for a
    built-in set, its original order: CIFAR-10 0 = airplane, 7 = horse). Images are hard
    links where the file system allows, so a split costs almost no disk."""
    manifest = load_manifest(source)
    order = manifest.class_order or manifest.classes
    wanted = []
    for k in keep:
        if isinstance(k, int) or (isinstance(k, str) and k.isdigit() and k not in order):
            k = int(k)
            if not 0 <= k < len(order):
                raise LabError(f"class index {k} out of range: {source!r} has {len(order)} classes")
            wanted.append(order[k])
        elif k in order:
            wanted.append(k)
        else:
            raise LabError(f"no class {k!r} in {source!r}; its classes are {', '.join(order)}")
    wanted = list(dict.fromkeys(wanted))
    if not wanted:
        raise LabError("no classes to keep; name at least one")
    rng = random.Random(seed)
    root = dataset_path(source)
    groups: dict[tuple, list] = {}
    for record in manifest.images:
        if record.label in wanted:
            groups.setdefault((record.split, record.label), []).append(record)
    with DatasetWriter(new_name, replace=True) as writer:
        writer.manifest.layout = manifest.layout
        writer.manifest.class_order = [c for c in order if c in wanted]
        writer.manifest.info = {"split_from": source, "classes": wanted, "per_class": per_class}
        assert writer.tmp is not None
        for (_split, _label), records in sorted(groups.items(), key=lambda kv: str(kv[0])):
            records = sorted(records, key=lambda r: r.path)
            if per_class is not None and len(records) > per_class:
                records = sorted(rng.sample(records, per_class), key=lambda r: r.path)
            for record in records:
                writer._link(root / record.path, writer.tmp / record.path)
                writer._remember(replace(record, origin={**record.origin, "split_from": source}))
                writer.report.added += 1
                writer.report.added_per_class[record.label] = (
                    writer.report.added_per_class.get(record.label, 0) + 1
                )
    return writer.report


def make_source_target(
    source: str,
    target_classes: Iterable[str | int],
    *,
    source_name: str,
    target_name: str,
    per_class_source: int | None = None,
    per_class_target: int | None = None,
    seed: int = 0,
) -> tuple[DataReport, DataReport]:
    """Split a set in two: A = every class but `target_classes`, B = those classes.

    E.g. `make_source_target("cifar10", [0, 7], source_name="cifar10-A", target_name=
    "cifar10-B", per_class_target=50)`: pre-train on A, transfer to a small B.
    """
    manifest = load_manifest(source)
    order = manifest.class_order or manifest.classes
    target = [order[int(k)] if str(k).isdigit() and k not in order else k for k in target_classes]
    rest = [c for c in order if c not in target]
    a = split_classes(source, rest, source_name, per_class=per_class_source, seed=seed)
    b = split_classes(source, target, target_name, per_class=per_class_target, seed=seed)
    return a, b
