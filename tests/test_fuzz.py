"""Hostile uploads: random bytes, truncated and corrupted files, headers that lie about the size and
exotic formats must each end quickly with the decoder's own user-facing error (``ImageError``,
``VideoError``, ``DatasetError``) and a one-line message, never with another exception.

Property tests with hypothesis, derandomized and without an example database, so that every run (and
CI) tries the same examples. ``FER_FUZZ_SCALE=20`` multiplies the number of examples for a deeper
search on a developer's machine.
"""

from __future__ import annotations

import io
import os
import re
import resource
import struct
import time
import zlib
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from fer_core.data.dataset import (
    DatasetError,
    available_splits,
    decode_face,
    load_split,
    split_class_counts,
    validate_dataset,
)
from fer_core.models.checkpoint import save_checkpoint
from fer_core.models.zoo import ModelConfig, create_model
from fer_core.recognition.imageio import ACCEPTED_FORMATS, MAX_PIXELS, ImageError, decode_image
from fer_core.recognition.recognizer import Recognizer
from fer_core.recognition.video import VideoAnalysis, VideoError, VideoResult, analyse_video
from tests.conftest import write_test_video

_SCALE = max(1, int(os.environ.get("FER_FUZZ_SCALE", "1")))

# Pillow warns about the damaged metadata these tests feed it (e.g. "Tag data larger than file"): expected here
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def fuzz(examples: int, deadline_ms: int) -> settings:
    """Reproducible settings; the deadline is what "each example ends quickly" means, with room for a
    loaded 2-core CI machine."""
    return settings(max_examples=examples * _SCALE, deadline=deadline_ms, derandomize=True, database=None)


_INTERNAL = re.compile(r"object at 0x|<class '|<[\w.]+>|Traceback|\b\w+(Error|Exception)\(")


def assert_user_message(exc: BaseException, *hide: str) -> None:
    """The message is one short, non-empty line in words: no traceback, no repr of an internal object.
    ``hide``: paths the message may quote (they are long and not the message's fault)."""
    text = str(exc)
    for h in hide:
        text = text.replace(h, "PATH")
    assert text.strip() == text and text, f"empty or padded message: {text!r}"
    assert "\n" not in text and "\r" not in text, f"multi-line message: {text!r}"
    assert len(text) <= 300, f"message of {len(text)} characters: {text[:120]!r}..."
    assert not _INTERNAL.search(text), f"internal repr in message: {text!r}"


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports KiB); a rise means a new peak."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ============================================================================= images


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _noise(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), np.uint8))


@cache
def image_samples() -> dict[str, bytes]:
    """Small valid files of every accepted format and the variants uploads bring (built once)."""
    rgb = _noise(64, 48)
    rgba = rgb.copy()
    rgba.putalpha(Image.linear_gradient("L").resize((64, 48)))
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    frames = [_noise(64, 48, seed).convert("P") for seed in (1, 2, 3)]
    exif = Image.Exif()
    exif[0x0112] = 6
    gray16 = Image.fromarray(np.random.default_rng(4).integers(0, 65535, (48, 64)).astype(np.uint16))
    s = {
        "jpeg": _encode(rgb, "JPEG"),
        "jpeg-progressive": _encode(rgb, "JPEG", progressive=True),
        "jpeg-gray": _encode(rgb.convert("L"), "JPEG"),
        "jpeg-cmyk": _encode(rgb.convert("CMYK"), "JPEG"),
        "jpeg-exif-rotated": _encode(rgb, "JPEG", exif=exif.tobytes()),
        "jpeg-mpo": _encode(rgb, "MPO", save_all=True, append_images=[_noise(64, 48, 5)]),
        "png": _encode(rgb, "PNG"),
        "png-rgba": _encode(rgba, "PNG"),
        "png-16bit": _encode(gray16, "PNG"),
        "png-palette-transparency": _encode(pal, "PNG", transparency=3),
        "png-1bit": _encode(rgb.convert("1"), "PNG"),
        "png-animated": _encode(frames[0], "PNG", save_all=True, append_images=frames[1:]),
        "webp": _encode(rgb, "WEBP"),
        "webp-lossless-alpha": _encode(rgba, "WEBP", lossless=True),
        "webp-animated": _encode(rgb, "WEBP", save_all=True, append_images=[_noise(64, 48, 6)]),
        "bmp": _encode(rgb, "BMP"),
        "bmp-palette": _encode(pal, "BMP"),
        "bmp-1bit": _encode(rgb.convert("1"), "BMP"),
        "gif": _encode(pal, "GIF"),
        "gif-transparency": _encode(pal, "GIF", transparency=3),
        "gif-animated": _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0),
    }
    for fmt in ("JPEG", "PNG", "WEBP", "BMP", "GIF"):
        s[f"{fmt.lower()}-1x1"] = _encode(Image.new("RGB", (1, 1), (9, 99, 199)), fmt)
    return s


