"""Decode any image file into an upright RGB picture, or say why it cannot be.

Every image the lab trains on goes through `load_rgb`: EXIF rotation is applied, and CMYK,
palette, greyscale, 16-bit and RGBA images become 8-bit RGB (transparent pixels over white).
`check_image` decodes a file fully (a truncated JPEG only fails once its pixels are read) and
returns a reason instead of raising, for import reports.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
# PIL's own default limit; above it an image is treated as a decompression bomb.
MAX_IMAGE_PIXELS = 89_478_485


class ImageDecodeError(ValueError):
    """A file that is not a usable image; the message is the reason, for reports."""


def is_image_name(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits by the actual range rather than clipping.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr8 = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_rgb(path: str | Path, *, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open, fully decode and normalise an image file. Raises `ImageDecodeError`."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageDecodeError("empty file (0 bytes)")
    except OSError as exc:
        raise ImageDecodeError(f"cannot read file: {exc.strerror or exc}") from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageDecodeError(
                        f"too large: {width}x{height} pixels is over the limit of "
                        f"{max_pixels:,} (possible decompression bomb)"
                    )
                img.load()
                img = ImageOps.exif_transpose(img) or img
                rgb = _to_rgb(img)
                rgb.load()
                return rgb
    except ImageDecodeError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("not an image (unrecognised format)") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"too large (possible decompression bomb): {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"corrupt or truncated image: {exc}") from exc


def check_image(path: str | Path) -> str | None:
    """None when `path` decodes to a usable image, else the reason it does not."""
    try:
        load_rgb(path)
    except ImageDecodeError as exc:
        return str(exc)
    return None
