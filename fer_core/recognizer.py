"""The public recognition API: find every face in an image and read its emotion.

    from fer_core.recognizer import Recognizer
    rec = Recognizer.load()               # the app's active model (shipped weights by default)
    for face in rec.predict("group.jpg"):  # a path, a PIL image or a numpy array
        print(face.box, face.label, face.confidence, face.scores)

All faces of one image go through the network as one batch. The network is loaded once
per process per weights file and shared by every caller (Streamlit sessions, the webcam
thread, the CLI); a lock serialises the forward pass, which on a CPU is faster than
letting two passes fight over the same cores and makes sharing safe by construction.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from fer_core import EMOTIONS, IMAGE_SIZE
from fer_core import tta as tta_views
from fer_core.detect import Box, Detector, DetectorSettings, HaarDetector, crop_faces, to_gray
from fer_core.device import autocast, resolve_precision
from fer_core.inference_model import for_inference

SMALL_BATCH = 16
"""Up to this many crops run on one thread. A frame's few faces are too little work to split:
measured on 2 busy cores, a second intra-op thread made batch-1 inference 1 ms -> 400 ms
when the cores were contended (OpenMP workers spin-waiting on each other)."""

TIGHT_CROP_MAX_SIDE = 2 * IMAGE_SIZE
"""An image no bigger than this on its long side is taken to be a face crop (FER-2013 style)."""


@dataclass(frozen=True)
class Face:
    """One face: where it is and what the network thinks of it."""

    box: Box  # (x, y, w, h) in the input image's pixels
    label: str
    scores: dict[str, float]  # the 7 class probabilities, summing to 1
    confidence: float  # the winning probability
    track_id: int | None = None  # set by the video/webcam tracker

    @classmethod
    def from_probs(cls, box: Box, probs: np.ndarray, classes: tuple[str, ...] = EMOTIONS,
                   track_id: int | None = None) -> Face:
        p = np.asarray(probs, dtype=np.float64)
        p = p / p.sum()
        k = int(p.argmax())
        return cls(box=tuple(int(v) for v in box), label=classes[k],
                   scores={c: float(v) for c, v in zip(classes, p, strict=True)}, confidence=float(p[k]),
                   track_id=track_id)

    def to_dict(self) -> dict:
        x, y, w, h = self.box
        d = {"x": x, "y": y, "w": w, "h": h, "label": self.label, "confidence": round(self.confidence, 4)}
        if self.track_id is not None:
            d["track_id"] = self.track_id
        d.update({c: round(v, 4) for c, v in self.scores.items()})
        return d


@dataclass
class _Loaded:
    model: nn.Module
    classes: tuple[str, ...]
    precision: str
    lock: threading.Lock = field(default_factory=threading.Lock)


_MODELS: dict[tuple, _Loaded] = {}
_MODELS_LOCK = threading.Lock()
_DETECTOR: HaarDetector | None = None


def _shared_detector() -> HaarDetector:
    global _DETECTOR
    with _MODELS_LOCK:
        if _DETECTOR is None:
            _DETECTOR = HaarDetector()
        return _DETECTOR


def _load_shared(path: Path, precision: str) -> _Loaded:
    """One network per (file, version, precision) per process; a replaced file is reloaded."""
    from fer_core.checkpoint import load_checkpoint, resolve_weights

    p = resolve_weights(path).resolve()
    st = p.stat()
    key = (str(p), st.st_mtime_ns, st.st_size, precision)
    with _MODELS_LOCK:
        if key not in _MODELS:
            model, cfg = load_checkpoint(p)
            resolved = resolve_precision(precision, torch.device("cpu"))
            model = for_inference(model, resolved)
            for k in [k for k in _MODELS if k[0] == key[0]]:
                del _MODELS[k]  # an older version of the same file
            _MODELS[key] = _Loaded(model, tuple(cfg.classes), resolved)
        return _MODELS[key]


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op thread count is per calling thread and costs nanoseconds to change."""
    old = torch.get_num_threads()
    if n is None or n == old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def as_array(image: np.ndarray | Image.Image | str | os.PathLike, order: str = "bgr") -> tuple[np.ndarray, str]:
    """Normalise the accepted inputs to (uint8 array, channel order)."""
    if isinstance(image, str | os.PathLike):
        from fer_core.imageio import decode_image

        return decode_image(image, min_side=1).rgb, "rgb"
    if isinstance(image, Image.Image):
        from fer_core.imageio import _to_rgb

        return np.ascontiguousarray(_to_rgb(image, [])), "rgb"
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a numpy array, a PIL image or a path, got {type(image).__name__}")
    if image.dtype != np.uint8:
        if image.dtype == np.uint16:
            image = (image >> 8).astype(np.uint8)
        elif np.issubdtype(image.dtype, np.floating) and image.size and float(np.nanmax(image)) <= 1.0:
            image = (np.nan_to_num(image) * 255 + 0.5).clip(0, 255).astype(np.uint8)
        else:
            image = np.nan_to_num(image).clip(0, 255).astype(np.uint8)
    if order not in ("bgr", "rgb"):
        raise ValueError("order must be 'bgr' or 'rgb'")
    return image, order