def decode_cleanly(data: bytes, **kw) -> np.ndarray | None:
    """``decode_image``'s pixels, or None where it refused the input with a proper ``ImageError``;
    any other exception fails the test."""
    try:
        out = decode_image(data, **kw)
    except ImageError as exc:
        assert_user_message(exc)
        return None
    assert out.rgb.dtype == np.uint8 and out.rgb.ndim == 3 and out.rgb.shape[2] == 3
    assert all(isinstance(n, str) and n and "\n" not in n for n in out.notes)
    return out.rgb


@st.composite
def damaged(draw: st.DrawFn, files: dict[str, bytes]) -> bytes:
    """A valid file truncated, with bytes changed (anywhere, or in the header where sizes and lengths
    live) or with random bytes spliced in."""
    data = bytearray(files[draw(st.sampled_from(sorted(files)), label="file")])
    kind = draw(st.sampled_from(["truncate", "flip", "flip-header", "splice"]), label="kind")
    if kind == "truncate":
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    if kind == "splice":
        at = draw(st.integers(0, len(data)))
        return bytes(data[:at] + draw(st.binary(min_size=1, max_size=64)) + data[at:])
    end = min(len(data), 96) if kind == "flip-header" else len(data)
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, end - 1))] = draw(st.integers(0, 255))
    return bytes(data)


_IMAGE_MAGIC = [b"", b"\xff\xd8\xff", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", b"\x89PNG\r\n\x1a\n",
                b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR", b"GIF89a", b"GIF87a", b"BM", b"RIFF\x00\x01\x00\x00WEBPVP8 ",
                b"RIFF\x00\x01\x00\x00WEBPVP8L", b"RIFF\x00\x01\x00\x00WEBPVP8X", b"II*\x00", b"8BPS",
                b"\x00\x00\x01\x00", b"P6\n", b"\x00\x00\x00\x1cftypheic"]


@fuzz(examples=1000, deadline_ms=2000)
@given(magic=st.sampled_from(_IMAGE_MAGIC), tail=st.binary(max_size=2048))
def test_random_bytes_are_refused_with_an_image_error(magic: bytes, tail: bytes) -> None:
    """Random bytes, also behind each format's magic number so that they reach its parser."""
    assert decode_cleanly(magic + tail, min_side=1) is None


@fuzz(examples=1500, deadline_ms=2000)
@given(data=damaged(image_samples()))
def test_truncated_and_corrupted_images_decode_or_raise_image_error(data: bytes) -> None:
    """A cap of 1 MP: a changed size byte can turn 64x48 into a plausible 40-megapixel picture that would
    rightly be decoded (slowly); refusing what is over the cap is the lying-header tests' business."""
    decode_cleanly(data, min_side=1, max_pixels=1_000_000)


