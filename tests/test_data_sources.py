"""Folders, zips and per-class uploads become data sets; hostile input is refused."""

from __future__ import annotations

import json
import os
import stat
import zipfile
from pathlib import Path

import pytest
from data_fixtures import (
    cmyk_jpeg,
    exif_rotated_jpeg,
    jpeg_bytes,
    palette_png_with_transparency,
    png16_bytes,
    png_bytes,
    rgba_png,
    truncated_jpeg,
)
from PIL import Image

from tl_core.data import store
from tl_core.data.sources import ZipLimits, add_images, import_folder, import_path, import_zip
from tl_core.data.store import (
    dataset_path,
    list_datasets,
    load_manifest,
    sanitize_class_name,
    sanitize_class_names,
)
from tl_core.data.writer import DatasetWriter
from tl_core.errors import LabError


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def tree_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def skipped(report) -> dict[str, str]:
    return {s.item: s.reason for s in report.skipped}


# ---------------------------------------------------------------------------------------
# Folders


def test_split_folder_under_a_common_root_keeps_train_and_val(tmp_path: Path) -> None:
    src = tmp_path / "src" / "my_data"
    for split, n in (("train", 3), ("val", 2)):
        for c, cls in enumerate(("ants", "bees")):
            for i in range(n):
                write(src / split / cls / f"{i}.jpg", jpeg_bytes(100 * c + 10 * i + len(split)))
    write(src / "train" / "ants" / ".hidden.jpg", jpeg_bytes(999))
    write(src / "train" / ".DS_Store", b"\0\0")
    write(src / "README.txt", b"about this set")

    report = import_folder(tmp_path / "src", "ab")

    assert report.classes == ["ants", "bees"] and report.added == 10
    assert report.counts == {"ants": 5, "bees": 5}
    assert skipped(report) == {"my_data/README.txt": "outside the train/val/test folders"}
    root = dataset_path("ab")
    assert tree_files(root) == {"manifest.json"} | {
        f"{s}/{c}/{i}.jpg" for s, n in (("train", 3), ("val", 2)) for c in ("ants", "bees")
        for i in range(n)
    }  # fmt: skip
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["layout"] == "split"
    first = manifest["images"][0]
    assert {"path", "label", "split", "sha256", "bytes", "width", "height", "origin"} <= set(first)
    assert first["origin"]["kind"] == "file"
    assert first["bytes"] == (root / first["path"]).stat().st_size


def test_flat_folder_and_every_bad_file_has_a_reason(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "cats" / "good.jpg", jpeg_bytes(1))
    write(src / "cats" / "truncated.jpg", truncated_jpeg())
    write(src / "cats" / "empty.jpg", b"")
    write(src / "dogs" / "page.jpg", b"<html><body>Not Found</body></html>")
    write(src / "dogs" / "good.png", png_bytes(2))
    write(src / "loose.jpg", jpeg_bytes(3))

    report = import_folder(src, "pets")

    assert report.added == 2 and report.counts == {"cats": 1, "dogs": 1}
    reasons = skipped(report)
    assert "truncated" in reasons["cats/truncated.jpg"]
    assert "empty" in reasons["cats/empty.jpg"]
    assert "HTML" in reasons["dogs/page.jpg"]
    assert reasons["loose.jpg"] == "not inside a class folder"
    assert load_manifest("pets").layout == "flat"


def test_symlinks_in_a_folder_are_not_followed(tmp_path: Path) -> None:
    outside = write(tmp_path / "secret" / "photo.jpg", jpeg_bytes(5))
    src = tmp_path / "src"
    write(src / "a" / "1.jpg", jpeg_bytes(1))
    write(src / "b" / "1.jpg", jpeg_bytes(2))
    os.symlink(outside, src / "a" / "link.jpg")
    os.symlink(outside.parent, src / "c")
    report = import_folder(src, "links")
    assert report.counts == {"a": 1, "b": 1}
    assert skipped(report) == {
        "a/link.jpg": "symbolic link (not followed)",
        "c": "symbolic link (not followed)",
    }


