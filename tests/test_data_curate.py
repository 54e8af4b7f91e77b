"""Curation: what `show` finds (duplicates, leakage, placeholders) and the fixes."""

from __future__ import annotations

import io

import pytest
from data_fixtures import jpeg_bytes, placeholder_gif, png_bytes
from PIL import Image

from tl_core.data.curate import (
    inspect_dataset,
    remove_class,
    remove_images,
    remove_placeholders,
    rename_class,
    resplit,
)
from tl_core.data.sources import add_images
from tl_core.data.store import dataset_path, load_manifest
from tl_core.errors import LabError


def photo(seed: int, size=(160, 120)) -> Image.Image:
    """A smooth random picture (a few blobs), like a photo to a difference hash."""
    import numpy as np

    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (4, 5, 3)).astype(np.uint8)
    return Image.fromarray(coarse, "RGB").resize(size, Image.Resampling.BICUBIC)


def as_jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture
def messy():
    """train/val set with a leak, an exact duplicate, a placeholder, a cross-class copy."""
    for i in range(4):
        add_images("messy", "cat", [(f"c{i}.jpg", as_jpeg(photo(i)))], split="train")
        add_images("messy", "dog", [(f"d{i}.jpg", as_jpeg(photo(100 + i)))], split="train")
    add_images("messy", "dog", [("d0-again.jpg", as_jpeg(photo(100)))], split="val")
    # The leak: a shrunk, recompressed copy of a training cat, in val.
    add_images("messy", "cat", [("leak.jpg", as_jpeg(photo(2).resize((80, 60)), 40))], split="val")
    add_images("messy", "cat", [("v1.jpg", as_jpeg(photo(50)))], split="val")
    add_images(
        "messy", "cat", [("missing.gif", placeholder_gif())], split="val", skip_placeholders=False
    )
    add_images("messy", "cat", [("same.png", png_bytes(7))], split="train")
    add_images("messy", "dog", [("same.png", png_bytes(7))], split="train")
    return "messy"


def test_summary_counts_sizes_formats(messy) -> None:
    ins = inspect_dataset(messy)
    assert ins.classes == ["cat", "dog"] and ins.images == 14
    assert ins.split_counts == {"train": {"cat": 5, "dog": 5}, "val": {"cat": 3, "dog": 1}}
    assert ins.formats == {"JPEG": 11, "PNG": 3}  # the GIF is stored as PNG
    assert ins.width["max"] == 160 and ins.width["min"] == 48
    assert ins.balance == pytest.approx(6 / 8)


def test_duplicates_leakage_and_placeholders_are_found(messy) -> None:
    ins = inspect_dataset(messy)
    assert ["train/dog/d0.jpg", "val/dog/d0-again.jpg"] in ins.duplicates
    assert ["train/cat/same.png", "train/dog/same.png"] in ins.duplicates
    leaks = {(p["train"], p["other"]) for p in ins.leakage}
    assert ("train/cat/c2.jpg", "val/cat/leak.jpg") in leaks
    assert ("train/dog/d0.jpg", "val/dog/d0-again.jpg") in leaks
    assert not any(p["other"] == "val/cat/v1.jpg" for p in ins.leakage)
    flagged = {p["path"]: p["reason"] for p in ins.placeholders}
    assert "file name" in flagged["val/cat/missing.png"]
    assert "classes cat, dog" in flagged["train/cat/same.png"]
    assert "train/cat/c0.jpg" not in flagged
    assert any("leakage" in w for w in ins.warnings)


def test_remove_placeholders_and_images(messy) -> None:
    report = remove_placeholders(messy)
    assert report.counts == {"cat": 6, "dog": 5}  # placeholder + the cross-class copies
    assert not (dataset_path(messy) / "val/cat/missing.png").exists()
    report = remove_images(messy, ["val/dog/d0-again.jpg"])
    assert report.counts == {"cat": 6, "dog": 4}
    assert not (dataset_path(messy) / "val/dog").exists()  # emptied folder pruned
    with pytest.raises(LabError, match="no image 'nope.jpg'"):
        remove_images(messy, ["nope.jpg"])


def test_rename_and_remove_class(messy) -> None:
    report = rename_class(messy, "dog", "hound/dog")
    assert report.classes == ["cat", "hound_dog"]
    assert (dataset_path(messy) / "train/hound_dog/d1.jpg").is_file()
    merged = rename_class(messy, "hound_dog", "cat")
    assert merged.counts == {"cat": 14}
    assert any("merged" in w for w in merged.warnings)
    with pytest.raises(LabError, match="its classes are cat"):
        remove_class(messy, "dog")
    add_images(messy, "dog", [("x.jpg", jpeg_bytes(1))])
    assert remove_class(messy, "dog").classes == ["cat"]


def test_resplit_is_stratified_seeded_and_keeps_near_duplicates_together() -> None:
    for cls, base in (("a", 0), ("b", 500)):
        files = [(f"{i}.jpg", as_jpeg(photo(base + i))) for i in range(10)]
        add_images("flat", cls, files)
    # A near-copy of a/0.jpg: must land on the same side as the original.
    add_images("flat", "a", [("0-small.jpg", as_jpeg(photo(0).resize((80, 60)), 40))])
    report = resplit("flat", val_fraction=0.3, seed=3)
    manifest = load_manifest("flat")
    assert manifest.layout == "split"
    splits = {(r.split, r.label): 0 for r in manifest.images}
    for r in manifest.images:
        splits[(r.split, r.label)] += 1
    assert splits[("val", "b")] == 3 and splits[("train", "b")] == 7
    assert splits[("val", "a")] + splits[("train", "a")] == 11
    side = {r.path.split("/")[-1]: r.split for r in manifest.images if r.label == "a"}
    assert side["0.jpg"] == side["0-small.jpg"]
    assert inspect_dataset("flat").leakage == []
    again = resplit("flat", val_fraction=0.3, seed=3)
    assert again.counts == report.counts
    with pytest.raises(LabError, match="fractions"):
        resplit("flat", val_fraction=1.5)