def test_every_sample_truncated_at_many_points() -> None:
    """Systematic where the random search above is sparse: ~60 cuts of each file (a truncated animated GIF
    made Pillow's frame count raise IndexError at about one cut in twelve)."""
    for data in image_samples().values():
        for cut in range(0, len(data), max(1, len(data) // 60)):
            decode_cleanly(data[:cut], min_side=1, max_pixels=1_000_000)


def test_every_sample_is_valid() -> None:
    """The fuzzing above starts from files that do decode (else it would test nothing but refusals)."""
    for name, data in image_samples().items():
        assert decode_cleanly(data, min_side=1) is not None, name


# ----------------------------------------------------------------------------- headers that lie


def _png_header_only(w: int, h: int) -> bytes:
    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def _gif_header_only(w: int, h: int) -> bytes:
    """Logical screen and first frame both w x h, a 2-colour palette, no image data."""
    screen = struct.pack("<HHBBB", w, h, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    return b"GIF89a" + screen + b"\x2c" + struct.pack("<HHHHB", 0, 0, w, h, 0) + b"\x02\x00\x3b"


def _bmp_header_only(w: int, h: int) -> bytes:
    """24-bit BITMAPINFOHEADER; a negative height is a legal top-down bitmap."""
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, 0, 2835, 2835, 0, 0)
    offset = 14 + len(info)
    return b"BM" + struct.pack("<IHHI", offset, 0, 0, offset) + info


def _jpeg_header_only(w: int, h: int) -> bytes:
    """SOI, a baseline SOF0 claiming w x h with 3 components, an empty scan, EOI."""
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, h, w, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    sos = b"\xff\xda" + struct.pack(">HB", 12, 3) + b"\x01\x00\x02\x11\x03\x11\x00\x3f\x00"
    return b"\xff\xd8" + sof + sos + b"\xff\xd9"


def _webp_header_only(w: int, h: int) -> bytes:
    """An extended-format (VP8X) header with a w x h canvas and no frame."""
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes(4) + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x


_HEADER_ONLY = {"png": _png_header_only, "gif": _gif_header_only, "bmp": _bmp_header_only,
                "jpeg": _jpeg_header_only, "webp": _webp_header_only}
_MAX_SIDE = {"png": 2**31 - 1, "gif": 65535, "bmp": 2**31 - 1, "jpeg": 65535, "webp": 2**24}


def assert_refused_from_the_header(data: bytes) -> None:
    """Refused fast, without allocating the claimed pixels, and by the header checks: the file holds no
    pixel data, so an error from decoding would say "truncated" or "data is damaged"."""
    rss, t0 = peak_rss_mb(), time.perf_counter()
    with pytest.raises(ImageError) as info:
        decode_image(data)
    assert time.perf_counter() - t0 < 1.0
    assert peak_rss_mb() - rss < 64
    assert_user_message(info.value)
    assert re.search(r"too large|header", str(info.value)), str(info.value)


@pytest.mark.parametrize(
    ("fmt", "w", "h"),
    [("png", 100_000, 100_000), ("png", 2**31 - 1, 2**31 - 1), ("gif", 65535, 65535), ("bmp", 100_000, -100_000),
     ("bmp", 1000, -(2**31)), ("bmp", 2**31 - 1, 2**31 - 1), ("jpeg", 65500, 65500), ("webp", 2**24, 2**24),
     ("png", 8000, 7000), ("gif", 8000, 7000), ("bmp", 8000, -7000), ("jpeg", 8000, 7000), ("webp", 8000, 7000)],
)
def test_lying_header_is_refused_before_decoding(fmt: str, w: int, h: int) -> None:
    assert_refused_from_the_header(_HEADER_ONLY[fmt](w, h))


@fuzz(examples=200, deadline_ms=2000)
@given(fmt=st.sampled_from(sorted(_HEADER_ONLY)), data=st.data())
def test_any_size_over_the_cap_is_refused_before_decoding(fmt: str, data: st.DataObject) -> None:
    side = _MAX_SIDE[fmt]
    w = data.draw(st.integers(MAX_PIXELS // side + 2, side), label="width")
    h = data.draw(st.integers(MAX_PIXELS // w + 1, side), label="height")
    if fmt == "bmp" and data.draw(st.booleans(), label="top-down"):
        h = -h
    assert_refused_from_the_header(_HEADER_ONLY[fmt](w, h))


# ----------------------------------------------------------------------------- odd but valid


@fuzz(examples=60, deadline_ms=2000)
@given(fmt=st.sampled_from([("PNG", {}), ("BMP", {}), ("WEBP", {"lossless": True})]),
       arr=arrays(np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 40), st.just(3))))
def test_lossless_formats_round_trip_at_any_size(fmt: tuple[str, dict], arr: np.ndarray) -> None:
    """1x1 to 40x40: decoded pixels are exactly the encoded ones."""
    name, kw = fmt
    rgb = decode_cleanly(_encode(Image.fromarray(arr), name, **kw), min_side=1)
    assert rgb is not None and np.array_equal(rgb, arr)


@pytest.mark.parametrize("fmt", sorted(ACCEPTED_FORMATS))
def test_1x1_images(fmt: str) -> None:
    data = image_samples()[f"{fmt.lower()}-1x1"]
    rgb = decode_cleanly(data, min_side=1)
    assert rgb is not None and rgb.shape == (1, 1, 3)
    with pytest.raises(ImageError, match=r"too small: 1x1 pixels") as info:
        decode_image(data)
    assert_user_message(info.value)


@fuzz(examples=40, deadline_ms=2000)
@given(arr=arrays(np.uint16, st.tuples(st.integers(1, 24), st.integers(1, 24))))
def test_16bit_png_is_scaled_and_rounded_exactly(arr: np.ndarray) -> None:
    rgb = decode_cleanly(_encode(Image.fromarray(arr), "PNG"), min_side=1)
    expected = np.floor(arr.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8)
    assert rgb is not None and np.array_equal(rgb[:, :, 0], expected) and np.array_equal(rgb[:, :, 2], expected)


@fuzz(examples=40, deadline_ms=2000)
@given(fmt=st.sampled_from(["PNG", "GIF"]), index=arrays(np.uint8, st.tuples(st.integers(1, 16), st.integers(1, 16)),
                                                         elements=st.integers(0, 3)),
       palette=arrays(np.uint8, (4, 3)), clear=st.integers(0, 3))
def test_palette_with_transparency_is_flattened_onto_white(fmt: str, index: np.ndarray, palette: np.ndarray,
                                                           clear: int) -> None:
    im = Image.fromarray(index, "P")
    im.putpalette(palette.ravel().tolist())
    rgb = decode_cleanly(_encode(im, fmt, transparency=clear), min_side=1)
    expected = palette[index]
    expected[index == clear] = 255
    assert rgb is not None and np.array_equal(rgb, expected)


@fuzz(examples=30, deadline_ms=2000)
@given(colours=st.lists(st.tuples(*[st.integers(0, 255)] * 3), min_size=2, max_size=5, unique=True),
       size=st.tuples(st.integers(1, 32), st.integers(1, 32)))
def test_animated_gif_gives_its_first_frame(colours: list[tuple[int, int, int]], size: tuple[int, int]) -> None:
    frames = []
    for c in colours:  # one-colour palettes: the colours survive exactly, and no two frames are alike
        frames.append(Image.new("P", size, 0))
        frames[-1].putpalette(list(c) * 256)
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=40)
    out = decode_image(data, min_side=1)
    assert out.size == size and (out.rgb == colours[0]).all()
    assert any("animated" in n for n in out.notes)


# ----------------------------------------------------------------------------- exotic formats


class _ParserRan(BaseException):
    """Raised by a refused format's parser; a BaseException, so no ``except Exception`` can hide it."""


def _exotic_files() -> dict[str, bytes]:
    """A small file of every other format Pillow can write here (AVIF, JPEG 2000, ... where built in)."""
    rgb = _noise(64, 48)
    out = {}
    for fmt in ("TIFF", "ICO", "PPM", "PCX", "TGA", "JPEG2000", "QOI", "DDS", "SGI", "IM", "ICNS", "AVIF", "PDF",
                "SPIDER", "MSP", "XBM", "EPS", "PALM"):
        im = rgb.convert("1") if fmt in ("MSP", "XBM", "PALM") else rgb.convert("F") if fmt == "SPIDER" else rgb
        try:
            out[fmt] = _encode(im, fmt)
        except (OSError, KeyError, ValueError):
            continue  # not buildable with this Pillow
    return out


_EXOTIC = _exotic_files()
_NAMED = {"TIFF": "TIFF", "ICO": "ICO", "PPM": "Netpbm", "JPEG2000": "JPEG 2000", "QOI": "QOI", "DDS": "DDS",
          "ICNS": "ICNS", "AVIF": "AVIF"}


@pytest.fixture
def exotic_parsers_explode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every parser but the accepted formats' ones raises ``_ParserRan`` if it is ever handed the bytes."""
    Image.init()

    def explode(*_args, **_kw):
        raise _ParserRan

    for fmt, (_factory, accept) in list(Image.OPEN.items()):
        if fmt not in ACCEPTED_FORMATS:
            monkeypatch.setitem(Image.OPEN, fmt, (explode, accept))


@pytest.mark.parametrize("fmt", sorted(_EXOTIC))
def test_exotic_format_is_refused_without_running_its_parser(fmt: str, exotic_parsers_explode) -> None:
    with pytest.raises(ImageError) as info:
        decode_image(_EXOTIC[fmt])
    assert_user_message(info.value)
    assert "JPEG, PNG, WebP, BMP, GIF" in str(info.value)
    if fmt in _NAMED:
        assert f"in {_NAMED[fmt]}" in str(info.value) and "does not accept" in str(info.value)


def test_exotic_samples_exist() -> None:
    """The parametrization above is not silently empty (TIFF, ICO and PPM are always writable)."""
    assert {"TIFF", "ICO", "PPM"} <= set(_EXOTIC)


@fuzz(examples=400, deadline_ms=2000)
@given(data=damaged(_EXOTIC))
def test_damaged_exotic_files_are_refused(data: bytes) -> None:
    assert decode_cleanly(data, min_side=1) is None


# ============================================================================= video


@pytest.fixture(scope="module")
def recognizer(tmp_path_factory: pytest.TempPathFactory) -> Recognizer:
    """The tiny network with Haar (it loads in milliseconds); decoding, not recognition, is under test."""
    torch.manual_seed(0)
    path = save_checkpoint(create_model("tiny").eval(), ModelConfig(arch="tiny"),
                           tmp_path_factory.mktemp("weights") / "tiny.safetensors")
    return Recognizer(path, detector="haar")


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="module")
def clips(clip_dir: Path) -> dict[str, bytes]:
    """An 8-frame 64x48 MPEG-4 clip in each container the page accepts most."""
    out = {}
    for ext in ("mp4", "avi", "mkv"):
        path = clip_dir / f"valid.{ext}"
        write_test_video(path, [np.full((48, 64), 40 + 20 * i, np.uint8) for i in range(8)], codec="mpeg4")
        out[ext] = path.read_bytes()
    return out


def analyse_cleanly(data: bytes, ext: str, recognizer: Recognizer, clip_dir: Path, how: str) -> None:
    """Upload (file-like) or path, the page's ``analyse_video`` or the CLI's ``VideoAnalysis`` loop:
    a result or a ``VideoError``, and quickly (the deadline)."""
    path = clip_dir / f"fuzz.{ext}"
    path.write_bytes(data)
    source = io.BytesIO(data) if how.startswith("upload") else path
    try:
        if how.endswith("frames"):
            with VideoAnalysis(source, recognizer, every=2) as clip:
                for frame in clip:
                    assert frame.rgb.ndim == 3
        else:
            assert isinstance(analyse_video(source, recognizer, every=2), VideoResult)
    except VideoError as exc:
        assert_user_message(exc, str(path))


_HOW = st.sampled_from(["upload", "path", "upload-frames", "path-frames"])
_VIDEO_MAGIC = [b"", b"\x1aE\xdf\xa3", b"RIFF\x00\x10\x00\x00AVI LIST", b"\x00\x00\x00\x18ftypisom",
                b"\x00\x00\x00\x14ftypqt  ", b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3", b"GIF89a", b"OggS"]


@fuzz(examples=200, deadline_ms=5000)
@given(magic=st.sampled_from(_VIDEO_MAGIC), tail=st.binary(max_size=4096), how=_HOW)
def test_random_bytes_video_raises_only_video_error(magic: bytes, tail: bytes, how: str, recognizer: Recognizer,
                                                    clip_dir: Path) -> None:
    analyse_cleanly(magic + tail, "mp4", recognizer, clip_dir, how)


@fuzz(examples=400, deadline_ms=5000)
@given(data=st.data(), how=_HOW)
def test_truncated_and_corrupted_videos_raise_only_video_error(data: st.DataObject, how: str, recognizer: Recognizer,
                                                               clips: dict[str, bytes], clip_dir: Path) -> None:
    ext = data.draw(st.sampled_from(sorted(clips)), label="container")
    analyse_cleanly(data.draw(damaged({ext: clips[ext]}), label="bytes"), ext, recognizer, clip_dir, how)


def test_the_valid_clips_are_analysed(recognizer: Recognizer, clips: dict[str, bytes]) -> None:
    for ext, data in clips.items():
        assert analyse_video(io.BytesIO(data), recognizer, every=1).frames_analysed == 8, ext


# ============================================================================= fer2013.csv

_PIXELS = " ".join(["128"] * 2304)
_GOOD_CSV = f"emotion,pixels,Usage\n3,{_PIXELS},Training\n5,{_PIXELS},PrivateTest\n".encode()


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("csv") / "fer2013.csv"


def read_dataset_cleanly(path: Path, content: bytes) -> list[str]:
    """Every public reader of a fer2013.csv on ``content``: a result or a proper ``DatasetError``.
    Returns the messages."""
    path.write_bytes(content)
    calls = [lambda: available_splits(path), lambda: validate_dataset(path), lambda: split_class_counts(path),
             lambda: load_split(path, "train", use_cache=False), lambda: load_split(path, "test", use_cache=False)]
    messages = []
    for call in calls:
        try:
            call()
        except DatasetError as exc:
            assert_user_message(exc, str(path))
            messages.append(str(exc))
    return messages


_TOKENS = ["0", "255", "128", "256", "-1", "1.5", "x", "", "²", "٣", "1_0", "99999999999999999999", "0x10", "nan"]


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    """fer2013.csv look-alikes: odd headers, emotions, pixel strings, Usage values, encodings."""
    header = draw(st.one_of(st.sampled_from(["emotion,pixels,Usage", "Usage,pixels,emotion", "emotion,pixels",
                                             "Emotion,Pixels,Usage", "emotion,pixels,Usage,extra", ""]),
                            st.text(max_size=30)))
    emotion = st.one_of(st.integers(-2, 9).map(str), st.sampled_from(["²", "٣", "1_0", " 3 ", "", "9" * 5000]),
                        st.text(max_size=6))
    count = st.sampled_from([0, 1, 2303, 2304, 2305])
    pixels = st.one_of(st.just(_PIXELS), st.builds(lambda t, n: " ".join([t] * n), st.sampled_from(_TOKENS), count),
                       st.builds(lambda t, i: " ".join(["7"] * i + [t] + ["7"] * (2303 - i)),
                                 st.sampled_from(_TOKENS), st.integers(0, 2303)),
                       st.text(max_size=20))
    usage = st.one_of(st.sampled_from(["Training", "PublicTest", "PrivateTest"]), st.text(max_size=12))
    rows = draw(st.lists(st.tuples(emotion, pixels, usage).map(lambda r: ",".join(r)), max_size=4))
    text = "\n".join([header, *rows]) + draw(st.sampled_from(["", "\n", "\r\n"]))
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1"]))
    data = bytearray(text.encode(encoding, errors="replace"))
    if data and draw(st.booleans()):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@fuzz(examples=300, deadline_ms=3000)
@given(content=csv_files())
def test_csv_look_alikes_give_only_dataset_errors(content: bytes, csv_path: Path) -> None:
    read_dataset_cleanly(csv_path, content)


@fuzz(examples=300, deadline_ms=3000)
@given(content=st.one_of(st.binary(max_size=2048), damaged({"csv": _GOOD_CSV})))
def test_random_and_damaged_csv_bytes_give_only_dataset_errors(content: bytes, csv_path: Path) -> None:
    read_dataset_cleanly(csv_path, content)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"emotion,pixels,Usage\n0," + b"1 " * 70_000 + b",Training\n", "line 2: .*a field is over 128 KB"),
        (b"label,image,split\n0,1,Training\n", r"lacks column\(s\) Usage, emotion, pixels .*found 'label,image,split'"),
        (b"emotion,pixels\n0,1\n", r"lacks column\(s\) Usage"),
        (_GOOD_CSV.decode().encode("utf-16"), "not a UTF-8 text CSV"),
        (b"\x00\x01\x02\xff" * 100, "not a UTF-8 text CSV"),
        (b"emotion,pixels,Usage\n\xff\xfe," + _PIXELS.encode() + b",Training\n",
         "line 2: emotion '.*' is not an integer"),
        (f"emotion,pixels,Usage\n²,{_PIXELS},Training\n".encode(), "line 2: emotion '²' is not an integer"),
        (f"emotion,pixels,Usage\n{'9' * 5000},{_PIXELS},Training\n".encode(),
         r"line 2: emotion 9{24}\.\.\. out of range"),
        (b"emotion,pixels,Usage\n0,1 2 3,Training\n", "line 2: 3 pixels, expected 2304"),
        (f"emotion,pixels,Usage\n0,{' '.join(['1e3'] * 2304)},Training\n".encode(), "pixels must be integers"),
        (f"emotion,pixels,Usage\n0,{' '.join(['99999999999999999999'] * 2304)},Training\n".encode(),
         "pixels must be integers"),
        (f"emotion,pixels,Usage\n0,{_PIXELS},{'x' * 100_000}\n".encode(), r"Usage 'x{24}\.\.\.' is not one of"),
        (f'emotion,pixels,Usage\n"1\n2",{_PIXELS},Training\n'.encode(), "emotion '1 2' is not an integer"),
    ],
    ids=["empty", "field-over-128KB", "wrong-columns", "missing-column", "utf-16", "binary", "not-utf-8",
         "superscript-digit", "5000-digit-emotion", "wrong-pixel-count", "float-pixels", "pixels-beyond-64-bits",
         "100KB-usage", "multi-line-field"],
)
def test_bad_csv_gives_one_clear_line(content: bytes, message: str, csv_path: Path) -> None:
    messages = read_dataset_cleanly(csv_path, content)
    assert messages and any(re.search(message, m) for m in messages), messages


