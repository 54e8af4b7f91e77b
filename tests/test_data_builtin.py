"""Built-in sets (offline ones for real, downloaded ones through their offline paths) and
class splits into source/target pairs."""

from __future__ import annotations

import gzip
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import jpeg_bytes, placeholder_gif
from PIL import Image

from tl_core.data import builtin
from tl_core.data.builtin import build_builtin, build_fashion_mnist, read_idx_gz
from tl_core.data.class_splits import make_source_target, split_classes
from tl_core.data.shapes import SHAPES, build_shapes
from tl_core.data.store import dataset_path, load_manifest
from tl_core.errors import LabError
from tl_core.paths import cache_dir


@pytest.fixture
def no_network(monkeypatch):
    """Any name lookup fails, as on a machine without network."""

    def offline(*args, **kwargs):
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", offline)


def test_shapes_builds_offline_and_is_deterministic(no_network) -> None:
    report = build_builtin("shapes")
    assert report.classes == sorted(SHAPES)
    assert report.counts == dict.fromkeys(sorted(SHAPES), 50)
    manifest = load_manifest("shapes")
    assert manifest.layout == "split" and manifest.class_order == list(SHAPES)
    first = {r.path: r.sha256 for r in manifest.images}
    with Image.open(dataset_path("shapes") / manifest.images[0].path) as img:
        assert img.size == (64, 64) and img.mode == "RGB"

    again = build_shapes("shapes-again", seed=0)
    assert {r.path: r.sha256 for r in load_manifest("shapes-again").images} == first
    other = build_shapes("shapes-seed1", seed=1, per_class=5, val_per_class=2)
    assert other.counts == dict.fromkeys(sorted(SHAPES), 7)
    assert not set(first.values()) & {r.sha256 for r in load_manifest("shapes-seed1").images}
    assert again.added == 200


def test_existing_builtin_is_kept_unless_forced() -> None:
    build_shapes("shapes", per_class=2, val_per_class=1)
    kept = build_builtin("shapes")
    assert kept.added == 0 and "already exists" in kept.warnings[0]
    rebuilt = build_builtin("shapes", per_class=3, force=True)
    assert rebuilt.counts == dict.fromkeys(sorted(SHAPES), 13)


def test_unknown_builtin_names_the_choices() -> None:
    with pytest.raises(LabError, match="choose from shapes, hymenoptera"):
        build_builtin("imagenet")


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def fake_fashion_mnist(folder: Path) -> None:
    """The four flat .gz idx files, as Debian's dataset-fashion-mnist installs them."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 40), ("t10k", 20)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 256, (n, 28, 28))
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)


def test_fashion_mnist_read_from_flat_idx_files(tmp_path: Path, no_network) -> None:
    folder = tmp_path / "usr/share/datasets/fashion-mnist"
    fake_fashion_mnist(folder)
    images = read_idx_gz(folder / "train-images-idx3-ubyte.gz")
    assert images.shape == (40, 28, 28)

    report = build_fashion_mnist(search_dirs=[folder], per_class=3)
    assert report.counts["T-shirt_top"] == 5  # 3 train + 2 val (the test set has 2 each)
    manifest = load_manifest("fashion_mnist")
    assert manifest.class_order[0] == "T-shirt_top" and manifest.class_order[6] == "Shirt"
    record = manifest.images[0]
    with Image.open(dataset_path("fashion_mnist") / record.path) as img:
        assert img.mode == "RGB" and img.size == (28, 28)  # grey stored as RGB
        r, g, b = img.split()
        assert r.tobytes() == g.tobytes() == b.tobytes()


def test_truncated_idx_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.gz"
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + (100).to_bytes(4, "big") + b"\0" * 10)
    with pytest.raises(LabError, match="truncated"):
        read_idx_gz(path)


def test_hymenoptera_offline_says_what_to_download_and_where(no_network) -> None:
    with pytest.raises(LabError) as err:
        build_builtin("hymenoptera")
    message = str(err.value)
    assert builtin.HYMENOPTERA_URL in message
    assert str(cache_dir("downloads")) in message
    assert "work offline: shapes" in message


def test_hymenoptera_from_a_cached_archive_skips_the_placeholder(no_network) -> None:
    archive = cache_dir("downloads") / "hymenoptera_data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for split in ("train", "val"):
            for c, cls in enumerate(("ants", "bees")):
                for i in range(2):
                    name = f"hymenoptera_data/{split}/{cls}/{i}.jpg"
                    zf.writestr(name, jpeg_bytes(len(split) * 100 + c * 10 + i))
        zf.writestr("hymenoptera_data/train/ants/imageNotFound.gif", placeholder_gif())
    report = build_builtin("hymenoptera")
    assert report.counts == {"ants": 4, "bees": 4}
    (skip,) = report.skipped
    assert skip.item.endswith("imageNotFound.gif") and "placeholder" in skip.reason


def test_cifar10_offline_names_the_file_and_folder(monkeypatch) -> None:
    import torchvision.datasets

    class Offline:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("<urlopen error [Errno -3] Temporary failure>")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", Offline)
    with pytest.raises(LabError, match=r"cifar-10-python\.tar\.gz.*put it in .*torchvision"):
        build_builtin("cifar10", per_class=10)
    assert not dataset_path("cifar10").exists()


def test_class_split_makes_source_and_target(tmp_path: Path) -> None:
    build_shapes("shapes", per_class=6, val_per_class=2)
    a, b = make_source_target(
        "shapes", [0, "star"], source_name="shapes-A", target_name="shapes-B", per_class_target=2
    )
    assert a.classes == ["square", "triangle"] and a.counts == {"square": 8, "triangle": 8}
    assert b.classes == ["circle", "star"]
    b_manifest = load_manifest("shapes-B")
    per_split = {(r.split, r.label) for r in b_manifest.images}
    assert len(b_manifest.images) == 8 and len(per_split) == 4  # 2 per class and split
    assert b_manifest.class_order == ["circle", "star"]
    # Files are the same pictures (hard links where possible), split layout kept.
    record = b_manifest.images[0]
    assert (dataset_path("shapes-B") / record.path).read_bytes() == (
        dataset_path("shapes") / record.path
    ).read_bytes()
    with pytest.raises(LabError, match="no class 'hexagon'"):
        split_classes("shapes", ["hexagon"], "bad")
    with pytest.raises(LabError, match="out of range"):
        split_classes("shapes", [9], "bad")
