"""One-click experiments of the web app: the "classroom quick" comparison and the Learn page's
demonstrations. Each is a small set of runs on the built-in `shapes` set (built on first
use, no network), sized to finish in a minute or two on a laptop CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from tl_core.jobs import RunSpec
from tl_core.train import TrainConfig

SHAPES_PER_CLASS = 10  # training images per shape in the presets' data set


@dataclass(frozen=True)
class Variant:
    """One run of a preset: a name and what differs from the preset's base spec."""

    name: str
    strategy: str
    backbone: str = "efficientnet_lite0"
    epochs: int = 2
    augment: str = "none"
    momentum: float = 0.9
    batch_size: int = 16
    lr: float = 0.001
    per_class: int | None = None
    backbone_lr_mult: float = 1.0


@dataclass(frozen=True)
class Preset:
    key: str
    title: str
    idea: str  # what the runs show, in one sentence
    variants: tuple[Variant, ...] = field(default_factory=tuple)

    def specs(self, data: str, seed: int = 0) -> list[RunSpec]:
        return [
            RunSpec(
                data=data,
                backbone=v.backbone,
                strategy=v.strategy,
                train=TrainConfig(
                    epochs=v.epochs,
                    batch_size=v.batch_size,
                    lr=v.lr,
                    momentum=v.momentum,
                    backbone_lr_mult=v.backbone_lr_mult,
                    seed=seed,
                ),
                augment=v.augment,
                per_class=v.per_class,
                trainable_blocks=2,
                name=f"{self.title}: {v.name}",
            )
            for v in self.variants
        ]


# A few fast steps: small batches and a larger learning rate than the classic 0.001.
_FINETUNE = {"epochs": 3, "batch_size": 8, "lr": 0.005}

PRESETS: dict[str, Preset] = {
    p.key: p
    for p in (
        Preset(
            "classroom_quick",
            "Classroom quick",
            "A pretrained network as a fixed feature extractor against fine-tuning it, on a "
            "small set: both learn the shapes in seconds.",
            (
                Variant("feature extractor", "feature_extractor", epochs=8),
                Variant("fine-tuning", "full_finetune", **_FINETUNE),
            ),
        ),
        Preset(
            "strategies",
            "Frozen, in-between, fine-tuned",
            "How much of the pretrained network to train: only the new head, the last layer "
            "groups too, or everything.",
            (
                Variant("feature extractor", "feature_extractor", epochs=8),
                Variant("partial fine-tuning", "partial_finetune", **_FINETUNE),
                Variant("full fine-tuning", "full_finetune", **_FINETUNE),
            ),
        ),
        Preset(
            "probe_finetune",
            "Probe, then fine-tune",
            "Fine-tuning from a random head against fine-tuning from a head first trained "
            "on the frozen features (LP-FT), the backbone at a tenth of the head's rate.",
            (
                Variant("fine-tuning", "full_finetune", **_FINETUNE),
                Variant(
                    "probe, then fine-tune", "probe_finetune", backbone_lr_mult=0.1, **_FINETUNE
                ),
            ),
        ),
        Preset(
            "small_data",
            "Small data needs transfer",
            "With five pictures per class, random weights learn next to nothing; ImageNet "
            "features already separate the classes.",
            (
                Variant("scratch, 5 per class", "scratch", epochs=3, per_class=5),
                Variant(
                    "feature extractor, 5 per class", "feature_extractor", epochs=8, per_class=5
                ),
            ),
        ),
        Preset(
            "augmentation",
            "Augmentation",
            "Random crops and flips show the network new versions of the same pictures, so "
            "it memorises less and generalises more.",
            (
                Variant("no augmentation", "feature_extractor", epochs=8),
                Variant("crop and flip", "feature_extractor", epochs=8, augment="crop_flip"),
            ),
        ),
        Preset(
            "momentum",
            "SGD, mini-batches and momentum",
            "The same head trained with plain SGD, with momentum, and with tiny batches: "
            "momentum speeds up the descent; small batches take more, noisier steps.",
            (
                Variant("momentum 0", "feature_extractor", epochs=8, momentum=0.0),
                Variant("momentum 0.9", "feature_extractor", epochs=8),
                Variant("momentum 0.9, batch 4", "feature_extractor", epochs=8, batch_size=4),
            ),
        ),
    )
}


def preset_data(workspace: str) -> str:
    """Build (once) the presets' `shapes` set in `workspace`; returns its stored name."""
    from tl_core.data.builtin import build_builtin
    from tl_core.data.store import dataset_path
    from tl_core.workspaces import dataset_name

    name = dataset_name(workspace, "shapes")
    if not dataset_path(name).is_dir():
        build_builtin("shapes", name=name, per_class=SHAPES_PER_CLASS)
    return name


def queue_preset(store, key: str, *, workspace: str, request_id: str | None = None) -> list[str]:
    """Queue preset `key` on the workspace's `shapes` set; returns the run ids."""
    from tl_core.errors import LabError
    from tl_core.workspaces import queue_runs

    if key not in PRESETS:
        raise LabError(f"unknown preset {key!r}; choose one of: {', '.join(PRESETS)}")
    data = preset_data(workspace)
    specs = [replace(s) for s in PRESETS[key].specs(data)]
    return queue_runs(store, specs, workspace=workspace, request_id=request_id)
