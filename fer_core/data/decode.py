"""Face images as users' datasets hold them: bytes -> one 48x48 grey face, or a DatasetError that
names the file. Every dataset layout (folders, fer2013.csv, FER+) decodes through here."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from fer_core.common.labels import IMAGE_SIZE

IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")
"""JPEG and PNG: the content ``IMAGE_SUFFIXES`` promise. OpenCV would also run its TIFF, JPEG 2000, HDR,
PxM, ... parsers on whatever a file holds; a dataset has no need of them."""


class DatasetError(ValueError):
    """Raised for any problem with a user's dataset; the message names the file or row."""



def _png_chunks_fit(data: bytes) -> bool:
    """Whether every chunk of a PNG fits in the file. OpenCV's PNG reader allocates whatever a chunk's
    length field claims before reading it: a 45-byte file that claims a 3.5 GB chunk would cost 3.5 GB
    and seconds."""
    pos = len(IMAGE_MAGIC[1])
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        if pos + 12 + length > len(data):
            return False
        if data[pos + 4:pos + 8] == b"IEND":
            break
        pos += 12 + length
    return True


def decode_face(data: bytes, where: str) -> np.ndarray:
    """Any-size JPEG or PNG bytes -> 48x48 uint8 grayscale, or a DatasetError naming ``where``."""
    return to_face_size(decode_gray(data, where))


def to_face_size(img: np.ndarray) -> np.ndarray:
    """A grey image of any size as the 48x48 every network reads."""
    if img.shape != (IMAGE_SIZE, IMAGE_SIZE):
        img = cv2.resize(img, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA)
    return img


def decode_gray(data: bytes, where: str) -> np.ndarray:
    """JPEG or PNG bytes -> the uint8 grey image at its own size, or a DatasetError naming ``where``."""
    if not data:
        raise DatasetError(f"{where}: empty file")
    if not data.startswith(IMAGE_MAGIC):
        raise DatasetError(f"{where}: not a readable image (only JPEG and PNG files are read)")
    if data.startswith(IMAGE_MAGIC[1]) and not _png_chunks_fit(data):
        raise DatasetError(f"{where}: not a readable image (a damaged or truncated PNG)")
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    except cv2.error:  # e.g. a header claiming over 2**30 pixels (OpenCV's cap); anything else OpenCV refuses
        img = None
    if img is None or img.size == 0:
        raise DatasetError(f"{where}: not a readable image (damaged, or its header claims an absurd size)")
    return img


def read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None


