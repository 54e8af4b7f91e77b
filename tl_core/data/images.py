"""Decode any image file into an upright RGB picture, or say why it cannot be.

Every picture the lab reads (import, upload, webcam, URL download, training, predict) goes
through `decode_bytes` or `load_rgb`, one bounded decoding path:

- only the formats a user means are decoded: JPEG, PNG, GIF, WebP, BMP, TIFF (never
  PostScript/EPS, which Pillow hands to Ghostscript, nor any other plugin);
- before any pixel is decoded: at most `MAX_IMAGE_PIXELS` pixels and an aspect ratio of at
  most `MAX_ASPECT`:1 (a 100 x 890,000 px strip is refused, not resized to 256 x 2.3 million);
  a large JPEG is decoded at 1/2, 1/4 or 1/8 scale (draft mode) when that is enough;
- after decoding, a picture above `MAX_WORKING_PIXELS` is reduced (box filter) before any
  conversion, and 16-bit, 32-bit and float pictures are scaled to 8 bits strip by strip, so
  no conversion holds several full-size copies;
- EXIF rotation is applied, and CMYK, palette, greyscale and RGBA become 8-bit RGB
  (transparent pixels over white).

Decoding one picture then needs a few hundred MB at most. A picture that cannot be decoded
raises `ImageDecodeError` with the reason.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# The Pillow plugins that may decode (the JPEG one also opens cameras' multi-picture MPO).
ACCEPTED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
ACCEPTED_NAMES = "JPEG, PNG, GIF, WebP, BMP or TIFF"
# PIL's own default limit; above it an image is treated as a decompression bomb.
MAX_IMAGE_PIXELS = 89_478_485
# A longer side more than this many times the shorter one is refused: scaled to the
# training size, such a strip would become millions of pixels long.
MAX_ASPECT = 10.0
# Decoded pictures above this are reduced before conversion (6000 x 4000 fits).
MAX_WORKING_PIXELS = 24_000_000
_STRIP_PIXELS = 1 << 20  # deep pictures are scaled to 8 bits this many pixels at a time
ORIENTATION_TAG = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Formats recognised only to name them in the refusal.
_REFUSED_SIGNATURES = (
    (b"%!PS", "PostScript/EPS"),
    (b"\xc5\xd0\xd3\xc6", "EPS"),
    (b"%PDF", "PDF"),
    (b"8BPS", "Photoshop PSD"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xffO\xffQ", "JPEG 2000"),
    (b"gimp xcf", "GIMP XCF"),
)


class ImageDecodeError(ValueError):
    """A file that is not a usable image; the message is the reason, for reports."""


def is_image_name(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _deep_to_l(img: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit or float greyscale picture as 8-bit "L", scaled by its range
    (16-bit by 65535, others by their maximum) rather than clipped; strip by strip, so
    no float copy of the whole picture is ever made."""
    low, high = img.getextrema()
    if img.mode.startswith("I;16") or high > 255:
        top = 65535.0 if img.mode.startswith("I;16") or high <= 65535 else float(high)
    else:
        top = 1.0 if img.mode == "F" and high <= 1.0 else 255.0
    width, height = img.size
    out = Image.new("L", img.size)
    rows = max(1, _STRIP_PIXELS // max(1, width))
    for y in range(0, height, rows):
        strip = img.crop((0, y, width, min(height, y + rows)))
        arr = np.asarray(strip, dtype=np.float32)
        arr8 = np.clip(arr * np.float32(255.0 / top) + 0.5, 0, 255).astype(np.uint8)
        out.paste(Image.fromarray(arr8, mode="L"), (0, y))
    return out


def _reducible(img: Image.Image) -> Image.Image:
    """The picture in a mode `Image.reduce` supports, at most 8 bits per channel."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _deep_to_l(img)
    if img.mode == "P":
        return img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode not in ("L", "LA", "RGB", "RGBA", "CMYK", "YCbCr"):
        return img.convert("RGBA" if "A" in img.mode else "RGB")
    return img


def _bounded(img: Image.Image) -> Image.Image:
    """A decoded picture at most `MAX_WORKING_PIXELS`, in an 8-bit mode."""
    img = _reducible(img)
    width, height = img.size
    factor = math.ceil(math.sqrt(width * height / MAX_WORKING_PIXELS))
    return img.reduce(factor) if factor > 1 else img


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def shape_problem(width: int, height: int, max_pixels: int = MAX_IMAGE_PIXELS) -> str | None:
    """Why a picture of this size is refused before decoding, or None."""
    if width < 1 or height < 1:
        return f"empty picture ({width}x{height} pixels)"
    if width * height > max_pixels:
        return (
            f"too large: {width}x{height} pixels is over the limit of {max_pixels:,} "
            "(possible decompression bomb)"
        )
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT:
        return (
            f"too narrow: {width}x{height} pixels has an aspect ratio of {ratio:,.0f}:1, over "
            f"the limit of {MAX_ASPECT:g}:1; crop it to the part that shows the subject"
        )
    return None


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


def _open(source: str | Path | BinaryIO, max_pixels: int) -> Image.Image:
    """Open (header only) with the format allowlist; check the shape; pick a JPEG scale."""
    img = Image.open(source, formats=ACCEPTED_FORMATS)
    width, height = img.size
    problem = shape_problem(width, height, max_pixels)
    if problem:
        img.close()
        raise ImageDecodeError(problem)
    if img.format in ("JPEG", "MPO") and width * height > MAX_WORKING_PIXELS:
        factor = math.sqrt(width * height / MAX_WORKING_PIXELS)
        img.draft(None, (math.ceil(width / factor), math.ceil(height / factor)))
    return img


def _unaccepted(source: str | Path | BinaryIO) -> str:
    """The refusal of a file no accepted plugin opens, naming a known refused format."""
    try:
        if isinstance(source, (str, Path)):
            with open(source, "rb") as fh:
                head = fh.read(16)
        else:
            source.seek(0)
            head = source.read(16)
    except OSError:
        head = b""
    for signature, name in _REFUSED_SIGNATURES:
        if head.startswith(signature):
            return f"not an accepted image format: {name} (use {ACCEPTED_NAMES})"
    return f"not an image (unrecognised format; use {ACCEPTED_NAMES})"


def _decode(source: str | Path | BinaryIO, max_pixels: int) -> DecodedImage:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = _open(source, max_pixels)
            try:
                fmt, mode = img.format or "", img.mode
                img.load()
                orientation = img.getexif().get(ORIENTATION_TAG, 1)  # a PNG's may follow
                work = _bounded(img)
                if work is img:  # small and 8-bit already: a copy, so the file can close
                    work = img.copy()
            finally:
                img.close()
            if orientation in _TRANSPOSE:
                work = work.transpose(_TRANSPOSE[orientation])
            rgb = _to_rgb(work)
            rgb.load()
            return DecodedImage(rgb, fmt, mode, orientation in _TRANSPOSE)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(_unaccepted(source)) from exc
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
