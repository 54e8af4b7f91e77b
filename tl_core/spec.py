"""What one run trains (`RunSpec`), checked once where it is made, and `expand`, the one seed
rule of the lab."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

from tl_core.backbones import BACKBONES, get_backbone
from tl_core.errors import LabError
from tl_core.models import check_starting_point, check_trainable_blocks
from tl_core.strategies import STRATEGIES, get_strategy
from tl_core.train import TrainConfig
from tl_core.transforms import AUGMENTATIONS, check_augment


@dataclass(frozen=True)
class RunSpec:
    """What to train: data, backbone, strategy and the training configuration."""

    # Each field's metadata gives its command-line help (see tl_core/cli/options.py).
    data: str = field(metadata={"help": "a data set folder, or the name of an imported data set"})
    backbone: str = field(metadata={"choices": BACKBONES})
    strategy: str = field(metadata={"choices": STRATEGIES})
    train: TrainConfig = field(default_factory=TrainConfig)
    trainable_blocks: int = field(
        default=1, metadata={"help": "layer groups that train in partial_finetune"}
    )
    augment: str = field(default="crop_flip", metadata={"choices": AUGMENTATIONS})
    per_class: int | None = field(default=None, metadata={"help": "cap training images per class"})
    val_fraction: float = field(
        default=0.2, metadata={"help": "share of images held out when the set has no val/"}
    )
    split_seed: int = field(  # the split (and per-class subset) stay fixed across training seeds
        default=0, metadata={"help": "seed of the train/val split and the per-class subset"}
    )
    init_from: str | None = field(
        default=None, metadata={"metavar": "RUN_ID", "help": "start from a finished run's weights"}
    )
    weights: str | None = field(
        default=None, metadata={"metavar": "FILE", "help": "a local ImageNet weights file"}
    )
    # Augmented views cached per training image (feature_extractor, and partial_finetune's
    # frozen-prefix outputs). 5 rather than 10: half the cost to build (README, "Speed").
    feature_views: int = field(
        default=5, metadata={"help": "augmented views cached per image (cached fast paths)"}
    )
    # The fast paths: the strategy's cache (cached features for feature_extractor, cached
    # frozen-prefix outputs for partial_finetune) and batched augmentation of preloaded
    # images for the others. False: the classic per-image loop, every layer every epoch.
    fast: bool = field(
        default=True,
        metadata={
            "help": "disable the fast paths (cached features or frozen-prefix outputs, "
            "batched augmentation)"
        },
    )
    name: str | None = None
    recipe: str | None = field(default=None, metadata={"cli": False})

    def validate(self) -> RunSpec:
        """Check the spec once (a spec that passed, or came from the store, is trusted)."""
        if getattr(self, "_valid", False):
            return self
        backbone = get_backbone(self.backbone)
        strategy = get_strategy(self.strategy)
        check_augment(self.augment)
        self.train.validate()
        if self.per_class is not None and self.per_class < 1:
            raise LabError(f"images per class must be at least 1, got {self.per_class}")
        if not 1 <= self.feature_views <= 100:
            raise LabError(f"feature views must be between 1 and 100, got {self.feature_views}")
        check_trainable_blocks(backbone, strategy, self.trainable_blocks)
        check_starting_point(
            backbone, strategy, init_from=bool(self.init_from), weights=bool(self.weights)
        )
        object.__setattr__(self, "_valid", True)
        return self

    def to_dict(self) -> dict:
        out = asdict(self)
        out["train"] = self.train.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict, *, trusted: bool = False) -> RunSpec:
        """A spec from its `to_dict`; `trusted=True` for one read back from the run store,
        which was validated when it was queued."""
        data = dict(data)
        data["train"] = TrainConfig(**data.get("train", {}))
        known = set(cls.__dataclass_fields__)
        spec = cls(**{k: v for k, v in data.items() if k in known})
        if trusted:
            spec.train.trusted()
            object.__setattr__(spec, "_valid", True)
        return spec


def expand(spec: RunSpec, strategies: Sequence[str] | None = None, seeds: int = 1) -> list[RunSpec]:
    """One spec per strategy and seed, strategy-major: the one seed rule of the lab.

    Training seeds run `spec.train.seed`, +1, ... +seeds-1; the data split (`split_seed`)
    stays the same, so every run of a comparison sees the same images. `strategies` defaults
    to the spec's own strategy.
    """
    if seeds < 1:
        raise LabError(f"seeds must be at least 1, got {seeds}")
    names = list(strategies) if strategies else [spec.strategy]
    return [
        replace(spec, strategy=name, train=replace(spec.train, seed=spec.train.seed + k))
        for name in names
        for k in range(seeds)
    ]
