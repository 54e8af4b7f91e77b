"""The `shapes` data set, drawn here: no network, the same pictures for the same seed.

Circles, squares, triangles and stars in random colours, sizes, positions and rotations on
textured backgrounds (noise, stripes, checks, gradients), 64x64 PNG. Small enough to build
in seconds and to learn in a minute; `builtin.BUILTINS["shapes"]` builds it.
"""

from __future__ import annotations

import math
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from tl_core.data.store import DataReport, ProgressFn
from tl_core.data.writer import DatasetWriter
from tl_core.errors import LabError

SHAPES = ("circle", "square", "triangle", "star")


def _background(rng: random.Random, size: int) -> Image.Image:
    base = np.array([rng.randrange(256) for _ in range(3)], dtype=np.float32)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    kind = rng.choice(("noise", "stripes", "checks", "gradient"))
    nrng = np.random.default_rng(rng.randrange(2**32))
    if kind == "stripes":
        angle, period = rng.uniform(0, math.pi), rng.uniform(4, 12)
        wave = np.sin((x * math.cos(angle) + y * math.sin(angle)) * 2 * math.pi / period)
        tex = wave[..., None] * rng.uniform(20, 50)
    elif kind == "checks":
        cell = rng.randrange(4, 12)
        tex = ((((x // cell) + (y // cell)) % 2) * 2 - 1)[..., None] * rng.uniform(15, 40)
    elif kind == "gradient":
        tex = ((x + y) / (2 * size) - 0.5)[..., None] * rng.uniform(60, 140)
    else:
        tex = np.zeros((size, size, 1), np.float32)
    noise = nrng.normal(0, rng.uniform(6, 20), (size, size, 3))
    arr = np.clip(base + tex + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def _contrasting_colour(rng: random.Random, background: Image.Image) -> tuple[int, int, int]:
    mean = np.asarray(background, dtype=np.float32).mean()
    for _ in range(100):
        colour = tuple(rng.randrange(256) for _ in range(3))
        if abs(sum(colour) / 3 - mean) > 70:
            return colour
    return (255, 255, 255) if mean < 128 else (0, 0, 0)


def draw_shape(kind: str, rng: random.Random, size: int = 64) -> Image.Image:
    """One picture of a shape (circle, square, triangle, star) on a textured background."""
    scale = 4  # draw large, then shrink: smooth edges
    big = size * scale
    image = _background(rng, size).resize((big, big), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(image)
    r = rng.uniform(0.18, 0.34) * big
    cx, cy = rng.uniform(r, big - r), rng.uniform(r, big - r)
    colour = _contrasting_colour(rng, image)
    rotation = rng.uniform(0, 360)
    if kind == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif kind == "square":
        draw.regular_polygon((cx, cy, r), 4, rotation=rotation, fill=colour)
    elif kind == "triangle":
        draw.regular_polygon((cx, cy, r), 3, rotation=rotation, fill=colour)
    elif kind == "star":
        points = []
        for i in range(10):
            a = math.radians(rotation) + i * math.pi / 5
            radius = r if i % 2 == 0 else r * 0.45
            points.append((cx + radius * math.cos(a), cy + radius * math.sin(a)))
        draw.polygon(points, fill=colour)
    else:
        raise LabError(f"unknown shape {kind!r}; choose from {', '.join(SHAPES)}")
    return image.resize((size, size), Image.Resampling.LANCZOS).filter(ImageFilter.SMOOTH)


def build_shapes(
    name: str = "shapes",
    *,
    per_class: int = 40,
    val_per_class: int = 10,
    seed: int = 0,
    size: int = 64,
    on_progress: ProgressFn | None = None,
) -> DataReport:
    """Generate the `shapes` set: train/val, `per_class` + `val_per_class` per shape."""
    total = len(SHAPES) * (per_class + val_per_class)
    done = 0
    with DatasetWriter(name, replace=True) as writer:
        writer.manifest.class_order = list(SHAPES)
        writer.manifest.info = {"builtin": "shapes", "seed": seed, "size": size}
        for c, kind in enumerate(SHAPES):
            rng = random.Random(seed * 1000 + c)
            for split, count in (("train", per_class), ("val", val_per_class)):
                for i in range(count):
                    writer.add_pil(
                        draw_shape(kind, rng, size),
                        label=kind,
                        filename=f"{kind}_{i:04d}",
                        split=split,
                        origin={"kind": "generated", "source": f"shapes seed={seed}"},
                    )
                    done += 1
                    if on_progress:
                        on_progress(done, total, kind)
    return writer.report
