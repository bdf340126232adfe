"""Decoding untrusted images into plain RGB arrays, or a clear ``ImageError``.

Uploads and CLI arguments are whatever people have: phone photos rotated by EXIF,
animated GIFs, PNGs with alpha or 16 bits per channel, CMYK JPEGs from print workflows,
truncated downloads, renamed PDFs. Every one of them either becomes an ``(H, W, 3)``
uint8 RGB array (with a note saying what was done to it) or raises ``ImageError`` whose
message can be shown to a user as is. The pixel count is checked from the header, before
any pixel is decoded, so a small file that claims to be gigapixels cannot exhaust memory; and
only the parsers of the formats the app accepts (``ACCEPTED_FORMATS``) ever read the bytes.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_PIXELS = 50_000_000
"""50 MP: more than any phone photo, and ~150 MB as RGB, which one server process can afford."""

MIN_SIDE = 48
"""The network's input size; a smaller image cannot hold a face worth classifying."""

ACCEPTED_FORMATS = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WebP", "BMP": "BMP", "GIF": "GIF"}
"""Pillow's name of each format the app accepts -> the name users know. Only these formats' parsers ever
read an upload: every other Pillow plugin (TIFF, PSD, ICO, ...) is a parser of untrusted bytes the app
does not need. GIFs and other animations are read as their first frame."""

IMAGE_TYPES = ("jpg", "jpeg", "png", "webp", "bmp", "gif")
"""The file extensions of ``ACCEPTED_FORMATS``: what the upload widgets and the CLI accept (the content
is checked anyway)."""

_ACCEPTED_TEXT = ", ".join(ACCEPTED_FORMATS.values())

_SAME_FORMAT = {"MPO": "JPEG"}
"""Pillow names a JPEG holding several pictures (3D and depth photos from some cameras and phones) MPO;
to its owner it is a JPEG, and its first picture is an ordinary one."""

