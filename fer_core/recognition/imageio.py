"""Decoding untrusted images into plain RGB arrays, or a clear ``ImageError``.

Uploads and CLI arguments are whatever people have: phone photos rotated by EXIF,
animated GIFs, PNGs with alpha or 16 bits per channel, CMYK JPEGs from print workflows,
truncated downloads, renamed PDFs. Every one of them either becomes an ``(H, W, 3)``
uint8 RGB array (with a note saying what was done to it) or raises ``ImageError`` whose
message can be shown to a user as is. The pixel count is checked from the header, before
any pixel is decoded, so a small file that claims to be gigapixels cannot exhaust memory.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 50_000_000
"""50 MP: more than any phone photo, and ~150 MB as RGB, which one server process can afford."""

MIN_SIDE = 48
"""The network's input size; a smaller image cannot hold a face worth classifying."""

IMAGE_TYPES = ("jpg", "jpeg", "png", "webp", "bmp", "gif")
"""What the upload widgets and the CLI accept (by extension; the content is checked anyway)."""


class ImageError(ValueError):
    """An input that is not a usable image; the message says why, in words a user understands."""


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
        try:
            return path.read_bytes()
        except IsADirectoryError:
            raise ImageError(f"{path} is a folder, not an image") from None
        except OSError as exc:
            raise ImageError(f"cannot read {path}: {exc.strerror or exc}") from None
    if hasattr(source, "getvalue"):  # BytesIO and Streamlit's UploadedFile
        return bytes(source.getvalue())
    return source.read()


def _open_checked(data: bytes, max_pixels: int) -> Image.Image:
    """Open lazily (header only) and refuse empty, unknown and oversized images before decoding."""
    if not data:
        raise ImageError("the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise ImageError(f"the image is too large: its header claims far more than {max_pixels / 1e6:.0f} "
                         "megapixels, the most this app decodes") from None
    except UnidentifiedImageError:
        raise ImageError("not an image this app can read (supported: JPEG, PNG, WebP, BMP, GIF)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"the image header is damaged ({exc})") from None
    w, h = im.size
    if w * h > max_pixels:
        raise ImageError(f"the image is too large: {w}x{h} = {w * h / 1e6:.0f} megapixels, "
                         f"more than the {max_pixels / 1e6:.0f} megapixels this app decodes")
    if w <= 0 or h <= 0:
        raise ImageError(f"the image has no pixels ({w}x{h})")
    return im


def _to_rgb(im: Image.Image, notes: list[str]) -> np.ndarray:
    """Any Pillow mode -> (H, W, 3) uint8 RGB; transparency is flattened onto white."""
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(im).astype(np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        if mode == "F":
            top = max(float(arr.max()), 1.0) if arr.max() > 1 else 1.0
        gray = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        notes.append("16-bit image scaled to 8 bits" if top == 65535.0 else f"{mode} image scaled to 8 bits")
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "CMYK":
        notes.append("CMYK image converted to RGB")
        return np.asarray(im.convert("RGB"))
    has_alpha = mode in ("RGBA", "LA", "La", "RGBa", "PA") or (mode == "P" and "transparency" in im.info)
    if has_alpha:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        notes.append("transparent areas flattened onto white")
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    if mode != "RGB":
        if mode in ("L", "1"):
            notes.append("grayscale image")
        return np.asarray(im.convert("RGB"))
    return np.asarray(im)


def decode_image(source: str | os.PathLike | bytes | BinaryIO, max_pixels: int = MAX_PIXELS,
                 min_side: int = MIN_SIDE) -> DecodedImage:
    """Bytes, a path or a file-like (e.g. a Streamlit upload) -> RGB pixels, upright, 8-bit.

    Raises ``ImageError`` for anything unusable: unreadable, empty, not an image, truncated,
    over ``max_pixels`` (checked from the header, before decoding) or under ``min_side``.
    """
    data = _read_bytes(source)
    im = _open_checked(data, max_pixels)
    notes: list[str] = []
    n_frames = getattr(im, "n_frames", 1)
    if n_frames > 1:
        im.seek(0)
        notes.append(f"animated image: using the first of its {n_frames} frames")
    try:
        im.load()
        orientation = int(im.getexif().get(0x0112, 1) or 1)
        if orientation != 1:
            im = ImageOps.exif_transpose(im)
            notes.append(f"rotated upright as its EXIF orientation ({orientation}) asks")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        msg = str(exc)
        if "truncated" in msg or "broken" in msg or "EOF" in msg:
            raise ImageError("the image file is truncated (incomplete download or copy?)") from None
        raise ImageError(f"the image data is damaged and cannot be decoded ({msg})") from None
    rgb = np.ascontiguousarray(_to_rgb(im, notes))
    h, w = rgb.shape[:2]
    if min(h, w) < min_side:
        raise ImageError(f"the image is too small: {w}x{h} pixels; at least {min_side}x{min_side} is needed "
                         "to see a face")
    return DecodedImage(rgb=rgb, notes=notes)


def encode_png(rgb: np.ndarray) -> bytes:
    """RGB array -> PNG bytes (for downloads)."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()