@pytest.mark.parametrize("bom", [b"\xef\xbb\xbf", b"\xef\xbb\xbf\xef\xbb\xbf"], ids=["bom", "bom-twice"])
def test_csv_with_a_bom_before_the_header_loads(bom: bytes, csv_path: Path) -> None:
    assert read_dataset_cleanly(csv_path, bom + _GOOD_CSV) == []
    assert load_split(csv_path, "train", use_cache=False).labels.tolist() == [3]


def test_unusual_digits_are_not_counted_as_classes(csv_path: Path) -> None:
    """Counting rows for a time estimate skips what loading would refuse (it raised ValueError on '²')."""
    csv_path.write_bytes(f"emotion,pixels,Usage\n²,{_PIXELS},Training\n3,{_PIXELS},Training\n".encode())
    assert split_class_counts(csv_path) == {"train": (0, 0, 0, 1, 0, 0, 0)}


# ============================================================================= folder datasets


@cache
def face_files() -> dict[str, bytes]:
    face = np.random.default_rng(0).integers(0, 255, (48, 48), np.uint8)
    return {ext: cv2.imencode(f".{ext}", face)[1].tobytes() for ext in ("jpg", "png")}


def decode_face_cleanly(data: bytes) -> None:
    rss, t0 = peak_rss_mb(), time.perf_counter()
    try:
        img = decode_face(data, "train/happy/x.png")
        assert img.shape == (48, 48) and img.dtype == np.uint8
    except DatasetError as exc:
        assert_user_message(exc)
        assert str(exc).startswith("train/happy/x.png: ")
    assert time.perf_counter() - t0 < 1.0
    assert peak_rss_mb() - rss < 200


