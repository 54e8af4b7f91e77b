"""The CLI contract: commands, flags, JSON fields and error exits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tl_core.cli import main
from tl_core.evaluate import load_trained
from tl_core.export import load_export
from tl_core.runs import RunStore

RUN_FIELDS = {
    "run_id", "status", "backbone", "strategy", "best_val_acc", "final_val_acc", "epochs",
    "train_seconds", "num_train", "num_val", "num_classes", "trainable_params", "total_params",
}  # fmt: skip
QUICK = ["--backbone", "small_cnn", "--epochs", "2", "--batch-size", "8", "--lr", "0.05"]


def cli(*args: str, env_home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TL_LAB_HOME": str(env_home)}
    return subprocess.run(
        [sys.executable, "-m", "tl_core", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def last_json(stdout: str):
    return json.loads(stdout.strip().splitlines()[-1])


def test_train_runs_show_predict_through_the_real_command(stripes, lab_home) -> None:
    done = cli(
        "train",
        "--data",
        str(stripes),
        *QUICK,
        "--strategy",
        "scratch",
        "--json",
        env_home=lab_home,
    )
    assert done.returncode == 0, done.stderr
    result = last_json(done.stdout)
    assert set(result) >= RUN_FIELDS
    assert result["status"] == "done" and result["epochs"] == 2 and result["num_classes"] == 2
    assert result["num_train"] + result["num_val"] == 32
    assert "epoch 2/2" in done.stderr  # progress goes to stderr

    listed = cli("runs", "--json", env_home=lab_home)
    runs = last_json(listed.stdout)
    assert [r["run_id"] for r in runs] == [result["run_id"]]
    assert set(runs[0]) >= RUN_FIELDS

    shown = last_json(cli("show", result["run_id"], "--json", env_home=lab_home).stdout)
    assert len(shown["history"]) == 2 and shown["classes"] == ["horizontal", "vertical"]

    image = next((stripes / "vertical").iterdir())
    predicted = cli(
        "predict",
        "--run",
        result["run_id"],
        str(image),
        "--top-k",
        "2",
        "--json",
        env_home=lab_home,
    )
    assert predicted.returncode == 0, predicted.stderr
    (entry,) = last_json(predicted.stdout)
    assert [t["class"] for t in entry["top"]] in (
        ["vertical", "horizontal"],
        ["horizontal", "vertical"],
    )
    assert abs(sum(t["prob"] for t in entry["top"]) - 1) < 1e-4


def test_compare_makes_one_group_with_a_run_per_strategy_and_seed(stripes, capsys) -> None:
    code = main(
        [
            "compare",
            "--data",
            str(stripes),
            *QUICK,
            "--strategies",
            "scratch,scratch",
            "--seeds",
            "2",
            "--json",
        ]
    )
    assert code == 0
    results = last_json(capsys.readouterr().out)
    assert len(results) == 4
    assert sorted(r["seed"] for r in results) == [0, 0, 1, 1]
    assert len({r["group_id"] for r in results}) == 1
    assert all(set(r) >= RUN_FIELDS for r in results)


@pytest.mark.parametrize("fmt", ["state_dict", "torchscript", "onnx"])
def test_export_reloads_with_the_same_predictions(stripes, tmp_path, capsys, fmt) -> None:
    assert main(["train", "--data", str(stripes), *QUICK, "--strategy", "scratch", "--json"]) == 0
    run_id = last_json(capsys.readouterr().out)["run_id"]
    out = tmp_path / f"model.{fmt}"
    assert main(["export", "--run", run_id, "--format", fmt, "--out", str(out), "--json"]) == 0
    info = json.loads(Path(f"{out}.json").read_text())
    assert info["classes"] == ["horizontal", "vertical"]
    assert info["preprocessing"]["input_size"] == 32
    trained = load_trained(RunStore(), run_id)
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        expected = trained.model(x).numpy()
    np.testing.assert_allclose(load_export(out, fmt)(x), expected, rtol=1e-4, atol=1e-5)


BAD_INPUT = [
    (["train", "--data", "/no/such/folder", "--backbone", "small_cnn", "--strategy", "scratch"], "not found"),
    (["train", "--data", "{data}", "--backbone", "resnet50", "--strategy", "scratch"], "resnet18, vgg16"),
    (["train", "--data", "{data}", "--backbone", "small_cnn", "--strategy", "fine"], "feature_extractor, partial_finetune"),
    (["train", "--data", "{data}", "--backbone", "small_cnn", "--strategy", "scratch", "--epochs", "0"], "at least 1"),
    (["train", "--data", "{data}", "--backbone", "small_cnn", "--strategy", "scratch", "--lr", "-1"], "learning rate"),
    (["train", "--data", "{data}", "--backbone", "small_cnn", "--strategy", "scratch", "--lr", "abc"], "expected a number"),
    (["train", "--data", "{data}", "--backbone", "small_cnn", "--strategy", "scratch", "--per-class", "0"], "at least 1"),
    (["train", "--data", "{data}", "--backbone", "small_cnn", "--strategy", "feature_extractor"], "--init-from"),
    (["train", "--data", "{data}", "--backbone", "resnet18", "--strategy", "partial_finetune", "--trainable-blocks", "9"], "between 1 and 5"),
    (["train", "--data", "{single}", "--backbone", "small_cnn", "--strategy", "scratch"], "single class"),
    (["train", "--data", "{empty}", "--backbone", "small_cnn", "--strategy", "scratch"], "no class folders"),
    (["compare", "--data", "{data}", "--backbone", "small_cnn", "--strategies", "scratch,nope"], "unknown strategy"),
    (["show", "missing-run"], "no run with id"),
    (["predict", "--run", "missing-run", "x.jpg"], "no run with id"),
    (["export", "--run", "missing-run", "--format", "tflite", "--out", "x"], "invalid choice"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "expected"), BAD_INPUT, ids=[" ".join(a[:1] + a[-2:]) for a, _ in BAD_INPUT]
)
def test_bad_input_exits_2_with_one_clear_line(argv, expected, stripes, tmp_path, capsys) -> None:
    single = tmp_path / "single" / "only"
    single.mkdir(parents=True)
    for p in list((stripes / "vertical").iterdir())[:3]:
        (single / p.name).write_bytes(p.read_bytes())
    (tmp_path / "empty").mkdir()
    argv = [a.format(data=stripes, single=single.parent, empty=tmp_path / "empty") for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        raise SystemExit(main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and expected in err
    assert "Traceback" not in err


def test_bad_input_through_the_real_command_has_no_traceback(lab_home) -> None:
    done = cli(
        "train",
        "--data",
        "/nowhere",
        "--backbone",
        "vgg16",
        "--strategy",
        "scratch",
        env_home=lab_home,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
    assert "data set not found" in done.stderr


def test_train_flags_are_the_config_dataclass_fields() -> None:
    from tl_core.cli import build_parser
    from tl_core.cli.options import config_from_args
    from tl_core.jobs import RunSpec
    from tl_core.models import BACKBONES
    from tl_core.strategies import STRATEGIES

    base = ["train", "--data", "d", "--backbone", "small_cnn", "--strategy", "scratch"]
    parser = build_parser()
    assert config_from_args(RunSpec, parser.parse_args(base)) == RunSpec(
        "d", "small_cnn", "scratch"
    )
    more = ["--epochs", "3", "--optimizer", "adam", "--per-class", "4", "--no-fast"]
    spec = config_from_args(RunSpec, parser.parse_args([*base, *more]))
    assert (spec.train.epochs, spec.train.optimizer, spec.per_class, spec.fast) == (
        3,
        "adam",
        4,
        False,
    )
    helps = parser._subparsers._group_actions[0].choices["train"].format_help()
    assert all(name in helps for name in [*BACKBONES, *STRATEGIES])


def test_a_new_config_field_is_a_new_flag(capsys) -> None:
    from dataclasses import dataclass, field

    from tl_core.cli.common import Parser
    from tl_core.cli.options import add_config_options, config_from_args

    @dataclass(frozen=True)
    class Demo:
        name: str = field(metadata={"help": "what it is called"})
        size: int = field(default=2, metadata={"min": 1})
        mode: str = field(default="a", metadata={"choices": {"a": 1, "b": 2}})
        loud: bool = False
        cached: bool = True
        hidden: int = field(default=0, metadata={"cli": False})

    parser = Parser(prog="demo")
    add_config_options(parser, Demo)
    assert config_from_args(Demo, parser.parse_args(["--name", "x"])) == Demo("x")
    argv = ["--name", "x", "--size", "5", "--mode", "b", "--loud", "--no-cached"]
    assert config_from_args(Demo, parser.parse_args(argv)) == Demo("x", 5, "b", True, False)
    for bad, message in (
        (["--name", "x", "--mode", "c"], "choose one of: a, b"),
        (["--name", "x", "--size", "0"], "at least 1"),
        (["--name", "x", "--hidden", "1"], "unrecognized arguments"),
        ([], "--name"),
    ):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
        assert message in capsys.readouterr().err


def test_progress_bars_take_the_one_progress_event(capsys) -> None:
    from tl_core.cli.common import Bars
    from tl_core.progress import EpochStats, Progress

    bars = Bars("[1/2] ")
    bars.progress(Progress("decode", 3, 10, "decoding images"))
    assert bars.key == ("status", "decoding images")
    bars.progress(Progress("train", 1, 2, "training", epoch=1, epochs=2, loss=0.5, acc=0.5))
    assert bars.key == ("epoch", 1)
    stats = EpochStats(1, 0.5, 0.75, 0.4, 0.8, 1.0, 0.01)
    bars.progress(Progress("train", 2, 2, "training", 1, 2, 0.5, 0.75, stats))
    assert bars.bar is None  # the epoch's bar closes when its line is printed
    err = capsys.readouterr().err
    assert (
        "[1/2] epoch 1/2: train_loss 0.5000 train_acc 0.7500 val_loss 0.4000 val_acc 0.8000" in err
    )