_SIGNATURES: tuple[tuple[int, tuple[bytes, ...], str], ...] = (
    (0, (b"\xff\xd8\xff",), "JPEG"),
    (0, (b"\x89PNG\r\n\x1a\n",), "PNG"),
    (0, (b"GIF87a", b"GIF89a"), "GIF"),
    (0, (b"BM",), "BMP"),
    (8, (b"WEBP",), "WebP"),  # after "RIFF" and the size, checked below
    (0, (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"), "TIFF"),
    (8, (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"), "HEIC"),  # after "ftyp"
    (8, (b"avif", b"avis"), "AVIF"),  # after "ftyp"
    (0, (b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51"), "JPEG 2000"),
    (0, (b"\x00\x00\x00\x0cJXL \r\n\x87\n", b"\xff\x0a"), "JPEG XL"),
    (0, (b"\x00\x00\x01\x00",), "ICO"),
    (0, (b"icns",), "ICNS"),
    (0, (b"8BPS",), "Photoshop (PSD)"),
    (0, (b"qoif",), "QOI"),
    (0, (b"DDS ",), "DDS"),
    (0, tuple(f"P{kind}{space}".encode() for kind in "123456" for space in " \t\r\n"), "Netpbm (PPM/PGM/PBM)"),
)
"""Magic bytes -> the format's name, to tell a user what a file that no accepted parser took is: a
damaged file of an accepted format, or a format this app does not accept. Read, never parsed."""

_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
"""EXIF orientation -> the turn or flip that makes the picture upright (the table of ``ImageOps.exif_transpose``,
which would also rewrite the EXIF block and so fail on a damaged one)."""


class ImageError(ValueError):
    """An input that is not a usable image; the message says why, in words a user understands."""


class ImageTooLarge(ImageError):
    """An image over the pixel cap: a refusal a deployment names by its setting (``FER_MAX_PIXELS``)."""


@dataclass
class DecodedImage:
    """The decoded pixels plus what decoding had to do to get them (shown to the user as notes)."""

    rgb: np.ndarray  # (H, W, 3) uint8
    notes: list[str] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), PIL's order."""
        return self.rgb.shape[1], self.rgb.shape[0]


def _read_bytes(source: str | os.PathLike | bytes | BinaryIO) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source)
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if os.path.isdir(path):  # os.path's checks never raise (a name too long for the OS is just "no")
            raise ImageError(f"{path} is a folder, not an image")
        if os.path.exists(path) and not os.path.isfile(path):  # a FIFO or a device such as /dev/zero never ends
            raise ImageError(f"{path} is not a regular file")
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ImageError(f"cannot read {path}: {exc.strerror or exc}") from None
    if hasattr(source, "getvalue"):  # BytesIO and Streamlit's UploadedFile
        return bytes(source.getvalue())
    return source.read()


def _sniff(data: bytes) -> str | None:
    """The format's name from its magic bytes (see ``_SIGNATURES``), or None."""
    for offset, magics, name in _SIGNATURES:
        if name == "WebP" and not data.startswith(b"RIFF"):
            continue
        if name in ("HEIC", "AVIF") and data[4:8] != b"ftyp":
            continue
        if data[offset:].startswith(magics):
            return name
    return None


def _unidentified(data: bytes) -> ImageError:
    """Why no accepted parser took the file, as precisely as its magic bytes tell."""
    name = _sniff(data)
    if name in ACCEPTED_FORMATS.values():
        return ImageError(f"the {name} header is damaged: the file cannot be read as an image")
    if name:
        return _refused(name)
    return ImageError(f"not an image this app can read (supported: {_ACCEPTED_TEXT})")


def _refused(name: str) -> ImageError:
    return ImageError(f"the file is in {name} format, which this app does not accept (accepted: {_ACCEPTED_TEXT})")


def _detail(exc: BaseException) -> str:
    """Pillow's own words about bad data, when they are short and plain enough to show a user, else ''."""
    if not isinstance(exc, OSError | ValueError | SyntaxError):
        return ""  # an IndexError or struct.error from deep in a parser says nothing to a user
    text = str(exc).strip()
    plain = text and "\n" not in text and len(text) <= 100 and not any(s in text for s in ("<", "b'", 'b"', "\\x"))
    return text if plain else ""


def _damaged(exc: BaseException, what: str = "the image data is damaged and cannot be decoded") -> ImageError:
    """Any failure of a parser on untrusted bytes, as an ``ImageError`` ("truncated" where it says so)."""
    text = str(exc).lower()
    if isinstance(exc, EOFError) or any(w in text for w in ("truncated", "broken", "eof", "end of file")):
        return ImageError("the image file is truncated (incomplete download or copy?)")
    detail = _detail(exc)
    return ImageError(f"{what} ({detail})" if detail else what)


def _open_accepted(data: bytes, max_pixels: int) -> Image.Image:
    """Open lazily (header only), with no parser but the accepted formats' ones.

    Pillow's parsers report bad data with whatever exception the failing line raises (IndexError,
    struct.error, EOFError, ...), so at this boundary every exception means "not a readable image".
    """
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow's own bomb guard must not refuse what the cap allows
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=list(ACCEPTED_FORMATS))
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"the image is too large: its header claims far more than {max_pixels / 1e6:.3g} "
                            "megapixels, the most this app decodes") from None
    except UnidentifiedImageError:
        raise _unidentified(data) from None
    except Exception as exc:
        raise _damaged(exc, f"the {_sniff(data) or 'image'} header is damaged") from None
    fmt = _SAME_FORMAT.get(im.format or "", im.format or "")
    if fmt not in ACCEPTED_FORMATS:  # cannot happen with formats= above; kept as the check that matters
        raise _refused(fmt or "unknown")
    return im


def _open_checked(data: bytes, max_pixels: int, min_side: int) -> Image.Image:
    """Open lazily (header only) and refuse empty, unknown, refused, oversized and undersized images
    before a single pixel is decoded: the header's size is all a hostile file gets to cost."""
    if not data:
        raise ImageError("the file is empty (0 bytes)")
    im = _open_accepted(data, max_pixels)
    w, h = im.size
    if w <= 0 or h <= 0:
        raise ImageError(f"the image has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise ImageTooLarge(f"the image is too large: {w}x{h} = {w * h / 1e6:.3g} megapixels, "
                            f"more than the {max_pixels / 1e6:.3g} megapixels this app decodes")
    if min(w, h) < min_side:
        raise ImageError(f"the image is too small: {w}x{h} pixels; at least {min_side}x{min_side} is needed "
                         "to see a face")
    return im


def _exif_orientation(im: Image.Image, notes: list[str]) -> int:
    """The EXIF orientation (2..8) when it asks for a turn or flip, else 1. Metadata is no reason to refuse
    a photo: a damaged EXIF block, or an orientation that is not one of the eight, is ignored with a note."""
    try:
        value = im.getexif().get(0x0112, 1)
    except Exception:  # a parser on untrusted bytes: see _open_accepted
        notes.append("damaged EXIF metadata ignored")
        return 1
    if isinstance(value, int) and value in _ORIENTATION_TRANSPOSE:
        return value
    if value != 1:
        notes.append("invalid EXIF orientation ignored")
    return 1


def _decode_first_frame(im: Image.Image, notes: list[str]) -> Image.Image:
    """Decode the (first) frame's pixels and turn them upright; ``ImageError`` if the data is bad.

    ``is_animated`` looks at one frame beyond the first only, where ``n_frames`` would walk a whole GIF:
    seconds for a 50 MB file of tiny frames.
    """
    try:
        if getattr(im, "is_animated", False):
            kind = "JPEG with several pictures" if im.format == "MPO" else "animated image"
            notes.append(f"{kind}: using its first frame")
            im.seek(0)
        im.load()
    except Image.DecompressionBombError:
        raise ImageTooLarge("the image is too large to decode") from None
    except Exception as exc:  # see _open_accepted
        raise _damaged(exc) from None
    orientation = _exif_orientation(im, notes)
    if orientation != 1:
        im = im.transpose(_ORIENTATION_TRANSPOSE[orientation])
        notes.append(f"rotated upright as its EXIF orientation ({orientation}) asks")
    return im


def _flatten_onto_white(im: Image.Image) -> Image.Image:
    """Composite onto white by pasting through the alpha channel: one RGB canvas, where
    ``alpha_composite`` needs three RGBA images (~0.9 GB at the pixel cap instead of ~0.35 GB)."""
    rgba = im if im.mode == "RGBA" else im.convert("RGBA")
    canvas = Image.new("RGB", rgba.size, (255, 255, 255))
    canvas.paste(rgba, mask=rgba)
    return canvas


def _gray_to_8bit(im: Image.Image, notes: list[str]) -> np.ndarray:
    """16- or 32-bit integer gray -> (H, W) uint8. 16-bit data is scaled (65535 -> 255), not clipped, and
    rounded exactly in integers, at 4 bytes a pixel where float64 arithmetic took 16."""
    arr = np.asarray(im)
    if im.mode.startswith("I;16") or arr.max() > 255:
        scaled = np.clip(arr, 0, 65535).astype(np.uint32)
        scaled *= 255
        scaled += 32767
        scaled //= 65535
        notes.append("16-bit image scaled to 8 bits")
        return scaled.astype(np.uint8)
    notes.append("32-bit image converted to 8 bits")
    return np.clip(arr, 0, 255).astype(np.uint8)


def _to_rgb(im: Image.Image, notes: list[str]) -> np.ndarray:
    """Any mode the accepted formats decode to -> (H, W, 3) uint8 RGB; transparency is flattened onto white."""
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        return np.repeat(_gray_to_8bit(im, notes)[:, :, None], 3, axis=2)
    if mode == "CMYK":
        notes.append("CMYK image converted to RGB")
        return np.asarray(im.convert("RGB"))
    has_alpha = mode in ("RGBA", "LA", "La", "RGBa", "PA") or (mode == "P" and "transparency" in im.info)
    if has_alpha:
        notes.append("transparent areas flattened onto white")
        return np.asarray(_flatten_onto_white(im))
    if mode != "RGB":
        if mode in ("L", "1"):
            notes.append("grayscale image")
        return np.asarray(im.convert("RGB"))
    return np.asarray(im)


def decode_image(source: str | os.PathLike | bytes | BinaryIO, max_pixels: int = MAX_PIXELS,
                 min_side: int = MIN_SIDE) -> DecodedImage:
    """Bytes, a path or a file-like (e.g. a Streamlit upload) -> RGB pixels, upright, 8-bit.

    Raises ``ImageError``, and nothing else, for anything unusable: unreadable, empty, not an image,
    not one of ``ACCEPTED_FORMATS``, truncated or damaged, over ``max_pixels`` or under ``min_side``
    (both checked from the header, before decoding).
    """
    data = _read_bytes(source)
    im = _open_checked(data, max_pixels, min_side)
    notes: list[str] = []
    im = _decode_first_frame(im, notes)
    return DecodedImage(rgb=np.ascontiguousarray(_to_rgb(im, notes)), notes=notes)


def encode_png(rgb: np.ndarray) -> bytes:
    """RGB array -> PNG bytes (for downloads)."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()
