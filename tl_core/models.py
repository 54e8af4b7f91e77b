"""Models from the two registries: a backbone (`tl_core.backbones`) under a strategy
(`tl_core.strategies`).

`build_model` turns a backbone entry plus a strategy into a model whose new head fits the
data set's classes, starting from ImageNet weights, a finished run's weights or random ones
(as the strategy's table entry says), and whose frozen layers have `requires_grad=False`.
The registries are re-exported here for the modules that import them from `tl_core.models`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tl_core.backbones import (  # noqa: F401 - the registry is re-exported from here
    BACKBONES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Backbone,
    SmallCNN,
    get_backbone,
)
from tl_core.errors import LabError
from tl_core.strategies import STRATEGIES, Strategy, get_strategy  # noqa: F401 - re-exported


def check_strategy(name: str) -> str:
    return get_strategy(name).name


# ---------------------------------------------------------------------------- weights


def torch_cache_checkpoint(backbone: Backbone) -> Path | None:
    """Where torchvision's cache keeps this backbone's weights (`$TORCH_HOME/hub/checkpoints`)."""
    if backbone.weights_file is None:
        return None
    return Path(torch.hub.get_dir()) / "checkpoints" / backbone.weights_file


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise LabError(f"cannot read weights file {path}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise LabError(f"weights file {path} does not hold a state_dict")
    return state


def resolve_weights(backbone: Backbone, weights_file: str | Path | None = None) -> Path:
    """Find ImageNet weights: the user's file, torchvision's cache, then a download.

    Never falls back to random weights: when nothing can be found, the error says which file
    torchvision expects, where to put it, and that `efficientnet_lite0` works offline.
    """
    if weights_file is not None:
        path = Path(weights_file).expanduser()
        if not path.is_file():
            raise LabError(f"weights file not found: {path}")
        return path
    if backbone.packaged_weights is not None:
        return Path(backbone.packaged_weights())
    if backbone.weights_url is None:
        raise LabError(
            f"{backbone.name} has no pretrained ImageNet weights; train it with strategy "
            "'scratch', or start from one of your runs (\"Start from a previous run\" on the "
            "Experiments page, --init-from RUN_ID on the command line)"
        )
    cached = torch_cache_checkpoint(backbone)
    assert cached is not None
    if cached.is_file():
        return cached
    try:
        torch.hub.download_url_to_file(backbone.weights_url, str(cached), progress=True)
    except Exception as exc:  # noqa: BLE001 - offline, DNS, HTTP errors all mean the same here
        cached.unlink(missing_ok=True)
        raise LabError(
            f"cannot download the ImageNet weights of {backbone.name} ({exc.__class__.__name__}). "
            f"Download {backbone.weights_url} on a machine with network and put it at {cached} "
            f"(or pass --weights FILE). efficientnet_lite0 works offline."
        ) from exc
    return cached


def load_imagenet_weights(
    model: nn.Module, backbone: Backbone, weights_file: str | Path | None = None
) -> Path:
    path = resolve_weights(backbone, weights_file)
    state = _read_state_dict(path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise LabError(
            f"weights file {path} does not fit {backbone.name}: "
            f"{len(missing)} missing and {len(unexpected)} unexpected tensors"
        )
    return path


# ---------------------------------------------------------------------------- surgery


def get_module(model: nn.Module, path: str) -> nn.Module:
    return model.get_submodule(path)


def set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, module)


def replace_head(model: nn.Module, backbone: Backbone, num_classes: int) -> nn.Linear:
    old = get_module(model, backbone.head)
    if not isinstance(old, nn.Linear):
        raise TypeError(f"{backbone.name}.{backbone.head} is {type(old).__name__}, not Linear")
    new = nn.Linear(old.in_features, num_classes)
    set_module(model, backbone.head, new)
    return new


def trainable_prefixes(
    backbone: Backbone, strategy: str, trainable_blocks: int = 1
) -> tuple[str, ...]:
    """Module paths whose parameters train under `strategy` (the head always does)."""
    plan = get_strategy(strategy)
    if plan.scope == "all":
        return ("",)
    if plan.scope == "head":
        return (backbone.head,)
    check_trainable_blocks(backbone, plan, trainable_blocks)
    n_groups = len(backbone.layer_groups)
    prefixes: list[str] = [backbone.head]
    for group in backbone.layer_groups[n_groups - trainable_blocks :]:
        prefixes.extend(group)
    return tuple(prefixes)


def _under(name: str, prefix: str) -> bool:
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def apply_strategy(
    model: nn.Module, backbone: Backbone, strategy: str, trainable_blocks: int = 1
) -> None:
    """Set `requires_grad` so that exactly the strategy's layers train."""
    prefixes = trainable_prefixes(backbone, strategy, trainable_blocks)
    for name, param in model.named_parameters():
        param.requires_grad = any(_under(name, p) for p in prefixes)


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = trainable = 0
    for p in model.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


def frozen_batchnorms(model: nn.Module) -> Iterator[nn.modules.batchnorm._BatchNorm]:
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = [p for p in module.parameters(recurse=False)]
            if params and not any(p.requires_grad for p in params):
                yield module


