"""The bench command's pieces on tiny data: the tutorial reference loop and the scaled sets.

The benchmarks themselves are commands (`python -m tl_core bench`, README "Speed"), not tests.
"""

from __future__ import annotations

import json
import sys

import pytest

from benchmarks.reference import reference_run
from tl_core.bench import make_scaled_dataset
from tl_core.cli import main
from tl_core.data.folder import scan_dataset


def test_reference_loop_trains_and_reports_its_time(stripes) -> None:
    split = scan_dataset(stripes)
    result = reference_run(
        split, "small_cnn", "scratch", epochs=2, seed=0, device="cpu", lr=0.05, workers=0
    )
    assert set(result) >= {"seconds", "best_val_acc", "final_val_acc", "epoch_seconds"}
    assert len(result["epoch_seconds"]) == 2 and result["seconds"] >= sum(result["epoch_seconds"])
    assert 0.0 <= result["best_val_acc"] <= 1.0


def test_scaled_dataset_keeps_classes_and_proportions(stripes, tmp_path) -> None:
    out = make_scaled_dataset(stripes, 60, tmp_path / "scaled")
    split = scan_dataset(out)
    assert split.classes == ["horizontal", "vertical"]
    counts = dict.fromkeys(split.classes, 0)
    for it in split.train + split.val:
        counts[split.classes[it.label]] += 1
    assert counts == {"horizontal": 30, "vertical": 30}
    assert make_scaled_dataset(stripes, 60, tmp_path / "scaled") == out  # made once


def test_scaled_dataset_reads_sources_through_the_bounded_loader(stripes, tmp_path) -> None:
    from PIL import Image

    # A 400x20 strip: PIL opens it, the lab's loader refuses its aspect ratio.
    for i in range(3):
        Image.new("RGB", (400, 20), (200, 30, 30)).save(stripes / "horizontal" / f"strip{i}.png")
    strips = [i.path for i in scan_dataset(stripes).train if "strip" in i.path]
    assert strips  # the stratified split keeps some for training
    out = make_scaled_dataset(stripes, 60, tmp_path / "scaled")
    made = sorted((out / "horizontal").glob("*.jpg"))
    assert len(made) >= 30  # the class keeps its share of the 60
    for path in made:
        with Image.open(path) as img:
            w, h = img.size
        assert max(w, h) <= 2 * min(w, h), path  # crops of the 40x40 stripes only


def test_bench_rejects_an_unknown_strategy_with_exit_2(stripes, capsys) -> None:
    code = main(["bench", "--data", str(stripes), "--backbone", "small_cnn", "--strategy", "x"])
    assert code == 2
    assert "choose one of" in capsys.readouterr().err


def test_bench_times_both_paths_for_one_epoch(stripes, lab_home, capsys) -> None:
    argv = ["bench", "--data", str(stripes), "--backbone", "small_cnn", "--strategy", "scratch"]
    assert main([*argv, "--epochs", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["epochs"] == 1 and result["seeds"] == [0]
    assert result["reference_seconds"] > 0 and result["lab_seconds"] > 0
    assert result["speedup"] == pytest.approx(result["reference_seconds"] / result["lab_seconds"])
    assert len(result["runs"][0]["reference"]["epoch_seconds"]) == 1


def test_bench_without_the_benchmarks_folder_says_so_in_one_line(
    stripes, lab_home, monkeypatch, capsys
) -> None:
    """An installed package has no benchmarks/: the reference cannot run, the lab's path can."""
    monkeypatch.setitem(sys.modules, "benchmarks.reference", None)  # as if the folder were absent
    argv = ["bench", "--data", str(stripes), "--backbone", "small_cnn", "--strategy", "scratch"]
    assert main([*argv, "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "benchmarks/" in err and "--skip-reference" in err
    assert main([*argv, "--epochs", "1", "--skip-reference", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["reference_seconds"] is None and result["lab_seconds"] > 0
