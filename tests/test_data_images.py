"""Every image is fully decoded before it is accepted; odd formats become upright RGB."""

from __future__ import annotations

import pytest
from data_fixtures import (
    cmyk_jpeg,
    exif_rotated_jpeg,
    jpeg_bytes,
    palette_png_with_transparency,
    placeholder_gif,
    png16_bytes,
    png_bomb,
    rgba_png,
    truncated_jpeg,
)

from tl_core.data.images import (
    ImageDecodeError,
    decode_bytes,
    dhash,
    load_rgb,
    placeholder_reason,
)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (truncated_jpeg(), "corrupt or truncated"),
        (b"just some text, not a picture\n" * 4, "not an image"),
        (b"<!DOCTYPE html><html><body>404</body></html>", "HTML"),
        (b'{"error": "not found"}', "JSON"),
        (png_bomb(), "decompression bomb"),
    ],
    ids=["zero-byte", "truncated-jpeg", "text", "html", "json", "bomb"],
)
def test_bad_files_are_rejected_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ImageDecodeError, match=reason):
        decode_bytes(data)


def test_pixel_limit_is_a_parameter() -> None:
    with pytest.raises(ImageDecodeError, match="over the limit of 1,000"):
        decode_bytes(jpeg_bytes(size=(48, 32)), max_pixels=1000)


def test_cmyk_becomes_rgb() -> None:
    image = decode_bytes(cmyk_jpeg())
    assert (image.mode, image.rgb.mode) == ("CMYK", "RGB")


def test_palette_transparency_goes_over_white() -> None:
    image = decode_bytes(palette_png_with_transparency())
    assert image.mode == "P" and image.rgb.mode == "RGB"
    assert image.rgb.getpixel((2, 2)) == (255, 255, 255)  # transparent half
    assert image.rgb.getpixel((15, 2)) == (0, 0, 255)


def test_16_bit_greyscale_is_scaled_not_clipped() -> None:
    image = decode_bytes(png16_bytes())
    assert image.rgb.mode == "RGB"
    left, right = image.rgb.getpixel((0, 0)), image.rgb.getpixel((29, 19))
    assert left == (0, 0, 0) and right == (255, 255, 255)
    middle = image.rgb.getpixel((15, 10))[0]
    assert 100 < middle < 160  # a mid grey, not saturated white


def test_rgba_goes_over_white() -> None:
    image = decode_bytes(rgba_png())
    assert image.rgb.getpixel((2, 2)) == (255, 255, 255)
    assert image.rgb.getpixel((12, 2)) == (0, 0, 255)


def test_exif_rotation_is_applied(tmp_path) -> None:
    image = decode_bytes(exif_rotated_jpeg())
    assert image.exif_rotated
    assert image.size == (20, 40)  # portrait once upright
    # Orientation 6: the stored left (blue) half ends up on top.
    r, g, b = image.rgb.getpixel((10, 5))
    assert b > 200 and r < 60
    path = tmp_path / "rot.jpg"
    path.write_bytes(exif_rotated_jpeg())
    assert load_rgb(path).size == (20, 40)


def test_dhash_is_stable_under_rescaling() -> None:
    img = decode_bytes(jpeg_bytes(7, (96, 64))).rgb
    small = img.resize((48, 32))
    other = decode_bytes(jpeg_bytes(8, (96, 64))).rgb
    near = bin(dhash(img) ^ dhash(small)).count("1")
    far = bin(dhash(img) ^ dhash(other)).count("1")
    assert near <= 6 < far


def test_placeholder_by_name_and_by_look() -> None:
    photo = decode_bytes(jpeg_bytes())
    assert placeholder_reason("photo.jpg", photo) is None
    assert "file name" in placeholder_reason("imageNotFound.gif", photo)
    assert "grey colours" in placeholder_reason("x.gif", decode_bytes(placeholder_gif()))