def test_odd_formats_are_stored_upright_rgb_and_plain_ones_kept_as_is(tmp_path: Path) -> None:
    src = tmp_path / "src"
    originals = {
        "plain.jpg": jpeg_bytes(1),
        "plainpng.png": png_bytes(2),
        "cmyk.jpg": cmyk_jpeg(),
        "palette.png": palette_png_with_transparency(),
        "deep.png": png16_bytes(),
        "alpha.png": rgba_png(),
        "rotated.jpg": exif_rotated_jpeg(),
    }
    for name, data in originals.items():
        write(src / "x" / name, data)
    write(src / "y" / "other.jpg", jpeg_bytes(9))
    report = import_folder(src, "formats")
    assert report.added == 8 and not report.skipped
    root = dataset_path("formats")
    records = {Path(r.path).stem: r for r in load_manifest("formats").images}
    assert (root / records["plain"].path).read_bytes() == originals["plain.jpg"]
    assert records["plain"].stored == "original"
    for stem in ("cmyk", "palette", "deep", "alpha", "rotated"):
        record = records[stem]
        assert record.stored == "re-encoded", stem
        with Image.open(root / record.path) as img:
            assert img.mode == "RGB", stem
            assert not img.getexif().get(0x0112), stem
    with Image.open(root / records["rotated"].path) as img:
        assert img.size == (20, 40)


# ---------------------------------------------------------------------------------------
# Zips


