"""probe_finetune (LP-FT): a linear probe first, then fine-tuning from that head.

Kumar et al. (ICLR 2022, "Fine-Tuning can Distort Pretrained Features and Underperform
Out-of-Distribution") fine-tune from a head that was first trained alone on the frozen
features: a random head sends large, random gradients into the pretrained layers in the
first steps and distorts the features before the head has learned anything; a trained
head does not. Here the probe costs seconds: it is the feature_extractor fast path (the
backbone's features cached once, `probe_epochs` epochs of the head on them). Then every
layer trains from that head on batches of images, as full_finetune does, with the backbone
at `lr * backbone_lr_mult` (parameter groups, `tl_core.train.make_optimizer`).

The probe's configuration is the run's own with `probe_epochs` epochs and no warm-up, so the
probed head is exactly the head a feature_extractor run of `probe_epochs` epochs with the
same seed and settings trains.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from torch import nn

from tl_core.machine import Runtime
from tl_core.progress import Progress, ProgressFn
from tl_core.train import History, TrainConfig, fit

PROBE_MESSAGE = "linear probe (the head on cached features)"


def probe_config(config: TrainConfig) -> TrainConfig:
    """The probe phase's settings: the run's, for `probe_epochs`, without a warm-up."""
    return replace(config, epochs=config.probe_epochs, warmup_epochs=0, channels_last=False)


def probe_head(
    head: nn.Module,
    train_features,
    val_features,
    config: TrainConfig,
    *,
    on_progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    runtime: Runtime | None = None,
) -> History:
    """Train `head` alone on cached features and leave it holding its best epoch's weights.

    Its epochs are reported as `Progress("probe", epoch, epochs, ..., epoch_stats=...)`, one
    step before training, not as the run's epochs: those are the fine-tuning ones that follow.
    """
    probe = probe_config(config)

    def progress(p: Progress) -> None:
        if on_progress is not None and p.epoch_stats is not None:
            on_progress(
                Progress(
                    "probe",
                    p.epoch,
                    probe.epochs,
                    PROBE_MESSAGE,
                    p.epoch,
                    probe.epochs,
                    epoch_stats=p.epoch_stats,
                )
            )

    history = fit(
        head,
        train_features,
        val_features,
        probe,
        on_progress=progress,
        should_stop=should_stop,
        runtime=runtime,
    )
    head.load_state_dict(history.best_state)
    return history
