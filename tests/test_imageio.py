"""Decoding untrusted images: every bad input of the issue's list becomes a clear ImageError,
every odd-but-valid one becomes upright 8-bit RGB."""

from __future__ import annotations

import io
import os
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from fer_core.recognition.imageio import ACCEPTED_FORMATS, MAX_PIXELS, ImageError, decode_image, encode_png


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


def test_refused_formats_are_named_with_the_accepted_ones():
    """One source of truth: the messages list ``ACCEPTED_FORMATS``."""
    accepted = ", ".join(ACCEPTED_FORMATS.values())
    assert accepted == "JPEG, PNG, WebP, BMP, GIF"
    cases = {
        _encode(_rgb(), "TIFF"): "the file is in TIFF format, which this app does not accept",
        _encode(_rgb(), "ICO"): "in ICO format",
        _encode(_rgb(), "PPM"): r"in Netpbm \(PPM/PGM/PBM\) format",
        b"\x00\x00\x00\x18ftypheic" + bytes(200): "in HEIC format",  # an iPhone photo: the magic is enough
        b"8BPS" + bytes(200): r"in Photoshop \(PSD\) format",
        _encode(_rgb(), "TGA"): "not an image this app can read",  # TGA has no magic number to name it by
    }
    for data, message in cases.items():
        with pytest.raises(ImageError, match=message) as info:
            decode_image(data)
        assert str(info.value).endswith(f"({'accepted' if 'format' in message else 'supported'}: {accepted})")


def test_refused_format_parsers_never_see_the_bytes(monkeypatch):
    """Image.open is restricted to the accepted formats: the TIFF parser is not even tried."""
    Image.init()
    calls = []
    factory, accept = Image.OPEN["TIFF"]
    monkeypatch.setitem(Image.OPEN, "TIFF", (lambda *a: calls.append(a) or factory(*a), accept))
    with pytest.raises(ImageError, match="TIFF"):
        decode_image(_encode(_rgb(), "TIFF"))
    assert calls == []


def test_damaged_header_of_an_accepted_format_is_named():
    with pytest.raises(ImageError, match="the PNG header is damaged"):
        decode_image(b"\x89PNG\r\n\x1a\n" + b"\xff" * 40)
    with pytest.raises(ImageError, match="the GIF header is damaged"):
        decode_image(b"GIF89a\x01")


def test_multi_picture_jpeg_is_a_jpeg():
    """Pillow calls a JPEG holding several pictures (some cameras' 3D and depth photos) MPO."""
    data = _encode(_rgb((64, 64), (200, 30, 40)), "MPO", save_all=True, append_images=[_rgb((64, 64), (0, 0, 255))])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    out = decode_image(data)
    assert np.abs(out.rgb[32, 32].astype(int) - (200, 30, 40)).max() < 12
    assert any("JPEG with several pictures: using its first frame" in n for n in out.notes)


def test_animated_gif_frames_are_not_counted(monkeypatch):
    """Counting walks every frame: seconds for a 50 MB GIF of tiny frames. Only 'more than one?' is asked."""
    from PIL import GifImagePlugin

    def no_counting(self):
        raise AssertionError("n_frames walked the whole file")

    monkeypatch.setattr(GifImagePlugin.GifImageFile, "n_frames", property(no_counting))
    frames = [Image.new("L", (64, 64), v) for v in (0, 128, 255)]
    out = decode_image(_encode(frames[0], "GIF", save_all=True, append_images=frames[1:]))
    assert any("animated" in n for n in out.notes)


def _jpeg_with_raw_exif(typ: int, count: int, value: bytes) -> bytes:
    """A JPEG whose EXIF orientation tag has the given TIFF type, count and 4 value bytes."""
    ifd = struct.pack(">HHHI", 1, 0x0112, typ, count) + value + struct.pack(">I", 0)
    return _encode(_rgb((100, 60)), "JPEG", exif=b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08" + ifd)


@pytest.mark.parametrize(("exif", "note"), [
    (_jpeg_with_raw_exif(3, 1, b"\x00\x09\x00\x00"), "invalid EXIF orientation ignored"),  # 9: not one of the 8
    (_jpeg_with_raw_exif(2, 2, b"6\x00\x00\x00"), "invalid EXIF orientation ignored"),  # text "6"
    (_encode(_rgb((100, 60)), "JPEG", exif=b"Exif\x00\x00MM\x00\x2a\xff\xff\xff\xff"), None),  # no IFD at all
], ids=["orientation-9", "orientation-as-text", "damaged-exif"])
@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_odd_exif_orientation_is_ignored_not_fatal(exif, note):
    """Metadata is no reason to refuse a photo; and no note may claim a rotation that did not happen."""
    out = decode_image(exif)
    assert out.rgb.shape == (60, 100, 3)
    assert not any("rotated" in n for n in out.notes)
    assert (note in out.notes) if note else out.notes == []


def test_special_files_are_not_read(tmp_path):
    """/dev/zero would be read until memory runs out; a FIFO would block forever."""
    with pytest.raises(ImageError, match="not a regular file"):
        decode_image("/dev/zero")
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match="not a regular file"):
        decode_image(fifo)


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
    assert any("animated image: using its first frame" in n for n in out.notes)


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
