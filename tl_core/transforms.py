"""Train and evaluation presets, built from a backbone's registry entry.

Images reach these transforms as uint8 CHW tensors whose shorter side is already the
backbone's resize size (the decoded-image cache in `tl_core.data.folder` does that once per
data set, instead of decoding JPEGs every epoch). Evaluation then takes the centre crop: the
images "in their original form". Training adds RandomResizedCrop and a horizontal flip
(optionally colour jitter); at 32 px RandomResizedCrop's default scale would destroy the
image, so small inputs get pad-and-crop plus flip instead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from tl_core.errors import LabError
from tl_core.models import Backbone

AUGMENTATIONS = ("crop_flip", "none", "crop_flip_jitter")
SMALL_INPUT = 64  # at or below this size, pad-and-crop replaces RandomResizedCrop


@dataclass(frozen=True)
class Preprocessing:
    """What an image goes through before the model: recorded beside every trained model."""

    input_size: int
    resize_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def for_backbone(cls, backbone: Backbone) -> Preprocessing:
        return cls(backbone.input_size, backbone.resize_size, backbone.mean, backbone.std)

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        return cls(
            int(data["input_size"]),
            int(data["resize_size"]),
            tuple(data["mean"]),
            tuple(data["std"]),
        )

    def to_dict(self) -> dict:
        return asdict(self)


def check_augment(name: str) -> str:
    if name not in AUGMENTATIONS:
        raise LabError(f"unknown augmentation {name!r}; choose one of: {', '.join(AUGMENTATIONS)}")
    return name


def resize_shorter(img: Image.Image, size: int) -> Image.Image:
    """Scale so that the shorter side is `size` pixels (antialiased), keeping the aspect."""
    width, height = img.size
    if min(width, height) == size:
        return img
    scale = size / min(width, height)
    new = (max(size, round(width * scale)), max(size, round(height * scale)))
    return img.resize(new, Image.BILINEAR, reducing_gap=None)


def to_uint8_tensor(img: Image.Image, resize_size: int) -> torch.Tensor:
    """An RGB PIL image as the uint8 CHW tensor the presets expect."""
    arr = np.asarray(resize_shorter(img.convert("RGB"), resize_size), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def _normalise(pre: Preprocessing) -> list:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(pre.mean), list(pre.std))]


def eval_transform(pre: Preprocessing) -> v2.Compose:
    return v2.Compose(
        [
            v2.Resize(pre.resize_size, antialias=True),
            v2.CenterCrop(pre.input_size),
            *_normalise(pre),
        ]
    )


def train_transform(pre: Preprocessing, *, augment: str = "crop_flip") -> v2.Compose:
    check_augment(augment)
    if augment == "none":
        return eval_transform(pre)
    if pre.input_size <= SMALL_INPUT:
        steps: list = [
            v2.Resize(pre.resize_size, antialias=True),
            v2.CenterCrop(pre.input_size),
            v2.RandomCrop(pre.input_size, padding=pre.input_size // 8, padding_mode="reflect"),
            v2.RandomHorizontalFlip(),
        ]
    else:
        steps = [v2.RandomResizedCrop(pre.input_size, antialias=True), v2.RandomHorizontalFlip()]
    if augment == "crop_flip_jitter":
        steps.append(v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05))
    return v2.Compose([*steps, *_normalise(pre)])
