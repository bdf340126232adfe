"""Decoding untrusted images: every bad input of the issue's list becomes a clear ImageError,
every odd-but-valid one becomes upright 8-bit RGB."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from fer_core.recognition.imageio import MAX_PIXELS, ImageError, decode_image, encode_png


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that is nothing but a valid signature + IHDR claiming width x height, then IEND."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _rgb(size: tuple[int, int] = (80, 60), color: tuple[int, int, int] = (200, 30, 40)) -> Image.Image:
    return Image.new("RGB", size, color)


# ----------------------------------------------------------------------------- bad inputs


def test_non_image_bytes_with_an_image_extension(tmp_path):
    p = tmp_path / "photo.jpg"
    p.write_bytes(b"%PDF-1.4 this is not a picture " * 20)
    with pytest.raises(ImageError, match="not an image"):
        decode_image(p)


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        decode_image(p)


def test_truncated_jpeg():
    data = _encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8)), "JPEG")
    with pytest.raises(ImageError, match="truncated"):
        decode_image(data[: len(data) // 2])


@pytest.mark.parametrize(("w", "h"), [(20000, 20000), (8000, 7000)])
def test_pixel_cap_acts_before_decoding(w, h):
    """The file carries no pixel data at all: had decoding started, the error would be 'truncated'."""
    data = _png_header_only(w, h)
    assert w * h > MAX_PIXELS and len(data) < 100
    t0 = time.perf_counter()
    with pytest.raises(ImageError, match="too large"):
        decode_image(data)
    assert time.perf_counter() - t0 < 1.0


def test_header_under_the_cap_without_data_is_reported_damaged():
    """Counter-check of the test above: an allowed size does reach the decoder, which fails."""
    with pytest.raises(ImageError, match=r"truncated|damaged"):
        decode_image(_png_header_only(400, 300))


def test_tiny_image_is_refused():
    with pytest.raises(ImageError, match="too small: 30x20"):
        decode_image(_encode(_rgb((30, 20)), "PNG"))


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match="cannot read"):
        decode_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="folder"):
        decode_image(tmp_path)


# ----------------------------------------------------------------------------- odd but valid


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("P", (64, 64), i) for i in (10, 20, 30)]
    for f, c in zip(frames, ((255, 0, 0), (0, 255, 0), (0, 0, 255)), strict=True):
        f.putpalette([*c] * 256)
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    out = decode_image(data)
    assert out.rgb.shape == (64, 64, 3)
    assert tuple(out.rgb[10, 10]) == (255, 0, 0)
    assert any("first of its 3 frames" in n for n in out.notes)


def test_rgba_png_is_flattened_onto_white():
    arr = np.zeros((60, 60, 4), np.uint8)
    arr[:, :30] = (10, 200, 10, 255)  # opaque green left half, transparent right half
    out = decode_image(_encode(Image.fromarray(arr, "RGBA"), "PNG"))
    assert out.rgb.shape == (60, 60, 3)
    assert tuple(out.rgb[5, 5]) == (10, 200, 10)
    assert tuple(out.rgb[5, 50]) == (255, 255, 255)
    assert any("transparent" in n for n in out.notes)


def test_16bit_png_is_scaled_not_clipped():
    arr = np.zeros((64, 64), np.uint16)
    arr[:, 16:32], arr[:, 32:48], arr[:, 48:] = 16384, 32768, 65535
    out = decode_image(_encode(Image.fromarray(arr), "PNG"))
    assert out.rgb.dtype == np.uint8 and out.rgb.shape == (64, 64, 3)
    assert [int(out.rgb[0, x, 0]) for x in (0, 20, 40, 60)] == [0, 64, 128, 255]
    assert any("16-bit" in n for n in out.notes)


def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("CMYK", (64, 64), (0, 255, 255, 0))  # pure red in print terms
    out = decode_image(_encode(cmyk, "JPEG", quality=95))
    r, g, b = (int(v) for v in out.rgb[32, 32])
    assert out.rgb.shape == (64, 64, 3)
    assert r > 200 and g < 60 and b < 60
    assert any("CMYK" in n for n in out.notes)


def test_grayscale_becomes_three_equal_channels():
    gray = Image.fromarray(np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1)), "L")
    out = decode_image(_encode(gray, "PNG"))
    assert out.rgb.shape == (64, 64, 3)
    assert np.array_equal(out.rgb[:, :, 0], out.rgb[:, :, 2])
    assert out.rgb[0, 10, 0] == 40


def test_exif_orientation_is_applied():
    arr = np.zeros((60, 100, 3), np.uint8)  # 100 wide, 60 high, a white block at the top-left
    arr[:20, :20] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    out = decode_image(_encode(Image.fromarray(arr), "JPEG", exif=exif.tobytes(), quality=95))
    assert out.rgb.shape == (100, 60, 3)  # upright: 60 wide, 100 high
    assert out.rgb[5:15, 45:55].mean() > 200  # the block moved to the top-right
    assert any("EXIF" in n for n in out.notes)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP"])
def test_common_formats_round_trip(fmt):
    out = decode_image(_encode(_rgb((80, 60), (200, 30, 40)), fmt))
    assert out.rgb.shape == (60, 80, 3) and out.size == (80, 60)
    assert np.abs(out.rgb[30, 40].astype(int) - (200, 30, 40)).max() < 12


def test_accepts_file_like_and_path(tmp_path):
    data = _encode(_rgb(), "PNG")
    p = tmp_path / "x.png"
    p.write_bytes(data)
    assert np.array_equal(decode_image(io.BytesIO(data)).rgb, decode_image(str(p)).rgb)


def test_encode_png_round_trips():
    rgb = np.random.default_rng(1).integers(0, 255, (50, 70, 3), np.uint8)
    assert np.array_equal(decode_image(encode_png(rgb)).rgb, rgb)