class Recognizer:
    """Detector + classifier. Cheap to create: the heavy parts are shared per process."""

    def __init__(self, weights: str | os.PathLike, *, tta: bool = False, precision: str = "auto",
                 detector: Detector | None = None, settings: DetectorSettings | None = None) -> None:
        self.weights = Path(weights)
        self._shared = _load_shared(self.weights, precision)
        self.detector: Detector = detector or _shared_detector()
        self.settings = settings or DetectorSettings()
        self.tta = tta

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, **kwargs) -> Recognizer:
        """The given weights (file or run folder), else the app's active model.

        Raises ``fer_core.checkpoint.CheckpointError`` when there is no usable model.
        """
        from fer_core.active import active_weights

        return cls(path if path is not None else active_weights(), **kwargs)

    @property
    def classes(self) -> tuple[str, ...]:
        return self._shared.classes

    @property
    def precision(self) -> str:
        return self._shared.precision

    # ------------------------------------------------------------------ the two stages

    def detect(self, gray: np.ndarray, settings: DetectorSettings | None = None) -> list[Box]:
        return self.detector.detect(gray, settings or self.settings)

    @torch.inference_mode()
    def classify(self, crops: np.ndarray, tta: bool | None = None) -> np.ndarray:
        """uint8 (N, 48, 48) face crops -> (N, classes) probabilities, in one forward pass.

        With TTA the 14 views of ``fer_core.tta`` of every crop go through as one batch and
        their softmaxes are averaged.
        """
        n = len(crops)
        if n == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        x = torch.from_numpy(np.ascontiguousarray(crops, dtype=np.uint8)).reshape(n, 1, IMAGE_SIZE, IMAGE_SIZE)
        x = x.float().div_(255)
        use_tta = self.tta if tta is None else tta
        if use_tta:
            x = tta_views.views(x)
        x = x.contiguous(memory_format=torch.channels_last)
        shared = self._shared
        threads = 1 if len(x) <= SMALL_BATCH else None
        with shared.lock, _torch_threads(threads), autocast(torch.device("cpu"), shared.precision):
            p = shared.model(x).float().softmax(1)
        if use_tta:
            p = tta_views.average(p, n)
        return p.numpy()

    # ------------------------------------------------------------------ the whole pipeline

    def faces_in_gray(self, gray: np.ndarray, *, whole: bool | None = None,
                      settings: DetectorSettings | None = None) -> tuple[list[Box], np.ndarray]:
        """Boxes and their 48x48 crops; ``whole``: True = the image is one face, None = decide by size."""
        s = settings or self.settings
        h, w = gray.shape[:2]
        if whole is None:
            whole = max(h, w) <= TIGHT_CROP_MAX_SIDE
        if whole:
            boxes: list[Box] = [(0, 0, w, h)]
            return boxes, crop_faces(gray, boxes, 0.0, IMAGE_SIZE)
        boxes = self.detect(gray, s)
        return boxes, crop_faces(gray, boxes, s.margin, IMAGE_SIZE)

    def predict(self, image: np.ndarray | Image.Image | str | os.PathLike, *, order: str = "bgr",
                whole: bool | None = None, settings: DetectorSettings | None = None,
                tta: bool | None = None) -> list[Face]:
        """Every face in ``image``, largest first.

        ``image``: a path, a PIL image, or a uint8 array that is gray, or colour in ``order``
        (OpenCV's BGR by default, as from ``cv2.imread``). ``whole``: None classifies small
        images (<= 96 px, e.g. a 48x48 FER-2013 crop) as one face and detects faces in the
        rest; True always classifies the whole image; False always detects.
        """
        arr, order = as_array(image, order)
        if arr.ndim not in (2, 3) or arr.shape[0] == 0 or arr.shape[1] == 0:
            raise ValueError(f"expected an image array (H, W[, C]), got shape {arr.shape}")
        gray = to_gray(arr, order)
        boxes, crops = self.faces_in_gray(gray, whole=whole, settings=settings)
        probs = self.classify(crops, tta=tta)
        return [Face.from_probs(b, p, self.classes) for b, p in zip(boxes, probs, strict=True)]

    def with_settings(self, **changes) -> Recognizer:
        """A copy with some detector settings changed (shares the network)."""
        clone = object.__new__(Recognizer)
        clone.__dict__.update(self.__dict__)
        clone.settings = replace(self.settings, **changes)
        return clone
