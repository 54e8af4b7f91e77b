"""Decoded images kept as uint8 tensors and turned into model inputs a batch at a time.

The per-image path (`TensorImageDataset` with the presets of `tl_core.transforms`) calls a
transform once per image. `ImageBatches` does the same work for a whole batch where the
images live, the GPU when there is one (`preload` puts every image on the device once, when
it fits), so augmentation costs a few kernel launches per batch instead of one Python call
per image. It follows the presets:

- evaluation: the centre crop, exactly as `eval_transform` (the images' shorter side is
  already the resize size);
- training with `crop_flip` at inputs above `SMALL_INPUT`: RandomResizedCrop's box (drawn
  with torchvision's algorithm: scale 0.08-1, aspect 3/4-4/3, ten tries, then the centre)
  resampled bilinearly to the input size with one `grid_sample` for the batch, and a
  horizontal flip with probability 1/2. Unlike torchvision's antialiased resize it does not
  low-pass a crop before shrinking it (crops here shrink by at most ~1.5x);
- anything else (colour jitter, the 32 px pad-and-crop) falls back to the per-image preset.

The same code runs on CPU and GPU; the unit tests exercise it on the CPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tl_core.data.folder import DecodedImages
from tl_core.transforms import SMALL_INPUT, Preprocessing, eval_transform, train_transform

RRC_SCALE = (0.08, 1.0)
RRC_RATIO = (3.0 / 4.0, 4.0 / 3.0)


def resized_crop_boxes(
    heights: torch.Tensor,
    widths: torch.Tensor,
    *,
    scale: tuple[float, float] = RRC_SCALE,
    ratio: tuple[float, float] = RRC_RATIO,
    tries: int = 10,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """RandomResizedCrop boxes `[B, 4]` as (top, left, height, width), one per image.

    Vectorised `torchvision.transforms.v2.RandomResizedCrop.get_params`: each image gets the
    first of `tries` random boxes that fits inside it, or the centre crop fallback.
    """
    b = heights.shape[0]
    h_img, w_img = heights.double()[:, None], widths.double()[:, None]
    area = h_img * w_img
    target = area * torch.empty(b, tries, dtype=torch.float64).uniform_(*scale, generator=generator)
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    aspect = torch.exp(
        torch.empty(b, tries, dtype=torch.float64).uniform_(*log_r, generator=generator)
    )
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (w <= w_img) & (h > 0) & (h <= h_img)
    first = torch.where(ok.any(1), ok.double().argmax(1), torch.full((b,), -1))
    u = torch.rand(b, 2, dtype=torch.float64, generator=generator)
    boxes = torch.empty(b, 4, dtype=torch.long)
    for k in range(b):
        hk, wk = int(heights[k]), int(widths[k])
        if first[k] >= 0:
            ch, cw = int(h[k, first[k]]), int(w[k, first[k]])
            top = int(u[k, 0] * (hk - ch + 1))
            left = int(u[k, 1] * (wk - cw + 1))
        else:  # the fallback: the whole image, clipped to the ratio range, centred
            in_ratio = wk / hk
            if in_ratio < ratio[0]:
                cw, ch = wk, int(round(wk / ratio[0]))
            elif in_ratio > ratio[1]:
                ch, cw = hk, int(round(hk * ratio[1]))
            else:
                ch, cw = hk, wk
            top, left = (hk - ch) // 2, (wk - cw) // 2
        boxes[k] = torch.tensor([top, left, ch, cw])
    return boxes


def crop_resize_flip(
    images: list[torch.Tensor],
    boxes: torch.Tensor,
    flips: torch.Tensor,
    size: int,
) -> torch.Tensor:
    """Crop each uint8 CHW image to its box, resize bilinearly to `size`, flip where asked.

    Returns float `[B, C, size, size]` in 0-255. One `grid_sample` for the batch: the crops
    are packed into one padded tensor, and each output pixel centre maps to a source position
    inside its own crop, clamped to the crop's edge as `interpolate(align_corners=False)`
    does, so padding is never read.
    """
    device = images[0].device
    b = len(images)
    boxes = boxes.to("cpu", torch.long)
    crops = [
        im[:, t : t + h, x : x + w] for im, (t, x, h, w) in zip(images, boxes.tolist(), strict=True)
    ]
    h_max, w_max = int(boxes[:, 2].max()), int(boxes[:, 3].max())
    packed = torch.zeros(b, images[0].shape[0], h_max, w_max, dtype=torch.uint8, device=device)
    for k, crop in enumerate(crops):
        packed[k, :, : crop.shape[-2], : crop.shape[-1]] = crop
    hw = boxes[:, 2:].to(device=device, dtype=torch.float32)
    centres = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size  # [S]
    flipped = flips.to(device)[:, None]
    cx = torch.where(flipped, 1.0 - centres[None], centres[None])  # [B, S]
    xs = torch.minimum((cx * hw[:, 1:2] - 0.5).clamp(min=0), hw[:, 1:2] - 1)
    ys = torch.minimum((centres[None] * hw[:, 0:1] - 0.5).clamp(min=0), hw[:, 0:1] - 1)
    # grid_sample's normalised coordinates (align_corners=False): -1 and 1 are the outer edges.
    gx = (2 * xs + 1) / w_max - 1
    gy = (2 * ys + 1) / h_max - 1
    grid = torch.stack(
        (gx[:, None, :].expand(b, size, size), gy[:, :, None].expand(b, size, size)), dim=-1
    )
    return F.grid_sample(packed.float(), grid, mode="bilinear", align_corners=False)


def centre_crop(images: list[torch.Tensor], size: int) -> torch.Tensor:
    """The centre `size` x `size` crop of each uint8 image, stacked (CenterCrop's rounding)."""
    out = []
    for im in images:
        h, w = int(im.shape[-2]), int(im.shape[-1])
        top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
        out.append(im[..., top : top + size, left : left + size])
    return torch.stack(out)


def normalise(x: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """uint8 or 0-255 float `[B, C, H, W]` to the model's float input: /255, minus mean, / std."""
    mean = torch.tensor(pre.mean, device=x.device, dtype=torch.float32)[:, None, None]
    std = torch.tensor(pre.std, device=x.device, dtype=torch.float32)[:, None, None]
    return (x.float() / 255.0 - mean) / std


def fits_on(device: torch.device, nbytes: int) -> bool:
    """Whether `nbytes` of images can live on `device`, leaving most of it for training."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return nbytes < free // 4
    return device.type == "cpu"


class ImageBatches:
    """Decoded images with the train or eval preset applied a batch at a time.

    A data set for `tl_core.train.make_loader` (`get_batch(indices) -> (x, y)`); `x` is
    float32 on the images' device. With `preload`, images move to `device` once when they fit.
    """

    def __init__(
        self,
        decoded: DecodedImages,
        pre: Preprocessing,
        *,
        train: bool,
        augment: str = "crop_flip",
        device: torch.device | str = "cpu",
        preload: bool = True,
    ) -> None:
        device = torch.device(device)
        nbytes = sum(im.numel() for im in decoded.images)
        where = device if preload and fits_on(device, nbytes) else torch.device("cpu")
        self.images = [im.to(where) for im in decoded.images]
        self.labels = torch.tensor(decoded.labels, dtype=torch.long)
        self.pre, self.train, self.augment = pre, train, augment
        self.batched = not train or (augment == "crop_flip" and pre.input_size > SMALL_INPUT)
        if train and augment == "none":
            self.train, self.batched = False, True
        self._fallback = train_transform(pre, augment=augment) if train else eval_transform(pre)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.get_batch(torch.tensor([index]))
        return x[0], y[0]

    def get_batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = indices.tolist()
        images = [self.images[i] for i in idx]
        labels = self.labels[indices]
        if not self.batched:
            return torch.stack([self._fallback(im) for im in images]), labels
        size = self.pre.input_size
        if not self.train:
            return normalise(centre_crop(images, size), self.pre), labels
        heights = torch.tensor([im.shape[-2] for im in images])
        widths = torch.tensor([im.shape[-1] for im in images])
        boxes = resized_crop_boxes(heights, widths)
        flips = torch.rand(len(images)) < 0.5
        return normalise(crop_resize_flip(images, boxes, flips, size), self.pre), labels
