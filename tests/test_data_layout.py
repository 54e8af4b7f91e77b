"""The one reader of a data set folder's layout (`tl_core.data.layout`), and the readers that
use it agreeing on what a hand-made folder holds."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import draw_stripes

from tl_core.data.folder import scan_dataset
from tl_core.data.layout import read_layout
from tl_core.schedule import image_counts
from tl_core.spec import RunSpec


def picture(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    draw_stripes(path, horizontal=seed % 2 == 0, seed=seed)
    return path


def hand_made(root: Path, per_class: int = 4) -> Path:
    """A flat folder with what readers must leave out: `_` and `.` folders, hidden files,
    files that are not images; and a picture one folder down inside a class."""
    for c, name in enumerate(("ants", "bees")):
        for i in range(per_class):
            picture(root / name / f"{i}.png", seed=10 * c + i)
        picture(root / name / ".hidden.png")
        (root / name / "notes.txt").write_text("not a picture")
    picture(root / "bees" / "more" / "deep.png", seed=7)
    picture(root / "_trash" / "old.png")
    picture(root / ".cache" / "x" / "thumb.png")
    return root


def test_a_flat_folder_lists_class_images_at_any_depth_and_skips_hidden_and_underscore(
    tmp_path: Path,
) -> None:
    layout = read_layout(hand_made(tmp_path / "set"))
    assert layout.kind == "flat" and layout.classes == {None: ["ants", "bees"]}
    rel = [(e.split, e.label, e.path.relative_to(layout.root).as_posix()) for e in layout.images]
    assert rel == [
        *[(None, "ants", f"ants/{i}.png") for i in range(4)],
        *[(None, "bees", f"bees/{i}.png") for i in range(4)],
        (None, "bees", "bees/more/deep.png"),
    ]


def test_a_split_folder_reads_train_val_test_only_and_lists_empty_classes(tmp_path: Path) -> None:
    root = tmp_path / "split"
    for split in ("train", "val", "test"):
        picture(root / split / "ants" / "a.png")
    (root / "train" / "bees").mkdir()
    picture(root / "extra" / "ants" / "b.png")
    layout = read_layout(root)
    assert layout.kind == "split"
    assert layout.classes == {"train": ["ants", "bees"], "val": ["ants"], "test": ["ants"]}
    assert [(e.split, e.label) for e in layout.images] == [
        ("train", "ants"),
        ("val", "ants"),
        ("test", "ants"),
    ]


def test_links_are_left_out_only_when_asked(tmp_path: Path) -> None:
    outside = picture(tmp_path / "outside" / "photo.png")
    root = hand_made(tmp_path / "set", per_class=2)
    os.symlink(outside, root / "ants" / "link.png")
    os.symlink(outside.parent, root / "linked_class")
    followed = {e.path.name for e in read_layout(root).images}
    assert {"link.png", "photo.png"} <= followed
    kept = read_layout(root, follow_links=False)
    assert kept.classes == {None: ["ants", "bees"]}
    assert not {"link.png", "photo.png"} & {e.path.name for e in kept.images}


def test_training_scan_and_queue_estimate_count_the_same_images(tmp_path: Path) -> None:
    root = hand_made(tmp_path / "set")
    split = scan_dataset(root, val_fraction=0.25)
    assert split.classes == ["ants", "bees"]
    scanned = len(split.train) + len(split.val)
    assert scanned == 9
    spec = RunSpec(data=str(root), backbone="small_cnn", strategy="scratch", val_fraction=0.25)
    train, val = image_counts(spec)
    assert train + val == scanned


def test_a_manifest_rebuilt_for_a_folder_lists_what_training_reads(tmp_path: Path) -> None:
    from tl_core.data.store import load_manifest

    root = hand_made(tmp_path / "set")
    outside = picture(tmp_path / "outside" / "photo.png")
    os.symlink(outside, root / "ants" / "link.png")
    split = scan_dataset(root, val_fraction=0.25)
    manifest = load_manifest(root)
    assert manifest.layout == "flat" and manifest.classes == split.classes
    trained = {Path(i.path) for i in split.train + split.val} - {root / "ants" / "link.png"}
    assert {root / r.path for r in manifest.images} == trained  # links are not recorded
    deep = next(r for r in manifest.images if r.path.endswith("deep.png"))
    assert (deep.label, deep.split) == ("bees", None)


def test_a_manifest_rebuilt_for_a_split_folder_keeps_each_images_split(tmp_path: Path) -> None:
    from tl_core.data.store import load_manifest

    root = tmp_path / "split"
    for split in ("train", "val"):
        for c in ("ants", "bees"):
            picture(root / split / c / "a.png")
    picture(root / "notes" / "x.png")  # not a split folder: not read
    manifest = load_manifest(root)
    assert manifest.layout == "split"
    assert sorted((r.split, r.label) for r in manifest.images) == [
        ("train", "ants"),
        ("train", "bees"),
        ("val", "ants"),
        ("val", "bees"),
    ]
