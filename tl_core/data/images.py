"""Decode any image file into an upright RGB picture, or say why it cannot be.

Every image the lab trains on goes through `load_rgb`: EXIF rotation is applied, and CMYK,
palette, greyscale, 16-bit and RGBA images become 8-bit RGB (transparent pixels over white).
`check_image` decodes a file fully (a truncated JPEG only fails once its pixels are read) and
returns a reason instead of raising, for import reports.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
# PIL's own default limit; above it an image is treated as a decompression bomb.
MAX_IMAGE_PIXELS = 89_478_485
ORIENTATION_TAG = 0x0112


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


@dataclass(frozen=True)
class DecodedImage:
    """A fully decoded image: upright 8-bit RGB pixels plus what the file was."""

    rgb: Image.Image
    format: str  # PIL's format name: "JPEG", "PNG", "GIF", ...
    mode: str  # the file's own mode before conversion: "RGB", "CMYK", "P", "I;16", ...
    exif_rotated: bool  # True when an EXIF orientation tag turned the pixels

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.size


def _decode(source: str | Path | BinaryIO, max_pixels: int) -> DecodedImage:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageDecodeError(
                        f"too large: {width}x{height} pixels is over the limit of "
                        f"{max_pixels:,} (possible decompression bomb)"
                    )
                fmt, mode = img.format or "", img.mode
                img.load()
                orientation = img.getexif().get(ORIENTATION_TAG, 1)
                img = ImageOps.exif_transpose(img) or img
                rgb = _to_rgb(img)
                rgb.load()
                return DecodedImage(rgb, fmt, mode, orientation not in (1, None))
    except ImageDecodeError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("not an image (unrecognised format)") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"too large (possible decompression bomb): {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"corrupt or truncated image: {exc}") from exc


def load_rgb(path: str | Path, *, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open, fully decode and normalise an image file. Raises `ImageDecodeError`."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageDecodeError("empty file (0 bytes)")
    except OSError as exc:
        raise ImageDecodeError(f"cannot read file: {exc.strerror or exc}") from exc
    return _decode(path, max_pixels).rgb


def decode_bytes(data: bytes, *, max_pixels: int = MAX_IMAGE_PIXELS) -> DecodedImage:
    """Fully decode image bytes (an upload, a download). Raises `ImageDecodeError`.

    The reason names the usual impostors: an HTML or JSON page saved under an image name.
    """
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        return _decode(io.BytesIO(data), max_pixels)
    except ImageDecodeError as exc:
        if str(exc).startswith("not an image"):
            head = data[:512].lstrip().lower()
            if head.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml", b"<")):
                raise ImageDecodeError("not an image (an HTML/XML page)") from exc
            if head.startswith((b"{", b"[")):
                raise ImageDecodeError("not an image (a JSON document)") from exc
        raise


def check_image(path: str | Path) -> str | None:
    """None when `path` decodes to a usable image, else the reason it does not."""
    try:
        load_rgb(path)
    except ImageDecodeError as exc:
        return str(exc)
    return None


def dhash(img: Image.Image, *, size: int = 8) -> int:
    """A 64-bit difference hash: near-identical pictures (rescaled, recompressed) differ
    in few bits, so a small Hamming distance flags a likely duplicate."""
    grey = img.convert("L").resize((size + 1, size), Image.Resampling.BILINEAR)
    px = np.asarray(grey, dtype=np.int16)
    bits = (px[:, 1:] > px[:, :-1]).flatten()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def colour_signature(img: Image.Image) -> str:
    """The picture averaged down to 4x4 RGB, as hex: `dhash` sees structure only, so two
    plain pictures with similar gradients need this to tell their colours apart."""
    small = img.convert("RGB").resize((4, 4), Image.Resampling.BOX)
    return small.tobytes().hex()


def colour_distance(a: str, b: str) -> float:
    """Mean absolute difference (0-255) between two `colour_signature`s."""
    x = np.frombuffer(bytes.fromhex(a), dtype=np.uint8).astype(np.int16)
    y = np.frombuffer(bytes.fromhex(b), dtype=np.uint8).astype(np.int16)
    return float(np.abs(x - y).mean())


# File names that image hosts give the picture they serve in place of a deleted photo.
_PLACEHOLDER_NAME = re.compile(
    r"(image|img|photo|picture|file)?[ _-]?(not[ _-]?found|unavailable|missing|removed|deleted)"
    r"|placeholder|no[ _-]?image|^default[ _-]?image",
    re.IGNORECASE,
)


def placeholder_reason(name: str, image: DecodedImage) -> str | None:
    """Why this looks like a dead host's placeholder rather than a photo, or None.

    Two signals: a telltale file name (`imageNotFound.gif`, `photo_unavailable.png`), or a
    flat grey graphic: few colours, one covering most of the picture, no saturation. Photos
    have thousands of colours; a drawn shape on a textured background has many too.
    """
    if _PLACEHOLDER_NAME.search(Path(name).stem):
        return f"placeholder image (file name {Path(name).name!r})"
    small = (
        image.rgb
        if max(image.size) <= 256
        else image.rgb.resize((256, 256), Image.Resampling.NEAREST)
    )
    colours = small.getcolors(maxcolors=256)
    if colours is None:
        return None
    total = sum(count for count, _ in colours)
    top = max(count for count, _ in colours)
    grey = all(max(c) - min(c) <= 12 for _, c in colours)
    if grey and top >= 0.8 * total:
        return f"placeholder image ({len(colours)} grey colours, one covers {top / total:.0%})"
    return None