def make_zip(path: Path, entries: list[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return path


def symlink_entry(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


def test_zip_with_traversal_absolute_and_links_writes_nothing_outside(tmp_path: Path) -> None:
    archive = make_zip(
        tmp_path / "hostile.zip",
        [
            ("set/ok/1.jpg", jpeg_bytes(1)),
            ("set/ok2/1.jpg", jpeg_bytes(2)),
            ("set/../../evil.jpg", jpeg_bytes(3)),
            ("set/ok/../../../evil2.jpg", jpeg_bytes(4)),
            ("/abs/evil3.jpg", jpeg_bytes(5)),
            symlink_entry("set/ok/link.jpg", "/etc/passwd"),
            ("__MACOSX/set/ok/._1.jpg", b"resource fork"),
            ("set/ok/.DS_Store", b"\0"),
            ("set/ok/.hidden.jpg", jpeg_bytes(6)),
        ],
    )
    home = store.datasets_dir().parent
    before = {p for p in tmp_path.rglob("*")}
    report = import_zip(archive, "safe")
    after = {p for p in tmp_path.rglob("*")}

    new_files = {p for p in after - before if p.is_file()}
    root = dataset_path("safe")
    assert all(root in p.parents or home in p.parents for p in new_files)
    assert not any("evil" in p.name for p in after)
    assert report.counts == {"ok": 1, "ok2": 1}
    reasons = skipped(report)
    assert "'..'" in reasons["set/../../evil.jpg"]
    assert "'..'" in reasons["set/ok/../../../evil2.jpg"]
    assert "absolute" in reasons["/abs/evil3.jpg"]
    assert "symbolic link" in reasons["set/ok/link.jpg"]
    assert not any("MACOSX" in item or "DS_Store" in item or ".hidden" in item for item in reasons)
    assert tree_files(root) == {"manifest.json", "ok/1.jpg", "ok2/1.jpg"}


def test_zip_bomb_by_size_is_refused_before_reading(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a/1.jpg", jpeg_bytes(1))
        zf.writestr("a/zeros.jpg", b"\0" * 2_000_000)  # compresses to ~2 KB
    assert archive.stat().st_size < 20_000
    with pytest.raises(LabError, match="uncompressed is over the limit.*zip bomb"):
        import_zip(archive, "bomb", limits=ZipLimits(max_total_bytes=1_000_000))
    assert not dataset_path("bomb").exists()
    assert not any(p.name.startswith(".tmp") for p in store.datasets_dir().iterdir())


def test_zip_bomb_by_entry_count_is_refused(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "many.zip", [(f"a/{i}.jpg", b"x") for i in range(50)])
    with pytest.raises(LabError, match="50 entries is over the limit of 10"):
        import_zip(archive, "many", limits=ZipLimits(max_entries=10))


def test_zip_entry_larger_than_its_cap_is_skipped(tmp_path: Path) -> None:
    archive = make_zip(
        tmp_path / "big.zip", [("a/1.jpg", jpeg_bytes(1)), ("b/big.png", png_bytes(2, (400, 400)))]
    )
    report = import_zip(archive, "big", limits=ZipLimits(max_entry_bytes=50_000))
    assert "entry too large" in skipped(report)["b/big.png"]


def test_not_a_zip_and_missing_paths_are_lab_errors(tmp_path: Path) -> None:
    fake = write(tmp_path / "fake.zip", b"PK but not really")
    with pytest.raises(LabError, match="neither a folder nor a zip"):
        import_path(fake, "x")
    with pytest.raises(LabError, match="no such file or folder"):
        import_path(tmp_path / "missing", "x")
    with pytest.raises(LabError, match="invalid data set name"):
        import_path(tmp_path, "../escape")


# ---------------------------------------------------------------------------------------
# Per-class files, names, atomicity


def test_add_images_for_one_class_creates_then_extends() -> None:
    first = add_images("cam", "left hand", [("a.jpg", jpeg_bytes(1)), ("b.jpg", b"")])
    assert first.added == 1 and skipped(first) == {"b.jpg": "empty file (0 bytes)"}
    second = add_images("cam", "right hand", [("capture.png", png_bytes(2))], source="camera")
    assert second.counts == {"left hand": 1, "right hand": 1}
    again = add_images("cam", "left hand", [("a-copy.jpg", jpeg_bytes(1))])
    assert again.added == 0 and "already in the data set" in again.skipped[0].reason
    records = load_manifest("cam").images
    assert {r.origin["kind"] for r in records} == {"upload", "camera"}
    assert [i.name for i in list_datasets()] == ["cam"]


def test_upload_file_names_cannot_escape_the_class_folder() -> None:
    report = add_images("up", "c", [("../../../etc/evil.jpg", jpeg_bytes(1))])
    assert report.added == 1
    (record,) = load_manifest("up").images
    assert record.path == "c/evil.jpg"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ants", "ants"),
        ("../../etc", "etc"),
        ("a/b\\c", "a_b_c"),
        (".hidden", "hidden"),
        ("  two   words ", "two words"),
        ("e\u0301te\u0301", "\u00e9t\u00e9"),  # decomposed -> NFC
        ("x" * 300, "x" * 64),
    ],
)
def test_class_names_are_sanitised(raw: str, expected: str) -> None:
    name = sanitize_class_name(raw)
    assert name == expected
    assert "/" not in name and "\\" not in name and name not in (".", "..")


@pytest.mark.parametrize("raw", ["", "..", "/", "...", "__"])
def test_class_names_with_nothing_left_are_refused(raw: str) -> None:
    with pytest.raises(LabError, match="no usable characters"):
        sanitize_class_name(raw)


def test_class_name_collisions_are_reported() -> None:
    mapping, warnings = sanitize_class_names(["a/b", "a_b", "Cat", "cat", "dog"])
    assert mapping["a/b"] == mapping["a_b"] == "a_b"
    assert mapping["Cat"] == mapping["cat"] == "Cat"
    assert len(warnings) == 2 and all("merged" in w for w in warnings)


def test_folder_collisions_are_reported_in_the_import(tmp_path: Path) -> None:
    write(tmp_path / "src" / "Cat" / "1.jpg", jpeg_bytes(1))
    write(tmp_path / "src" / "cat" / "2.jpg", jpeg_bytes(2))
    write(tmp_path / "src" / "dog" / "3.jpg", jpeg_bytes(3))
    report = import_folder(tmp_path / "src", "cc")
    assert report.counts == {"Cat": 2, "dog": 1}
    assert any("'Cat', 'cat'" in w for w in report.warnings)


def test_a_failed_import_leaves_the_existing_set_as_it_was(tmp_path: Path) -> None:
    add_images("keep", "a", [("1.jpg", jpeg_bytes(1))])
    add_images("keep", "b", [("2.jpg", jpeg_bytes(2))])
    root = dataset_path("keep")
    before = {p: (root / p).read_bytes() for p in tree_files(root)}

    with pytest.raises(RuntimeError), DatasetWriter("keep", replace=True) as writer:
        writer.add(jpeg_bytes(3), label="c", filename="3.jpg", origin={"kind": "test"})
        raise RuntimeError("disk full, say")

    bomb = tmp_path / "bomb.zip"
    make_zip(bomb, [("c/1.jpg", jpeg_bytes(4)), ("c/2.jpg", b"\0" * 100_000)])
    with pytest.raises(LabError):
        import_zip(bomb, "keep", limits=ZipLimits(max_total_bytes=50_000))

    assert {p: (root / p).read_bytes() for p in tree_files(root)} == before
    assert [p.name for p in store.datasets_dir().iterdir()] == ["keep"]
