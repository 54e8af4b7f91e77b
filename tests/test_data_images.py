"""Every image is fully decoded before it is accepted; odd formats become upright RGB."""

from __future__ import annotations

import numpy as np
import pytest
from data_fixtures import (
    cmyk_jpeg,
    encode,
    eps_bytes,
    exif_rotated_jpeg,
    jpeg_bytes,
    noise_rgb,
    palette_png_with_transparency,
    placeholder_gif,
    png16_bytes,
    png16_full_range,
    png_bomb,
    rgba_png,
    truncated_jpeg,
)
from PIL import Image

from tl_core.data import images
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


@pytest.mark.parametrize("size", [(11, 1), (1, 11), (100, 2000), (2000, 100)])
def test_strips_over_ten_to_one_are_refused_before_decoding(size) -> None:
    with pytest.raises(ImageDecodeError, match=r"too narrow: .*over the limit of 10:1"):
        decode_bytes(encode(Image.new("RGB", size, (9, 9, 9)), "PNG"))


def test_ten_to_one_is_still_accepted() -> None:
    assert decode_bytes(encode(noise_rgb(0, (200, 20)), "PNG")).size == (200, 20)


def test_postscript_is_refused_by_name_and_never_reaches_its_plugin(monkeypatch) -> None:
    from PIL import EpsImagePlugin

    def ghostscript(*args, **kwargs):
        raise AssertionError("the EPS plugin ran")

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", ghostscript)
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "load", ghostscript)
    with pytest.raises(ImageDecodeError, match="PostScript/EPS .*use JPEG, PNG, GIF"):
        decode_bytes(eps_bytes())
    for fmt, name in (("PDF", "PDF"), ("ICO", "ICO"), ("PPM", "unrecognised")):
        with pytest.raises(ImageDecodeError, match=name):
            decode_bytes(encode(noise_rgb(1), fmt))


def test_accepted_formats_all_decode() -> None:
    for fmt in ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"):
        assert decode_bytes(encode(noise_rgb(2), fmt)).format == fmt


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_deep_pictures_are_scaled_to_8_bits_by_their_range(mode, monkeypatch) -> None:
    monkeypatch.setattr(images, "_STRIP_PIXELS", 100)  # several strips, even this small
    if mode == "I;16":
        data = png16_full_range((64, 48))
    else:
        arr = np.tile(np.linspace(0, 65535, 64), (48, 1))
        img = Image.fromarray(arr.astype(np.int32 if mode == "I" else np.float32), mode)
        data = encode(img, "TIFF")
    decoded = decode_bytes(data)
    assert decoded.rgb.mode == "RGB" and decoded.size == (64, 48)
    row = np.asarray(decoded.rgb)[:, :, 0]
    assert row[0, 0] == 0 and row[-1, -1] == 255
    assert (np.diff(row[0].astype(int)) >= 0).all()  # monotonic, not wrapped or clipped
    assert len(np.unique(row[0])) > 50


def test_large_pictures_are_reduced_before_conversion(monkeypatch) -> None:
    monkeypatch.setattr(images, "MAX_WORKING_PIXELS", 5_000)
    jpeg = decode_bytes(encode(noise_rgb(3, (400, 300)), "JPEG"))
    assert jpeg.size[0] * jpeg.size[1] <= 4 * 5_000 and jpeg.size[0] < 400  # draft mode
    png = decode_bytes(encode(noise_rgb(3, (400, 300)), "PNG"))
    assert png.size[0] * png.size[1] <= 5_000
    assert abs(png.size[0] / png.size[1] - 4 / 3) < 0.1
    rotated = decode_bytes(exif_rotated_jpeg())  # 40x20 tagged 'rotate': upright 20x40
    assert rotated.size == (20, 40) and rotated.exif_rotated


@pytest.mark.slow
def test_no_single_picture_costs_more_than_1_5_gb_to_import_or_decode(tmp_path) -> None:
    """Peak RSS of a fresh process per step and picture (issue 12's three pictures), read
    with getrusage(RUSAGE_CHILDREN) by a wrapper process of its own; a memory bound, not
    a timing, so it is asserted (with the issue's 1.5 GB) on a shared machine too."""
    import importlib.util
    import os
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "bench_images.py"
    spec = importlib.util.spec_from_file_location("bench_images", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    cases = bench.make_cases(tmp_path, photo=False)
    env = {**os.environ, "TL_LAB_HOME": str(tmp_path / "home")}
    expected = {
        "strip 100x890000 png": "too narrow",
        "strip 20x4470000 png": "too narrow",
        "16-bit 8000x8000 png": "",
    }
    for step in ("import", "decode"):
        base = bench.measure(step, cases["baseline 64x64"], "", env)["peak_mb"]
        for case, why in expected.items():
            got = bench.measure(step, cases[case], "", env)
            assert got["rc"] == 0, got["err"]
            assert why in got["out"], (step, case, got["out"])
            assert got["peak_mb"] - base < 1536, (step, case, got["peak_mb"], base)
