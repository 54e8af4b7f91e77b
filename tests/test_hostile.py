"""Hostile input against the training entry points: every case ends in a clear message, nothing lost.

The CLI and the `tl_core` functions behind it get settings out of range or of the wrong type,
degenerate data sets, odd class names, and a disk that is full or read-only (injected as
ENOSPC/EROFS errors: CI runs as root, which ignores file permissions, so chmod would prove
nothing).
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from conftest import draw_stripes, make_stripes_dataset
from data_fixtures import (
    eps_bytes,
    placeholder_gif,
    png_bytes,
    strip_png,
    utf8_flagged_zip_with_bad_bytes,
)
from PIL import Image

from tl_core.cli import main
from tl_core.data.folder import scan_dataset
from tl_core.data.sources import add_images, import_folder
from tl_core.data.store import load_manifest, sanitize_class_name
from tl_core.errors import LabError
from tl_core.jobs import RunSpec, execute_run, queue_runs
from tl_core.runs import RunStore
from tl_core.train import TrainConfig

QUICK = ["--backbone", "small_cnn", "--strategy", "scratch", "--epochs", "1", "--batch-size", "8"]


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_clear_line(code: int, err: str, expected: str) -> None:
    """Exit 2; the error is one line, the last one (epoch lines may come before it)."""
    assert code == 2
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == [lines[-1]], err
    assert expected in lines[-1]
    assert "Traceback" not in err


SETTINGS = [
    (["--epochs", "0"], "at least 1"),
    (["--epochs", "-3"], "at least 1"),
    (["--epochs", "2.5"], "whole number"),
    (["--epochs", "100000"], "between 1 and 1000"),
    (["--lr", "-0.1"], "learning rate"),
    (["--lr", "0"], "learning rate"),
    (["--lr", "nan"], "learning rate"),
    (["--lr", "inf"], "learning rate"),
    (["--momentum", "1.5"], "momentum"),
    (["--batch-size", "0"], "at least 1"),
    (["--batch-size", "ten"], "whole number"),
    (["--per-class", "0"], "at least 1"),
    (["--per-class", "-5"], "at least 1"),
    (["--val-fraction", "1.5"], "val_fraction"),
    (["--optimizer", "lbfgs"], "sgd, adam, adamw"),
    (["--augment", "mixup"], "crop_flip, none, crop_flip_jitter"),
    (["--precision", "fp8"], "auto, fp32, bf16"),
    (["--device", "tpu"], "auto, cpu, cuda, mps"),
    (["--feature-views", "0"], "feature views"),
    (["--weights", "/no/such/file.pth"], "not found"),
    (["--init-from", "no-such-run"], "no run with id"),
]


@pytest.mark.parametrize(("extra", "expected"), SETTINGS, ids=[" ".join(e) for e, _ in SETTINGS])
def test_out_of_range_or_mistyped_settings(extra, expected, stripes, capsys) -> None:
    argv = ["train", "--data", str(stripes), *QUICK, *extra]
    if extra[0] in ("--weights", "--init-from"):
        argv[argv.index("scratch")] = "feature_extractor"
        argv[argv.index("small_cnn")] = "resnet18" if extra[0] == "--weights" else "small_cnn"
    code, _, err = run_cli(argv, capsys)
    assert_one_clear_line(code, err, expected)
    assert RunStore().list() == []  # nothing half-created


def test_a_batch_larger_than_the_data_set_still_trains(stripes, capsys) -> None:
    code, out, _ = run_cli(
        ["train", "--data", str(stripes), *QUICK, "--batch-size", "500", "--json"], capsys
    )
    assert code == 0
    assert json.loads(out.strip().splitlines()[-1])["status"] == "done"


def _folder(root: Path, spec: dict[str, int]) -> Path:
    for name, count in spec.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            draw_stripes(root / name / f"{i}.png", horizontal=i % 2 == 0, seed=i)
    return root


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ({"only": 6}, "single class"),
        ({"a": 6, "b": 0}, "no training images: b"),
        ({"a": 1, "b": 1}, "too few images for a validation set"),
        ({}, "no class folders"),
    ],
    ids=["one class", "empty class", "one image per class", "no classes"],
)
def test_degenerate_data_sets(layout, expected, tmp_path, capsys) -> None:
    root = _folder(tmp_path / "set", layout)
    root.mkdir(exist_ok=True)
    code, _, err = run_cli(["train", "--data", str(root), *QUICK], capsys)
    assert_one_clear_line(code, err, expected)


def test_a_data_set_of_nothing_but_broken_files(tmp_path, capsys) -> None:
    for cls in ("a", "b"):
        (tmp_path / "set" / cls).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "set" / cls / f"{i}.jpg").write_bytes(b"<html>not found</html>")
    code, _, err = run_cli(["train", "--data", str(tmp_path / "set"), *QUICK], capsys)
    assert_one_clear_line(code, err, "no readable images")
    (run,) = RunStore().list()
    assert run["status"] == "failed" and "no readable images" in run["error"]


def test_unicode_and_emoji_class_names(tmp_path, capsys) -> None:
    root = make_stripes_dataset(tmp_path / "emoji", per_class=8, classes=("horizontal", "vertical"))
    os.rename(root / "horizontal", root / "🐝 abeille")
    os.rename(root / "vertical", root / "Ameisen-Königin 蟻")
    code, out, _ = run_cli(["train", "--data", str(root), *QUICK, "--json"], capsys)
    assert code == 0
    run_id = json.loads(out.strip().splitlines()[-1])["run_id"]
    code, out, _ = run_cli(["show", run_id, "--json"], capsys)
    assert json.loads(out.strip().splitlines()[-1])["classes"] == [
        "Ameisen-Königin 蟻",
        "🐝 abeille",
    ]
    image = next((root / "🐝 abeille").iterdir())
    code, out, _ = run_cli(["predict", "--run", run_id, str(image), "--json"], capsys)
    assert code == 0 and json.loads(out.strip().splitlines()[-1])[0]["top"][0]["class"] in (
        "Ameisen-Königin 蟻",
        "🐝 abeille",
    )


def test_huge_and_bomb_images_are_skipped_with_a_reason_not_fatal(tmp_path) -> None:
    root = make_stripes_dataset(tmp_path / "big", per_class=6)
    Image.new("RGB", (4000, 3000), (120, 30, 30)).save(root / "vertical" / "huge.jpg", quality=50)
    bomb = root / "horizontal" / "bomb.png"
    Image.new("1", (12000, 10000)).save(bomb)  # 120 Mpixel: over PIL's bomb limit, tiny file
    store = RunStore()
    (run_id,) = queue_runs(
        store,
        [
            RunSpec(
                data=str(root),
                backbone="small_cnn",
                strategy="scratch",
                train=TrainConfig(epochs=1),
            )
        ],
    )
    record = execute_run(store, run_id)
    assert record["status"] == "done"
    assert "skipped 1 unreadable" in record["error"]
    assert record["num_train"] + record["num_val"] == 13  # 12 stripes + the huge photo


@pytest.mark.slow
def test_ten_thousand_tiny_images_in_one_class(tmp_path) -> None:
    root = tmp_path / "many"
    (root / "crowd").mkdir(parents=True)
    (root / "few").mkdir()
    tiny = Image.new("RGB", (4, 4), (10, 200, 10))
    for i in range(10_000):
        tiny.save(root / "crowd" / f"{i:05d}.png")
    for i in range(5):
        Image.new("RGB", (4, 4), (200, 10, 10 + i)).save(root / "few" / f"{i}.png")
    split = scan_dataset(root)
    assert split.counts("train") == {"crowd": 8000, "few": 4}
    assert split.counts("val") == {"crowd": 2000, "few": 1}


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS], ids=["disk full", "read-only"])
def test_full_or_read_only_disk_while_saving_weights_keeps_what_was_there(
    err, stripes, monkeypatch, capsys
):
    code, out, _ = run_cli(["train", "--data", str(stripes), *QUICK, "--json"], capsys)
    first = json.loads(out.strip().splitlines()[-1])["run_id"]
    weights = RunStore().run_dir(first) / "weights.pt"
    saved = weights.read_bytes()

    real_open = open

    def failing_open(path, mode="r", *args, **kwargs):
        if "w" in mode and "runs" in str(path):
            raise OSError(err, os.strerror(err), str(path))
        return real_open(path, mode, *args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr("builtins.open", failing_open)
        code, _, err_text = run_cli(["train", "--data", str(stripes), *QUICK], capsys)
    assert_one_clear_line(code, err_text, "cannot write to disk")
    assert weights.read_bytes() == saved  # the earlier run's weights are untouched
    runs = RunStore().list()
    assert [r["status"] for r in runs] == ["failed", "done"]
    assert os.strerror(err) in runs[0]["error"]
    leftovers = [p.name for p in RunStore().run_dir(runs[0]["id"]).iterdir()]
    assert not [n for n in leftovers if ".tmp" in n]


def test_read_only_lab_home_is_a_clear_error(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TL_LAB_HOME", str(tmp_path / "ro-home"))
    real_mkdir = Path.mkdir

    def read_only_mkdir(self, *args, **kwargs):
        if "ro-home" in str(self):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only_mkdir)
    code, _, err = run_cli(["runs"], capsys)
    assert_one_clear_line(code, err, "writable folder")


def test_nan_loss_stops_the_run_with_advice() -> None:
    import torch
    from torch.utils.data import TensorDataset

    from tl_core.train import fit

    head = torch.nn.Linear(4, 2)
    with torch.no_grad():
        head.weight[0, 0] = float("nan")  # as a diverged network would have
    data = TensorDataset(torch.randn(8, 4), torch.tensor([0, 1] * 4))
    with pytest.raises(LabError, match="not a finite number.*lower the learning rate"):
        fit(head, data, data, TrainConfig(epochs=1, channels_last=False))


def test_a_lab_error_from_a_function_is_not_a_crash(stripes) -> None:
    with pytest.raises(LabError, match="at least 1"):
        RunSpec(data=str(stripes), backbone="small_cnn", strategy="scratch", per_class=0).validate()
    with pytest.raises(LabError, match="learning rate"):
        TrainConfig(lr=-1).validate()


# ---------------------------------------------------------------------------------------
# Data import: names the layout reserves, spoofing characters, broken archives, images


RESERVED = ["manifest.json", "train", "val", "test", "Validation", "MANIFEST.JSON"]


@pytest.mark.parametrize("name", RESERVED)
def test_reserved_class_names_are_refused_on_upload_and_cli(name, tmp_path, capsys) -> None:
    with pytest.raises(LabError, match="reserved"):
        add_images("up", name, [("a.png", png_bytes(1))])
    image = tmp_path / "a.png"
    image.write_bytes(png_bytes(1))
    code, _, err = run_cli(["data", "add", "cli", "--class", name, str(image)], capsys)
    assert_one_clear_line(code, err, "reserved")


def test_reserved_class_folders_are_skipped_and_the_rest_imported(tmp_path, capsys) -> None:
    root = tmp_path / "flat"
    for i, cls in enumerate(["manifest.json", "train", "val", "ants", "bees"]):
        (root / cls).mkdir(parents=True)
        (root / cls / f"{i}.png").write_bytes(png_bytes(i))
        if cls in ("ants", "bees"):
            (root / cls / f"{i}b.png").write_bytes(png_bytes(10 + i))
    report = import_folder(root, "flat")
    assert report.counts == {"ants": 2, "bees": 2}
    reasons = {s.item: s.reason for s in report.skipped}
    assert set(reasons) == {"manifest.json/0.png", "train/1.png", "val/2.png"}
    assert all("reserved" in r for r in reasons.values())
    assert scan_dataset("flat").classes == ["ants", "bees"]  # still a usable set
    code, out, err = run_cli(["data", "import", str(root), "--name", "flat2", "--json"], capsys)
    assert code == 0 and "Traceback" not in err
    assert json.loads(out.strip().splitlines()[-1])["counts"] == {"ants": 2, "bees": 2}


def test_zip_names_flagged_utf8_with_invalid_bytes_are_one_clear_error(tmp_path, capsys):
    archive = tmp_path / "bad.zip"
    archive.write_bytes(utf8_flagged_zip_with_bad_bytes(png_bytes(2)))
    code, _, err = run_cli(["data", "import", str(archive), "--name", "z"], capsys)
    assert_one_clear_line(code, err, "not valid UTF-8")


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("ant\u202egpj.exe", "antgpj.exe"),  # right-to-left override
        ("b\u200bee", "bee"),  # zero-width space
        ("\ufeffwasp", "wasp"),  # byte order mark
        ("\u2066moth\u2069", "moth"),  # isolates
        ("fly\u200e\u200f\u061c", "fly"),  # direction marks
    ],
)
def test_invisible_and_bidirectional_characters_are_stripped(raw, shown) -> None:
    assert sanitize_class_name(raw) == shown


def test_a_spoofed_class_name_merges_with_the_one_it_imitates(tmp_path) -> None:
    root = tmp_path / "spoof"
    for i, cls in enumerate(["bee", "b\u200bee", "ant"]):
        (root / cls).mkdir(parents=True)
        (root / cls / f"{i}.png").write_bytes(png_bytes(i))
    report = import_folder(root, "spoof")
    assert report.counts == {"ant": 1, "bee": 2}
    assert any("merged" in w for w in report.warnings)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda path: path.write_bytes(eps_bytes()), "PostScript/EPS"),
        (lambda path: strip_png(path, 100, 5_000), "too narrow"),
    ],
    ids=["eps", "strip"],
)
def test_refused_images_are_skipped_on_import_and_predict(make, expected, tmp_path, capsys):
    root = make_stripes_dataset(tmp_path / "set", per_class=4)
    make(root / "vertical" / "odd.png")
    report = import_folder(root, "odd")
    assert {s.item: s.reason for s in report.skipped}.keys() == {"vertical/odd.png"}
    assert expected in report.skipped[0].reason
    assert load_manifest("odd").counts() == {"horizontal": 4, "vertical": 4}
    code, out, _ = run_cli(["train", "--data", str(root), *QUICK, "--json"], capsys)
    assert code == 0
    run_id = json.loads(out.strip().splitlines()[-1])["run_id"]
    code, out, err = run_cli(
        ["predict", "--run", run_id, str(root / "vertical" / "odd.png"), "--json"], capsys
    )
    assert "Traceback" not in err
    assert expected in json.loads(out.strip().splitlines()[-1])[0]["error"]


def test_renaming_a_class_to_a_reserved_name_is_refused(tmp_path) -> None:
    from tl_core.data.curate import rename_class

    add_images("ren", "ants", [("a.png", png_bytes(1)), ("b.png", png_bytes(2))])
    with pytest.raises(LabError, match="reserved"):
        rename_class("ren", "ants", "Test")
    assert load_manifest("ren").counts() == {"ants": 2}


def test_the_cli_skips_placeholders_as_the_web_import_does(tmp_path, capsys) -> None:
    root = tmp_path / "set"
    for i, cls in enumerate(["ants", "bees"]):
        (root / cls).mkdir(parents=True)
        (root / cls / f"{i}.png").write_bytes(png_bytes(i))
    (root / "ants" / "imageNotFound.gif").write_bytes(placeholder_gif())
    code, out, _ = run_cli(["data", "import", str(root), "--name", "ph", "--json"], capsys)
    report = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and report["counts"] == {"ants": 1, "bees": 1}
    assert "placeholder" in report["skipped"][0]["reason"]
    gif = root / "ants" / "imageNotFound.gif"
    code, out, _ = run_cli(["data", "add", "ph", "--class", "bees", str(gif), "--json"], capsys)
    assert "placeholder" in json.loads(out.strip().splitlines()[-1])["skipped"][0]["reason"]
