"""The command line of issue 13, item 12: a missing image exits 2, TorchScript export is
quiet, `runs` shows each run's workspace, and a plain folder gets the import's placeholder
check (`imageNotFound.gif` is not a training image)."""

from __future__ import annotations

import json
import warnings

from PIL import Image

from tl_core.cli import main
from tl_core.export import load_export
from tl_core.runs import NewRun, RunStore


def test_predict_with_a_missing_image_is_bad_input(home_with_runs, capsys, tmp_path) -> None:
    code = main(["predict", "--run", home_with_runs[0], str(tmp_path / "missing.jpg")])
    assert code == 2
    assert "image file not found" in capsys.readouterr().err


def test_torchscript_export_and_load_print_no_future_warning(home_with_runs, tmp_path) -> None:
    out = tmp_path / "model.pt"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert (
            main(
                ["export", "--run", home_with_runs[0], "--format", "torchscript"]
                + ["--out", str(out)]
            )
            == 0
        )
        load_export(out, "torchscript")
    assert [w for w in caught if issubclass(w.category, FutureWarning)] == []


def test_runs_table_has_a_workspace_column(capsys) -> None:
    store = RunStore()
    for workspace in ("team-a", ""):
        new = NewRun("x", "small_cnn", "scratch", {"train": {"epochs": 1}}, workspace=workspace)
        store.create_group([new])
    assert main(["runs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["run_id", "workspace"]
    assert [line.split()[1] for line in lines[2:4]] == ["(default)", "team-a"]


def test_training_on_a_folder_skips_a_placeholder_as_the_import_does(stripes, capsys) -> None:
    Image.new("RGB", (40, 40), (200, 200, 200)).save(stripes / "vertical" / "imageNotFound.gif")
    args = ["train", "--data", str(stripes), "--backbone", "small_cnn", "--strategy", "scratch"]
    assert main([*args, "--epochs", "1", "--batch-size", "8", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["num_train"] + result["num_val"] == 32  # the 32 stripes, not the placeholder
