"""Fine-tuning options (backbone lr multiplier, frozen BatchNorm, warm-up, one-cycle) and the
probe-then-fine-tune strategy."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from tl_core.errors import LabError
from tl_core.models import build_model, get_backbone, head_parameter_names, set_train_mode
from tl_core.train import TrainConfig, fit, lr_factor, make_optimizer, make_scheduler


def _tiny_data(n: int = 16, size: int = 32, seed: int = 0) -> TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=gen)
    y = torch.arange(n) % 2
    return TensorDataset(x, y)


def _small_cnn():
    torch.manual_seed(0)
    model = build_model("small_cnn", 2, "scratch").model
    return model, head_parameter_names(model, get_backbone("small_cnn"))


def _config(**kw) -> TrainConfig:
    """A small config at a constant rate unless a test names a schedule."""
    base = dict(
        epochs=1, batch_size=8, lr=0.05, precision="fp32", channels_last=False, schedule="none"
    )
    return TrainConfig(**{**base, **kw})


def _bn_stats(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        k: v.clone()
        for k, v in model.state_dict().items()
        if k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    }


# ---------------------------------------------------------------------------- BatchNorm


def test_frozen_bn_keeps_running_statistics_bit_identical_while_the_layers_train() -> None:
    model, _ = _small_cnn()
    before = _bn_stats(model)
    weights_before = {k: v.clone() for k, v in model.state_dict().items() if k not in before}
    assert before, "small_cnn has BatchNorm layers"
    fit(model, _tiny_data(), _tiny_data(8, seed=1), _config(bn="frozen"))
    after = _bn_stats(model)
    for name, value in before.items():
        assert torch.equal(after[name], value), name
    # Its scale and shift (and every other weight) still learned.
    changed = [k for k, v in model.state_dict().items() if k in weights_before]
    assert any(not torch.equal(model.state_dict()[k], weights_before[k]) for k in changed)


def test_bn_train_moves_running_statistics() -> None:
    model, _ = _small_cnn()
    before = _bn_stats(model)
    fit(model, _tiny_data(), _tiny_data(8, seed=1), _config(bn="train"))
    after = _bn_stats(model)
    assert any(not torch.equal(after[k], v) for k, v in before.items())


def test_frozen_bn_keeps_batchnorm_in_eval_mode_on_top_of_the_strategys_own_rule() -> None:
    from tl_core.train import train_mode_setter

    model, _ = _small_cnn()
    train_mode_setter(_config(bn="frozen"), set_train_mode)(model)
    assert model.training
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns and not any(bn.training for bn in bns)
    train_mode_setter(_config(bn="train"), set_train_mode)(model)
    assert all(bn.training for bn in bns)


# ---------------------------------------------------------------------------- lr multiplier


def test_backbone_parameter_groups_get_the_multiplied_rate() -> None:
    model, head = _small_cnn()
    opt = make_optimizer(model, _config(backbone_lr_mult=0.1), head)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05, 0.005])
    head_ids = {id(p) for n, p in model.named_parameters() if n in head}
    assert {id(p) for p in opt.param_groups[0]["params"]} == head_ids
    assert not head_ids & {id(p) for p in opt.param_groups[1]["params"]}


def _one_step_deltas(mult: float) -> tuple[dict[str, torch.Tensor], set[str]]:
    model, head = _small_cnn()
    model.double()  # float64, so that a small step survives the subtraction below
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    config = _config(momentum=0.0, backbone_lr_mult=mult, batch_size=16, bn="frozen")
    x, y = _tiny_data(16).tensors
    data = TensorDataset(x.double(), y)
    fit(model, data, data, config, head_names=head)  # one batch of 16: exactly one SGD step
    return {n: p.detach() - before[n] for n, p in model.named_parameters()}, head


def test_the_multiplier_scales_the_backbones_step_and_leaves_the_heads_alone() -> None:
    full, head = _one_step_deltas(1.0)
    tenth, _ = _one_step_deltas(0.1)
    for name, delta in full.items():
        expected = delta if name in head else 0.1 * delta
        assert torch.allclose(tenth[name], expected, rtol=1e-6, atol=1e-12), name
    assert any(delta.abs().sum() > 0 for n, delta in full.items() if n not in head)


# ---------------------------------------------------------------------------- schedules


def test_warmup_rises_linearly_batch_by_batch_then_holds() -> None:
    config = _config(epochs=5, warmup_epochs=2)
    factors = [lr_factor(s, config, steps_per_epoch=5) for s in range(25)]
    assert factors[:10] == pytest.approx([(k + 1) / 10 for k in range(10)])
    assert factors[10:] == pytest.approx([1.0] * 15)


def test_warmup_multiplies_the_cosine_and_step_schedules() -> None:
    cos = _config(epochs=4, warmup_epochs=1, schedule="cosine")
    assert lr_factor(0, cos, 4) == pytest.approx(0.25)
    assert lr_factor(8, cos, 4) == pytest.approx((1 + math.cos(math.pi * 2 / 4)) / 2)
    step = _config(epochs=6, warmup_epochs=1, schedule="step", step_size=2, gamma=0.5)
    assert [lr_factor(s, step, 1) for s in range(6)] == pytest.approx(
        [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    )


@pytest.mark.parametrize("schedule", ["step", "cosine"])
def test_without_warmup_the_epoch_schedules_match_torchs_per_epoch_schedulers(schedule) -> None:
    config = _config(epochs=9, schedule=schedule, step_size=3, gamma=0.1)
    param = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    ref = (
        torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.1)
        if schedule == "step"
        else torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=9)
    )
    expected = []
    for _ in range(9):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    ours = [lr_factor(e * 4 + 3, config, steps_per_epoch=4) for e in range(9)]
    assert ours == pytest.approx(expected, abs=1e-12)


def test_onecycle_rises_from_a_25th_to_the_peak_then_anneals_to_almost_zero() -> None:
    config = _config(epochs=10, schedule="onecycle")
    f = [lr_factor(s, config, steps_per_epoch=10) for s in range(100)]
    peak = f.index(max(f))
    assert f[0] == pytest.approx(1 / 25)
    assert max(f) == pytest.approx(1.0)
    assert peak == 30  # 30 % of the steps without a warm-up
    assert all(a <= b for a, b in zip(f[:peak], f[1 : peak + 1], strict=True))
    assert all(a >= b for a, b in zip(f[peak:-1], f[peak + 1 :], strict=True))
    assert f[-1] < 0.01
    warm = _config(epochs=10, schedule="onecycle", warmup_epochs=2)
    g = [lr_factor(s, warm, steps_per_epoch=10) for s in range(100)]
    assert g.index(max(g)) == 20


def test_scheduler_keeps_the_ratio_between_parameter_groups() -> None:
    model, head = _small_cnn()
    config = _config(epochs=3, schedule="onecycle", backbone_lr_mult=0.2)
    opt = make_optimizer(model, config, head)
    sched = make_scheduler(opt, config, steps_per_epoch=4)
    for _ in range(7):
        opt.step()
        sched.step()
        head_lr, body_lr = (g["lr"] for g in opt.param_groups)
        assert body_lr == pytest.approx(0.2 * head_lr)
    constant = _config(schedule="none")
    assert make_scheduler(opt, constant, 4) is None  # constant rate: no scheduler at all


def test_fit_records_the_warmed_up_rate_of_each_epochs_first_batch() -> None:
    model, _ = _small_cnn()
    history = fit(
        model,
        _tiny_data(16),
        _tiny_data(8),
        _config(epochs=3, warmup_epochs=2, batch_size=8, schedule="none"),
    )
    # 2 batches an epoch, 4 warm-up steps: the first batches of epochs 1-3 run at 1/4, 3/4, 1.
    assert [e.lr for e in history.epochs] == pytest.approx([0.05 / 4, 0.05 * 3 / 4, 0.05])


@pytest.mark.parametrize(
    "kw, words",
    [
        ({"bn": "sometimes"}, "choose one of: train, frozen"),
        ({"warmup_epochs": 3, "epochs": 3}, "warm-up epochs"),
        ({"warmup_epochs": -1}, "warm-up epochs"),
        ({"schedule": "linear"}, "none, step, cosine, onecycle"),
        ({"probe_epochs": 0}, "probe epochs"),
        ({"backbone_lr_mult": 0}, "backbone lr multiplier"),
    ],
)
def test_bad_options_are_refused_once_with_the_valid_choices(kw, words) -> None:
    with pytest.raises(LabError, match=words):
        TrainConfig(**kw).validate()


def test_a_run_resumed_mid_schedule_ends_exactly_as_an_uninterrupted_one() -> None:
    config = _config(epochs=3, schedule="onecycle", warmup_epochs=1, batch_size=8)
    data, val = _tiny_data(16), _tiny_data(8, seed=1)
    snapshots: list[dict] = []
    model, _ = _small_cnn()
    # (deep copies: a snapshot shares the optimizer's buffers until jobs.py writes it out)
    whole = fit(model, data, val, config, checkpoint=lambda s: snapshots.append(copy.deepcopy(s)))
    again, _ = _small_cnn()
    resumed = fit(again, data, val, config, resume=snapshots[0])
    assert [e.lr for e in resumed.epochs] == [e.lr for e in whole.epochs]
    for k, v in model.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k


# ---------------------------------------------------------------------------- probe_finetune


def _run(spec, on_progress=None):
    from tl_core.jobs import execute_run, queue_runs
    from tl_core.runs import RunStore

    store = RunStore()
    (run_id,) = queue_runs(store, [spec])
    return execute_run(store, run_id, on_progress=on_progress)


def _weights(run_id: str) -> dict[str, torch.Tensor]:
    from tl_core.jobs import WEIGHTS_FILE
    from tl_core.runs import RunStore

    path = RunStore().run_dir(run_id, create=False) / WEIGHTS_FILE
    return torch.load(path, weights_only=True)


def test_probe_finetune_probes_the_head_as_feature_extractor_would_then_tunes_every_layer(
    stripes, monkeypatch
) -> None:
    from dataclasses import replace

    import tl_core.probe as probe
    from tl_core.evaluate import load_trained, predict_files, validation_predictions
    from tl_core.jobs import RunSpec
    from tl_core.runs import RunStore
    from tl_core.strategies import STRATEGIES

    assert "probe_finetune" in STRATEGIES
    calls = []
    real_fit = probe.fit

    def spy(module, *args, **kwargs):
        history = real_fit(module, *args, **kwargs)
        calls.append((module, history))
        return history

    monkeypatch.setattr(probe, "fit", spy)
    backbone = get_backbone("efficientnet_lite0")
    config = TrainConfig(
        epochs=1, probe_epochs=2, batch_size=8, precision="fp32", backbone_lr_mult=0.1
    )
    spec = RunSpec(
        data=str(stripes),
        backbone="efficientnet_lite0",
        strategy="probe_finetune",
        train=config,
        augment="none",
    )
    events = []
    record = _run(spec, on_progress=events.append)
    assert record["status"] == "done"
    ((probed_module, probe_history),) = calls
    # The probe's epochs are reported as a step before training (bench times them too).
    ended = [(e.stage, e.epoch) for e in events if e.epoch_stats is not None]
    assert ended == [("probe", 1), ("probe", 2), ("train", 1)]  # one probe phase, on the head alone
    assert isinstance(probed_module, nn.Linear) and len(probe_history.epochs) == 2
    probed = {f"{backbone.head}.{k}": v for k, v in probe_history.best_state.items()}
    # The run's epochs are the fine-tuning ones, and every parameter trained in them.
    assert len(RunStore().epochs(record["id"])) == 1
    assert record["trainable_params"] == record["total_params"]

    # The probed head is exactly a feature_extractor run's head with the same seed.
    fe = _run(replace(spec, strategy="feature_extractor", train=replace(config, epochs=2)))
    fe_weights = _weights(fe["id"])
    for name, value in probed.items():
        assert torch.equal(fe_weights[name], value), name

    # Fine-tuning then moved the backbone (ImageNet weights: the feature_extractor run's)
    # and the head on from the probe.
    tuned = _weights(record["id"])
    stem = "_conv_stem.weight"
    assert not torch.equal(tuned[stem], fe_weights[stem])
    assert any(not torch.equal(tuned[k], v) for k, v in probed.items())

    # The saved model gives the run's own validation predictions.
    store = RunStore()
    preds = validation_predictions(store, record["id"])
    again = predict_files(load_trained(store, record["id"]), [it["path"] for it in preds["items"]])
    assert [r["top"][0]["index"] for r in again] == [it["pred"] for it in preds["items"]]


def test_the_experiments_page_queues_the_fine_tuning_options_and_probe_finetune(
    stripes, monkeypatch
) -> None:
    from app_fixtures import app_at

    from tl_core.data.sources import import_folder
    from tl_core.runs import RunStore

    monkeypatch.setenv("TL_LAB_NO_WORKER", "1")
    import_folder(stripes, "stripes")
    at = app_at("pages/experiments.py")
    assert "probe_finetune" in at.multiselect(key="exp_strategies").options
    at.multiselect(key="exp_strategies").set_value(["full_finetune", "probe_finetune"]).run()
    at.number_input(key="exp_backbone_lr_mult").set_value(0.1).run()
    at.selectbox(key="exp_bn").set_value("frozen").run()
    at.number_input(key="exp_warmup").set_value(1).run()
    at.number_input(key="exp_probe_epochs").set_value(3).run()
    assert not at.exception
    assert list(at.dataframe[0].value["strategy"]) == ["full_finetune", "probe_finetune"]
    at.button(key="exp_start").click().run()
    queued = RunStore().queue()
    assert [r["strategy"] for r in queued] == ["full_finetune", "probe_finetune"]
    for run in queued:
        train = run["config"]["train"]
        assert (train["backbone_lr_mult"], train["bn"]) == (0.1, "frozen")
        assert (train["warmup_epochs"], train["probe_epochs"]) == (1, 3)


def test_the_learn_page_explains_probe_finetune_and_runs_its_lesson(monkeypatch) -> None:
    from app_fixtures import app_at

    from tl_core.runs import RunStore

    monkeypatch.setenv("TL_LAB_NO_WORKER", "1")
    at = app_at("pages/learn.py")
    assert not at.exception
    text = " ".join(m.value for m in at.markdown)
    assert "probe_finetune" in text and "linear probe" in text
    at.button(key="learn_run_probe_finetune").click().run()
    queued = RunStore().queue()
    assert [r["strategy"] for r in queued] == ["full_finetune", "probe_finetune"]
    assert [r["config"]["train"]["backbone_lr_mult"] for r in queued] == [1.0, 0.1]


# ---------------------------------------------------------------------------- time to accuracy


def test_time_to_accuracy_is_the_end_of_the_first_epoch_at_the_target() -> None:
    from tl_core.bench import time_to_acc

    ends = [(3.0, None), (5.0, 0.90), (7.5, 0.96), (9.0, 0.97)]
    assert time_to_acc(ends, 0.95) == 7.5
    assert time_to_acc(ends, 0.90) == 5.0
    assert time_to_acc(ends, 0.99) is None


def test_bench_reports_time_to_accuracy_for_both_sides(stripes, capsys) -> None:
    import json

    from tl_core.cli import main

    argv = ["bench", "--data", str(stripes), "--backbone", "small_cnn", "--strategy", "scratch"]
    assert main([*argv, "--epochs", "2", "--target-acc", "0.01", "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert result["target_acc"] == 0.01
    (run,) = result["runs"]
    for side in ("lab", "reference"):
        # Any accuracy reaches 1 %: the time is when the first validated epoch ended.
        first_end = run[side]["epoch_ends"][0][0]
        assert result[f"{side}_time_to_acc"] == run[side]["time_to_acc"] == first_end
        assert 0 < first_end <= result[f"{side}_seconds"]
    assert "time to 1.0% val acc" in captured.err
    assert main([*argv, "--epochs", "1", "--target-acc", "1.5", "--skip-reference"]) == 2
    assert "--target-acc" in capsys.readouterr().err


def test_probe_finetunes_estimate_adds_the_feature_pass_and_probe_to_fine_tuning() -> None:
    from dataclasses import replace

    from tl_core.jobs import RunSpec
    from tl_core.schedule import estimate_seconds

    config = _config(epochs=3, probe_epochs=3)  # as many head epochs as the extractor
    full = RunSpec("d", "efficientnet_lite0", "full_finetune", train=config)
    probe = replace(full, strategy="probe_finetune")
    extractor = replace(full, strategy="feature_extractor")
    t_full, t_probe, t_fe = (estimate_seconds(s, 100, 40).seconds for s in (full, probe, extractor))
    assert t_full < t_probe < t_full + t_fe  # a feature pass and head epochs more than full


# ---------------------------------------------------------------------------- the study


def test_the_data_efficiency_study_runs_each_strategy_at_its_stated_settings(stripes) -> None:
    from tl_core.recipes import plan
    from tl_core.recipes.published import EFFICIENCY_TRAIN

    specs = plan("data-efficiency", str(stripes), offline=True, seeds=1).specs
    by_strategy = {s.strategy: s.train for s in specs}
    assert set(by_strategy) == {"scratch", "feature_extractor", "full_finetune", "probe_finetune"}
    for strategy, train in by_strategy.items():
        assert train == EFFICIENCY_TRAIN[strategy]
        assert train.validate_every == 1  # every epoch: best and final both mean something
    tuned, probed = by_strategy["full_finetune"], by_strategy["probe_finetune"]
    assert (tuned.lr, tuned.batch_size, tuned.schedule, tuned.bn) == (
        0.001,
        16,
        "onecycle",
        "frozen",
    )
    assert tuned.backbone_lr_mult == 1.0
    # probe_finetune's probe is the study's feature-extractor head (its lr, batch, schedule
    # and epochs), then every layer with the backbone at a fiftieth of that rate.
    head = by_strategy["feature_extractor"]
    assert (probed.lr, probed.batch_size, probed.schedule) == (head.lr, head.batch_size, "none")
    assert probed.probe_epochs == head.epochs
    assert (probed.backbone_lr_mult, probed.bn) == (0.02, "frozen")


def test_the_efficiency_curve_reports_best_and_final_accuracy() -> None:
    from tl_core.recipes import efficiency_curve

    rows = [
        {
            "strategy": "full_finetune",
            "per_class": 5,
            "train_per_class": 5,
            "status": "done",
            "best_val_acc": best,
            "final_val_acc": final,
        }
        for best, final in ((0.9, 0.8), (0.92, 0.9), (0.94, 0.85))
    ]
    (point,) = efficiency_curve(rows)
    assert point["mean"] == pytest.approx(0.92) and point["std"] == pytest.approx(0.02)
    assert point["final_mean"] == pytest.approx(0.85) and point["final_std"] == pytest.approx(0.05)
