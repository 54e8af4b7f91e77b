"""Grad-CAM: where in the picture the model looked for the class it chose.

Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization" (2017): weight the channels of the last spatial feature map by the mean
gradient of the class score, sum them, keep the positive part.

The model may be shared (the web app caches one per run for every session), so nothing
here changes it: the forward hooks that capture feature maps record only this thread's
call and are removed before returning; the model's mode and weights are untouched; the
gradient is taken with respect to the feature map, not accumulated in parameters.
"""

from __future__ import annotations

import threading

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from tl_core.evaluate import TrainedModel


def gradcam(
    trained: TrainedModel, image: Image.Image, class_index: int | None = None
) -> tuple[np.ndarray, int]:
    """(heat map in [0, 1] at the model's input size, class index explained).

    Explains `class_index`, or the predicted class when None. The feature map used is the
    last module output with a spatial size above 1x1 (ResNet's layer4, EfficientNet's last
    stage, VGG's last pooled conv block).
    """
    model = trained.model
    me = threading.get_ident()
    captured: list[torch.Tensor] = []

    def hook(_module, _inputs, output) -> None:
        mine = threading.get_ident() == me and isinstance(output, torch.Tensor)
        if mine and output.dim() == 4 and output.shape[-1] > 1 and output.shape[-2] > 1:
            captured.append(output)

    handles = [m.register_forward_hook(hook) for m in model.modules() if m is not model]
    try:
        x = trained.tensor(image).unsqueeze(0).requires_grad_(True)
        with torch.inference_mode(False), torch.enable_grad():
            logits = model(x)
            index = int(logits.argmax(1)) if class_index is None else int(class_index)
            if not captured:
                raise ValueError("the model has no spatial feature map to explain")
            fmap = captured[-1]
            (grad,) = torch.autograd.grad(logits[0, index], fmap)
    finally:
        for h in handles:
            h.remove()
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * fmap.detach()).sum(dim=1, keepdim=True))
    size = trained.preprocessing.input_size
    cam = F.interpolate(cam, size=(size, size), mode="bilinear", align_corners=False)[0, 0]
    cam = cam - cam.min()
    peak = float(cam.max())
    cam = cam / peak if peak > 0 else cam
    return cam.numpy(), index


def model_view(trained: TrainedModel, image: Image.Image) -> Image.Image:
    """The picture as the model sees it: resized and centre-cropped, normalisation undone."""
    pre = trained.preprocessing
    x = trained.tensor(image)
    mean = torch.tensor(pre.mean).view(3, 1, 1)
    std = torch.tensor(pre.std).view(3, 1, 1)
    pixels = ((x * std + mean).clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()
    return Image.fromarray(pixels)


def overlay(trained: TrainedModel, image: Image.Image, heat: np.ndarray, alpha: float = 0.45):
    """The model's view of the picture with the heat map laid over it (red = looked here)."""
    base = np.asarray(model_view(trained, image), dtype=np.float32)
    heat = np.clip(heat, 0, 1)[..., None]
    colour = np.concatenate([heat, np.zeros_like(heat), 1 - heat], axis=2) * 255
    mixed = base * (1 - alpha * heat) + colour * alpha * heat
    return Image.fromarray(mixed.clip(0, 255).astype(np.uint8))
