"""Hostile input, second round (issue 14): files that are not weights where weights belong,
numbers out of any range, NaN and infinity; each ends in exit 2 and one line, no traceback."""

from __future__ import annotations

import shutil

import pytest
import torch
from test_hostile import QUICK, assert_one_clear_line, run_cli

from tl_core.data.download import FetchPolicy
from tl_core.errors import LabError
from tl_core.runs import RunStore


@pytest.fixture
def damaged_runs(trained_home, tmp_path, monkeypatch) -> list[str]:
    """A copy of the trained home whose first run's weights are garbage and whose second
    run's weights are a torch file that holds no tensors."""
    home, ids = trained_home
    copy = tmp_path / "home-copy"
    shutil.copytree(home, copy)
    monkeypatch.setenv("TL_LAB_HOME", str(copy))
    store = RunStore()
    (store.run_dir(ids[0]) / "weights.pt").write_bytes(b"PK\x03\x04 this is not a weights file")
    torch.save({"hello": "world"}, store.run_dir(ids[1]) / "weights.pt")
    return ids


@pytest.mark.parametrize("which", [0, 1], ids=["garbage", "no tensors"])
def test_predict_export_and_init_from_a_file_that_is_not_weights(
    which, damaged_runs, stripes, tmp_path, capsys
) -> None:
    run_id = damaged_runs[which]
    image = next(stripes.rglob("*.png"))
    expected = "train the run again"
    code, _, err = run_cli(["predict", "--run", run_id, str(image)], capsys)
    assert_one_clear_line(code, err, expected)
    out = tmp_path / "model.pt"
    code, _, err = run_cli(
        ["export", "--run", run_id, "--format", "state_dict", "--out", str(out)], capsys
    )
    assert_one_clear_line(code, err, expected)
    assert not out.exists()
    argv = ["train", "--data", str(stripes), *QUICK, "--init-from", run_id]
    argv[argv.index("scratch")] = "feature_extractor"
    code, _, err = run_cli(argv, capsys)
    assert_one_clear_line(code, err, expected)


NUMBERS = [
    (["train", *QUICK, "--seed", "99999999999999999999"], "seed must be a whole number from 0"),
    (["train", *QUICK, "--seed", "-1"], "seed must be a whole number from 0"),
    (["compare", *QUICK[:2], "--strategies", "scratch", "--seed", "4294967295", "--seeds", "2"],
     "seed must be a whole number from 0"),
    (["data", "urls", "LIST", "--name", "x", "--max-mb", "nan"], "finite number above 0"),
    (["data", "urls", "LIST", "--name", "x", "--timeout", "nan"], "finite number above 0"),
    (["data", "urls", "LIST", "--name", "x", "--timeout", "inf"], "finite number above 0"),
    (["data", "urls", "LIST", "--name", "x", "--timeout", "-1"], "finite number above 0"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "expected"), NUMBERS, ids=[" ".join(a) for a, _ in NUMBERS])
def test_numbers_out_of_range_are_one_clear_line(argv, expected, stripes, tmp_path, capsys):
    listing = tmp_path / "urls.txt"
    listing.write_text("http://127.0.0.1:9/a.png\n")
    argv = [str(listing) if a == "LIST" else a for a in argv]
    if argv[0] in ("train", "compare"):
        argv[1:1] = ["--data", str(stripes)]
    code, _, err = run_cli(argv, capsys)
    assert_one_clear_line(code, err, expected)
    assert "Traceback" not in err
    assert RunStore().list() == []


@pytest.mark.parametrize("field", ["connect_timeout", "read_timeout", "total_timeout"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), 0, -1.0])
def test_a_fetch_policy_refuses_timeouts_that_never_end(field, value) -> None:
    with pytest.raises(LabError, match=f"{field} must be a positive finite number"):
        FetchPolicy(**{field: value})
