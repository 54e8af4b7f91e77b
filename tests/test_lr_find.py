"""The learning-rate finder: its curve on a small generated set, its suggestion, its command."""

from __future__ import annotations

import json
import math

import pytest

from tl_core.cli import main
from tl_core.data.shapes import build_shapes
from tl_core.errors import LabError
from tl_core.jobs import RunSpec
from tl_core.lr_find import DIVERGE, LRFindConfig, find_lr, suggest_lr
from tl_core.progress import Progress
from tl_core.train import TrainConfig


@pytest.fixture
def shapes() -> str:
    build_shapes("shapes", per_class=6, val_per_class=2, size=32)
    return "shapes"


def _spec(data: str, backbone: str, strategy: str, **train) -> RunSpec:
    config = TrainConfig(**{"batch_size": 4, "precision": "fp32", **train})
    return RunSpec(data=data, backbone=backbone, strategy=strategy, train=config)


def _check_curve(result: dict, sweep: LRFindConfig) -> None:
    lrs, losses = result["lrs"], result["losses"]
    assert 2 <= len(lrs) == len(losses) <= sweep.num_iter
    assert lrs[0] == pytest.approx(sweep.start_lr)
    growth = (sweep.end_lr / sweep.start_lr) ** (1 / (sweep.num_iter - 1))
    for a, b in zip(lrs, lrs[1:], strict=False):
        assert b / a == pytest.approx(growth)  # exponentially increasing
    if result["stopped"] == "end":
        assert len(lrs) == sweep.num_iter and lrs[-1] == pytest.approx(sweep.end_lr)
    else:
        last = losses[-1]
        assert not math.isfinite(last) or last > DIVERGE * min(losses[:-1])
    assert all(math.isfinite(x) for x in losses[:-1])
    # The smoothed loss is a running average of the raw losses, not the raw losses.
    assert losses[0] == pytest.approx(result["raw_losses"][0])
    assert losses[1:] != pytest.approx(result["raw_losses"][1:])
    suggested = result["suggested_lr"]
    assert suggested is not None
    assert any(suggested * 10 == pytest.approx(lr) for lr in lrs[len(lrs) // 10 :])


def test_the_curve_on_a_small_set_rises_exponentially_and_stops_on_divergence(shapes) -> None:
    sweep = LRFindConfig(start_lr=1e-5, end_lr=100.0, num_iter=60)
    result = find_lr(_spec(shapes, "small_cnn", "scratch", lr=0.01), sweep)
    _check_curve(result, sweep)
    assert result["stopped"] == "diverged"  # lr 100 with momentum cannot stay finite
    assert len(result["lrs"]) < 60
    assert result["strategy"] == "scratch" and result["num_train"] == 24


def test_the_curve_of_a_pretrained_backbone_fine_tuned_with_a_lower_backbone_rate(shapes) -> None:
    sweep = LRFindConfig(start_lr=1e-4, end_lr=1.0, num_iter=6)
    spec = _spec(shapes, "efficientnet_lite0", "full_finetune", batch_size=2, backbone_lr_mult=0.1)
    result = find_lr(spec, sweep)
    _check_curve(result, sweep)
    assert result["backbone_lr_mult"] == 0.1


def test_the_finder_reports_decoding_and_its_sweep_as_progress_events(shapes) -> None:
    events: list[Progress] = []
    sweep = LRFindConfig(start_lr=1e-4, end_lr=1e-2, num_iter=8)
    result = find_lr(_spec(shapes, "small_cnn", "scratch"), sweep, on_progress=events.append)
    assert {e.stage for e in events} == {"decode", "sweep"}
    decode = [e for e in events if e.stage == "decode"]
    assert decode[-1].done == decode[-1].total == 24
    sweeps = [e for e in events if e.stage == "sweep"]
    assert [e.done for e in sweeps] == list(range(1, len(result["lrs"]) + 1))
    assert {e.total for e in sweeps} == {8} and sweeps[0].message == "learning-rate sweep"


def test_suggestion_is_a_tenth_of_the_minimums_rate_past_the_first_tenth() -> None:
    lrs = [10.0 ** (k / 4 - 6) for k in range(30)]
    losses = [1.0 - 0.02 * k for k in range(20)] + [0.7 + 0.5 * k for k in range(10)]
    losses[0] = 0.1  # one lucky early batch is not the minimum
    assert suggest_lr(lrs, losses) == pytest.approx(lrs[19] / 10)
    assert suggest_lr(lrs[:1], losses[:1]) is None


@pytest.mark.parametrize(
    "sweep, words",
    [
        (LRFindConfig(start_lr=1.0, end_lr=0.1), "start lr < end lr"),
        (LRFindConfig(num_iter=1000), "between 5 and 300"),
    ],
)
def test_a_bad_sweep_is_refused_with_what_to_do(sweep, words) -> None:
    with pytest.raises(LabError, match=words):
        sweep.validate()


def test_the_command_prints_lrs_losses_and_a_suggestion_as_json(shapes, capsys) -> None:
    argv = ["lr-find", "--data", shapes, "--backbone", "small_cnn", "--strategy", "scratch"]
    assert main([*argv, "--num-iter", "12", "--batch-size", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(out["lrs"]) == len(out["losses"]) <= 12
    assert out["suggested_lr"] > 0
    assert main([*argv, "--num-iter", "9"]) == 0
    assert "suggested lr:" in capsys.readouterr().out
    assert main([*argv, "--num-iter", "3000"]) == 2
    assert "between 5 and 300" in capsys.readouterr().err


def test_the_experiments_page_plots_the_curve_and_applies_the_suggestion(stripes, monkeypatch):
    from app_fixtures import app_at

    from tl_core.data.sources import import_folder

    monkeypatch.setenv("TL_LAB_NO_WORKER", "1")
    import_folder(stripes, "stripes")
    at = app_at("pages/experiments.py")
    at.selectbox(key="exp_backbone").set_value("small_cnn").run()
    at.multiselect(key="exp_strategies").set_value(["scratch"]).run()
    charts_before = len(at.get("plotly_chart"))
    at.button(key="lr_find_run").click().run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == charts_before + 1  # the loss-vs-lr curve
    result = at.session_state["lr_find_result"]
    assert result["strategy"] == "scratch" and len(result["lrs"]) <= 100
    apply = at.button(key="lr_find_apply")
    assert f"{result['suggested_lr']:.2e}" in apply.label
    apply.click().run()
    assert at.number_input(key="exp_lr").value == pytest.approx(
        float(f"{result['suggested_lr']:.2e}")
    )