@fuzz(examples=800, deadline_ms=2000)
@given(data=st.one_of(st.builds(lambda m, t: m + t, st.sampled_from(_IMAGE_MAGIC), st.binary(max_size=512)),
                      damaged(face_files())))
def test_folder_images_decode_or_raise_dataset_error(data: bytes) -> None:
    decode_face_cleanly(data)


def _png_chunk(tag: bytes, body: bytes, length: int | None = None) -> bytes:
    crc = struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)
    return struct.pack(">I", len(body) if length is None else length) + tag + body + crc


_PNG_GRAY_48 = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 48, 48, 8, 0, 0, 0, 0))
_PNG_GRAY_HUGE = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0))
_HOSTILE_FACES = {
    # OpenCV's PNG reader allocated what a chunk's length claimed: 3.5 GB and seconds for 45 bytes
    "chunk-claims-3.5GB": b"\x89PNG\r\n\x1a\n" + _PNG_GRAY_48 + _png_chunk(b"IEND", b"", length=0xDC000000),
    # over OpenCV's 2**30-pixel cap: cv2.error escaped
    "100000x100000": b"\x89PNG\r\n\x1a\n" + _PNG_GRAY_HUGE + _png_chunk(b"IDAT", zlib.compress(bytes(1000)))
                     + _png_chunk(b"IEND", b""),
    "tiff-named-png": _encode(Image.new("L", (48, 48)), "TIFF"),
}


@pytest.mark.parametrize("name", sorted(_HOSTILE_FACES))
def test_hostile_file_in_a_folder_dataset_is_named(name: str, tmp_path: Path) -> None:
    decode_face_cleanly(_HOSTILE_FACES[name])
    for split in ("train", "test"):
        d = tmp_path / "fer" / split / "happy"
        d.mkdir(parents=True)
        cv2.imwrite(str(d / "ok.png"), np.zeros((48, 48), np.uint8))
    (tmp_path / "fer" / "train" / "happy" / "hostile.png").write_bytes(_HOSTILE_FACES[name])
    with pytest.raises(DatasetError, match=r"hostile\.png: not a readable image") as info:
        load_split(tmp_path / "fer", "train", use_cache=False)
    assert_user_message(info.value, str(tmp_path))

