"""The app's one-click lessons as recipes: the Home page's "classroom quick" comparison and
the Learn page's demonstrations. Each is a small set of runs on the generated `shapes` set of
the workspace (built on first use, no network), sized to finish in a minute or two on a
laptop CPU. They run like any recipe (`python -m tl_core recipe momentum`); their runs are
ordinary runs (no `recipe` field), so the Results page shows them as plain comparisons.
"""

from __future__ import annotations

import time
from dataclasses import replace

from tl_core.jobs import RunSpec
from tl_core.recipes.model import Plan, Stage, recipe
from tl_core.recipes.planning import Context
from tl_core.train import TrainConfig
from tl_core.workspaces import dataset_name

SHAPES_PER_CLASS = 10  # training images per shape in the lessons' data set
BACKBONE = "efficientnet_lite0"  # its weights ship with the lab: no network needed
# A constant rate, as the lessons were tuned: under the lab's default cosine schedule their
# few epochs end lower (classroom quick, shapes: feature extractor 85 % and fine-tuning
# 67.5 %, against 95 and 90 % at a constant rate).
HEAD = TrainConfig(
    epochs=8, batch_size=16, lr=0.001, momentum=0.9, schedule="none"
)  # a feature extractor
# Fine-tuning: a few fast steps, small batches and a larger learning rate than 0.001.
FINETUNE = replace(HEAD, epochs=3, batch_size=8, lr=0.005)
DATA_HINT = "nothing: the lesson builds the generated shapes set (10 per class)"


def lesson_stages(ctx: Context, *runs: tuple[str, str, dict]) -> list[Stage]:
    """One stage of (label, strategy, RunSpec fields) runs on the workspace's shapes set."""
    ctx.refuse_data()
    data = ctx.builtin_data(
        "shapes", dataset_name(ctx.workspace, "shapes"), per_class=SHAPES_PER_CLASS
    )
    base = RunSpec(data, BACKBONE, "feature_extractor", train=HEAD, augment="none")
    specs = tuple(
        replace(
            base,
            strategy=strategy,
            trainable_blocks=2,
            name=f"{ctx.recipe.title}: {label}",
            **fields,
        )
        for label, strategy, fields in runs
    )
    return [Stage(ctx.recipe.title, specs)]


def _lesson_recipe(name: str, title: str, idea: str):
    return recipe(name=name, title=title, description=idea, data_hint=DATA_HINT, classroom=True)


@_lesson_recipe(
    "classroom_quick",
    "Classroom quick",
    "A pretrained network as a fixed feature extractor against fine-tuning it, on a "
    "small set: both learn the shapes in seconds.",
)
def classroom_quick(ctx: Context) -> list[Stage]:
    return lesson_stages(
        ctx,
        ("feature extractor", "feature_extractor", {}),
        ("fine-tuning", "full_finetune", {"train": FINETUNE}),
    )


@_lesson_recipe(
    "strategies",
    "Frozen, in-between, fine-tuned",
    "How much of the pretrained network to train: only the new head, the last layer "
    "groups too, or everything.",
)
def strategies(ctx: Context) -> list[Stage]:
    return lesson_stages(
        ctx,
        ("feature extractor", "feature_extractor", {}),
        ("partial fine-tuning", "partial_finetune", {"train": FINETUNE}),
        ("full fine-tuning", "full_finetune", {"train": FINETUNE}),
    )


@_lesson_recipe(
    "probe_finetune",
    "Probe, then fine-tune",
    "Fine-tuning from a random head against fine-tuning from a head first trained "
    "on the frozen features (LP-FT), the backbone at a tenth of the head's rate.",
)
def probe_finetune(ctx: Context) -> list[Stage]:
    return lesson_stages(
        ctx,
        ("fine-tuning", "full_finetune", {"train": FINETUNE}),
        (
            "probe, then fine-tune",
            "probe_finetune",
            {"train": replace(FINETUNE, backbone_lr_mult=0.1)},
        ),
    )


@_lesson_recipe(
    "small_data",
    "Small data needs transfer",
    "With five pictures per class, random weights learn next to nothing; ImageNet "
    "features already separate the classes.",
)
def small_data(ctx: Context) -> list[Stage]:
    return lesson_stages(
        ctx,
        ("scratch, 5 per class", "scratch", {"train": replace(HEAD, epochs=3), "per_class": 5}),
        ("feature extractor, 5 per class", "feature_extractor", {"per_class": 5}),
    )


@_lesson_recipe(
    "augmentation",
    "Augmentation",
    "Random crops and flips show the network new versions of the same pictures, so "
    "it memorises less and generalises more.",
)
def augmentation(ctx: Context) -> list[Stage]:
    return lesson_stages(
        ctx,
        ("no augmentation", "feature_extractor", {}),
        ("crop and flip", "feature_extractor", {"augment": "crop_flip"}),
    )


@_lesson_recipe(
    "momentum",
    "SGD, mini-batches and momentum",
    "The same head trained with plain SGD, with momentum, and with tiny batches: "
    "momentum speeds up the descent; small batches take more, noisier steps.",
)
def momentum(ctx: Context) -> list[Stage]:
    return lesson_stages(
        ctx,
        ("momentum 0", "feature_extractor", {"train": replace(HEAD, momentum=0.0)}),
        ("momentum 0.9", "feature_extractor", {}),
        ("momentum 0.9, batch 4", "feature_extractor", {"train": replace(HEAD, batch_size=4)}),
    )


def lesson_seconds(lesson: Plan, store=None) -> float | None:
    """How long a lesson's runs should train (`schedule.estimate_seconds`, summed), for its
    button. Before the workspace's shapes set exists, the set the lesson would build is counted
    (`SHAPES_PER_CLASS` training and 10 validation pictures per shape), not built or scanned."""
    from tl_core.consent import total_estimate
    from tl_core.data.shapes import SHAPES
    from tl_core.data.store import dataset_path

    def generated(spec: RunSpec) -> tuple[int, int]:
        per_class = min(spec.per_class or SHAPES_PER_CLASS, SHAPES_PER_CLASS)
        return len(SHAPES) * per_class, len(SHAPES) * 10  # build_shapes' val_per_class

    key = (repr(lesson.specs), str(store.home) if store is not None else None)
    remembered = _LESSON_ESTIMATES.get(key)
    if remembered is not None and time.monotonic() - remembered[0] < ESTIMATE_TTL:
        return remembered[1]
    built = all(dataset_path(s.data).is_dir() for s in lesson.specs)
    seconds = total_estimate(lesson.specs, store, None if built else generated)
    _LESSON_ESTIMATES[key] = (time.monotonic(), seconds)
    return seconds


# A lesson's button shows its estimate on every view of Home and Learn: one count of the
# workspace's pictures serves every session for a few seconds.
ESTIMATE_TTL = 10.0
_LESSON_ESTIMATES: dict[tuple, tuple[float, float | None]] = {}