def set_train_mode(model: nn.Module) -> None:
    """`model.train()`, except that frozen BatchNorm layers stay in eval mode.

    A frozen BatchNorm must not move its running statistics towards the new data set: the
    frozen layers after it were trained with the old ones (timm's `freeze`, Keras'
    `training=False`).
    """
    model.train()
    for bn in frozen_batchnorms(model):
        bn.eval()


def head_parameter_names(model: nn.Module, backbone: Backbone) -> set[str]:
    return {n for n, _ in model.named_parameters() if _under(n, backbone.head)}


# ---------------------------------------------------------------------------- building


@dataclass(frozen=True)
class BuiltModel:
    model: nn.Module
    backbone: Backbone
    weights_source: str  # "random", a weights file path, or "run:<id>"


def build_model(
    backbone_name: str,
    num_classes: int,
    strategy: str,
    *,
    trainable_blocks: int = 1,
    weights_file: str | Path | None = None,
    init_state: dict[str, torch.Tensor] | None = None,
    init_label: str | None = None,
    load_weights: bool = True,
) -> BuiltModel:
    """A model ready to train under `strategy`, with a new head of `num_classes` outputs.

    `init_state` (a finished run's trained weights) replaces ImageNet weights as the starting
    point; its head is kept when it has the right number of classes, otherwise replaced.
    `load_weights=False` builds the architecture only (for shape checks and speed tests).
    """
    backbone = get_backbone(backbone_name)
    plan = get_strategy(strategy)
    check_starting_point(
        backbone, plan, init_from=init_state is not None, weights=weights_file is not None
    )
    if num_classes < 2:
        raise LabError(f"a classifier needs at least 2 classes, got {num_classes}")
    model = backbone.build()
    source = "random"
    if init_state is not None:
        _load_run_weights(model, backbone, init_state, num_classes)
        source = init_label or "run"
    elif plan.needs_pretrained:
        if load_weights:
            source = str(load_imagenet_weights(model, backbone, weights_file))
        replace_head(model, backbone, num_classes)
    else:
        replace_head(model, backbone, num_classes)
        _let_batchnorm_catch_up(model)
    apply_strategy(model, backbone, strategy, trainable_blocks)
    return BuiltModel(model=model, backbone=backbone, weights_source=source)


def check_starting_point(
    backbone: Backbone, strategy: Strategy, *, init_from: bool, weights: bool
) -> None:
    """Whether `strategy` can start on `backbone` from what is given (a run, a weights file)."""
    if init_from and not strategy.needs_pretrained:
        raise LabError(f"strategy {strategy.name!r} starts from random weights; drop --init-from")
    if strategy.needs_pretrained and not (backbone.has_imagenet_weights or init_from or weights):
        raise LabError(
            f"{backbone.name} has no ImageNet weights, so strategy {strategy.name!r} needs a "
            'starting point: a run trained here ("Start from a previous run" on the '
            "Experiments page, --init-from RUN_ID on the command line), or use strategy "
            "'scratch'"
        )


def check_trainable_blocks(backbone: Backbone, strategy: Strategy, trainable_blocks: int) -> None:
    """K must name some of the backbone's layer groups, where the strategy reads it."""
    n_groups = len(backbone.layer_groups)
    if strategy.uses_blocks and not 1 <= trainable_blocks <= n_groups:
        raise LabError(
            f"trainable blocks must be between 1 and {n_groups} for {backbone.name} "
            f"(its layer groups: {', '.join(backbone.group_names)})"
        )


def _load_run_weights(
    model: nn.Module, backbone: Backbone, init_state: dict[str, torch.Tensor], num_classes: int
) -> None:
    """A finished run's weights; its head is kept when it has `num_classes` outputs."""
    head_out = init_state.get(f"{backbone.head}.weight")
    if head_out is None:
        raise LabError(f"the starting run's weights do not belong to {backbone.name}")
    set_module(model, backbone.head, nn.Linear(head_out.shape[1], head_out.shape[0]))
    try:
        model.load_state_dict(init_state)
    except RuntimeError as exc:
        raise LabError(f"the starting run's weights do not fit {backbone.name}: {exc}") from exc
    if head_out.shape[0] != num_classes:
        replace_head(model, backbone, num_classes)


def _let_batchnorm_catch_up(model: nn.Module) -> None:
    # From random weights, BatchNorm's running statistics must catch up within a few hundred
    # steps; the TensorFlow-ported momentum of EfficientNet (0.01) leaves them near their
    # initial values, and evaluation then predicts one class. PyTorch's default is 0.1.
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and (module.momentum or 0) < 0.1:
            module.momentum = 0.1


def build_for_inference(backbone_name: str, num_classes: int) -> nn.Module:
    """The architecture with a head of `num_classes`, random weights, for loading a run."""
    backbone = get_backbone(backbone_name)
    model = backbone.build()
    replace_head(model, backbone, num_classes)
    return model


def weights_are_offline_ready(backbone: Backbone) -> bool:
    """Whether pretrained weights can be had right now without a network."""
    if backbone.packaged_weights is not None:
        return True
    cached = torch_cache_checkpoint(backbone)
    return cached is not None and cached.is_file()
