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


# Turbo (Google's improved jet), as its published polynomial fit: blue for low through green
# and yellow to dark red for high; legible on a projector, unlike a faint red tint.
_TURBO = np.array(
    [
        [0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943],
        [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],
        [0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973],
    ]
)


def turbo(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> RGB in [0, 1] (the last axis), on the turbo colour map."""
    x = np.clip(np.asarray(values, dtype=np.float64), 0, 1)[..., None]
    powers = np.concatenate([x**k for k in range(6)], axis=-1)
    return np.clip(powers @ _TURBO.T, 0, 1)


def attention_colours(heat: np.ndarray) -> np.ndarray:
    """Heat in [0, 1] -> RGB in [0, 1]: turbo without its first tenth (near black), so
    "no attention" reads as blue over the photo, not as a dark stain."""
    return turbo(0.1 + 0.9 * np.clip(heat, 0, 1))


def legend_colours(steps: int = 9) -> list[str]:
    """Hex colours from low (0) to high (1) attention, for a colour legend beside the map."""
    rgb = (attention_colours(np.linspace(0, 1, steps)) * 255).round().astype(int)
    return ["#" + "".join(f"{c:02x}" for c in row) for row in rgb]


def overlay(trained: TrainedModel, image: Image.Image, heat: np.ndarray, alpha: float = 0.5):
    """The model's view of the picture with the heat map laid over it in the turbo colour
    map (blue = little attention, red = most), at `alpha` opacity everywhere, so the photo
    keeps its contrast under the colours."""
    base = np.asarray(model_view(trained, image), dtype=np.float32)
    colour = attention_colours(heat) * 255
    mixed = base * (1 - alpha) + colour * alpha
    return Image.fromarray(mixed.clip(0, 255).astype(np.uint8))
