"""The public recognition API: find every face in an image and read its emotion.

    from fer_core.recognition.recognizer import Recognizer
    rec = Recognizer.load()               # the app's active model (shipped weights by default)
    for face in rec.predict("group.jpg"):  # a path, a PIL image or a numpy array
        print(face.box, face.label, face.confidence, face.scores)

All faces of one image go through the network as one batch. The network is loaded once
per process per weights file and shared by every caller (Streamlit sessions, the webcam
thread, the CLI); a lock serialises the forward pass, which on a CPU is faster than
letting two passes fight over the same cores and makes sharing safe by construction.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from fer_core.common.device import autocast, torch_threads
from fer_core.common.labels import EMOTIONS, IMAGE_SIZE
from fer_core.evaluation import tta as tta_views
from fer_core.models.inference import choose_form, for_inference
from fer_core.recognition.align import crop_faces
from fer_core.recognition.detect import (
    DEFAULT_DETECTOR,
    Box,
    Detection,
    Detector,
    DetectorSettings,
    Landmarks,
    get_detector,
    to_gray,
    to_rgb,
)

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
    face_score: float | None = None  # the detector's confidence that this is a face (None: it gives none)
    landmarks: Landmarks | None = None  # eyes, nose, mouth corners, where the detector gives them

    @classmethod
    def from_probs(cls, box: Box, probs: np.ndarray, classes: tuple[str, ...] = EMOTIONS,
                   track_id: int | None = None, detection: Detection | None = None) -> Face:
        p = np.asarray(probs, dtype=np.float64)
        p = p / p.sum()
        k = int(p.argmax())
        return cls(box=tuple(int(v) for v in box), label=classes[k],
                   scores={c: float(v) for c, v in zip(classes, p, strict=True)}, confidence=float(p[k]),
                   track_id=track_id, face_score=detection.score if detection else None,
                   landmarks=detection.landmarks if detection else None)

    @property
    def detection(self) -> Detection:
        """Where the face is, as the detector said it (the crop and the heat map are cut from this)."""
        return Detection(self.box, self.face_score, self.landmarks)

    def to_dict(self) -> dict:
        x, y, w, h = self.box
        d = {"x": x, "y": y, "w": w, "h": h, "label": self.label, "confidence": round(self.confidence, 4)}
        if self.track_id is not None:
            d["track_id"] = self.track_id
        if self.face_score is not None:
            d["face_score"] = round(self.face_score, 4)
        if self.landmarks is not None:
            d["landmarks"] = [[round(x, 1), round(y, 1)] for x, y in self.landmarks]
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


def _load_shared(path: Path, precision: str) -> _Loaded:
    """One network per (file, version, precision) per process; a replaced file is reloaded."""
    from fer_core.models.checkpoint import load_checkpoint, read_int8_calibration, resolve_weights

    p = resolve_weights(path).resolve()
    st = p.stat()
    key = (str(p), st.st_mtime_ns, st.st_size, precision)
    with _MODELS_LOCK:
        if key not in _MODELS:
            model, cfg = load_checkpoint(p)
            calibration = read_int8_calibration(p)
            resolved = choose_form(precision, calibration)
            model = for_inference(model, resolved, calibration)
            for k in [k for k in _MODELS if k[0] == key[0]]:
                del _MODELS[k]  # an older version of the same file
            _MODELS[key] = _Loaded(model, tuple(cfg.classes), resolved)
        return _MODELS[key]


def as_array(image: np.ndarray | Image.Image | str | os.PathLike, order: str = "bgr") -> tuple[np.ndarray, str]:
    """Normalise the accepted inputs to (uint8 array, channel order)."""
    if isinstance(image, str | os.PathLike):
        from fer_core.recognition.imageio import decode_image

        return decode_image(image, min_side=1).rgb, "rgb"
    if isinstance(image, Image.Image):
        from fer_core.recognition.imageio import _to_rgb

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
    """The recognition pipeline (decode, detect, align and crop, classify) that the Photo,
    Video and Webcam pages and the CLI all run. Cheap to create: the network and the
    detector are shared per process.

    ``detector``: a name from ``fer_core.recognition.detect.DETECTORS`` (``mtcnn`` by default, ``haar``
    for the paper's pipeline) or any object with the ``Detector`` interface.
    """

    def __init__(self, weights: str | os.PathLike, *, tta: bool = False, precision: str = "auto",
                 detector: str | Detector = DEFAULT_DETECTOR, settings: DetectorSettings | None = None) -> None:
        self.weights = Path(weights)
        self._shared = _load_shared(self.weights, precision)
        self.detector: Detector = get_detector(detector) if isinstance(detector, str) else detector
        self.settings = settings or DetectorSettings()
        self.tta = tta

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, **kwargs) -> Recognizer:
        """The given weights (file or run folder), else the app's active model.

        Raises ``fer_core.models.checkpoint.CheckpointError`` when there is no usable model.
        """
        from fer_core.models.active import active_weights

        return cls(path if path is not None else active_weights(), **kwargs)

    @property
    def classes(self) -> tuple[str, ...]:
        return self._shared.classes

    @property
    def precision(self) -> str:
        return self._shared.precision

    # ------------------------------------------------------------------ the two stages

    def detect(self, image: np.ndarray, settings: DetectorSettings | None = None) -> list[Detection]:
        """``image``: (H, W) gray or (H, W, 3) RGB uint8."""
        return self.detector.detect(image, settings or self.settings)

    def margin(self, settings: DetectorSettings | None = None) -> float:
        """The crop margin in force: the user's, else the one measured for this detector."""
        s = settings or self.settings
        return self.detector.margin if s.margin is None else s.margin

    def crops(self, gray: np.ndarray, detections: list[Detection],
              settings: DetectorSettings | None = None) -> np.ndarray:
        """The 48x48 crops of known detections (the webcam reuses a frame's detections for the next ones)."""
        s = settings or self.settings
        return crop_faces(gray, detections, self.margin(s), IMAGE_SIZE, align=s.align)

    @torch.inference_mode()
    def classify(self, crops: np.ndarray, tta: bool | None = None) -> np.ndarray:
        """uint8 (N, 48, 48) face crops -> (N, classes) probabilities, in one forward pass.

        With TTA the 14 views of ``fer_core.evaluation.tta`` of every crop go through as one batch and
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
        with shared.lock, torch_threads(threads), autocast(torch.device("cpu"), shared.precision):
            p = shared.model(x).float().softmax(1)
        if use_tta:
            p = tta_views.average(p, n)
        return p.numpy()

    # ------------------------------------------------------------------ the whole pipeline

    def find_faces(self, image: np.ndarray, *, order: str = "rgb", whole: bool | None = None,
                   settings: DetectorSettings | None = None) -> tuple[list[Detection], np.ndarray]:
        """Detections and their 48x48 crops; ``whole``: True = the image is one face, None = decide by size."""
        gray = to_gray(image, order)
        h, w = gray.shape[:2]
        if whole is None:
            whole = max(h, w) <= TIGHT_CROP_MAX_SIDE
        if whole:
            dets = [Detection((0, 0, w, h))]
            return dets, crop_faces(gray, dets, 0.0, IMAGE_SIZE, align=False)
        s = settings or self.settings
        found = self.locate(image, order=order, settings=s, gray=gray)
        return found, self.crops(gray, found, s)

    def locate(self, image: np.ndarray, *, order: str = "rgb", settings: DetectorSettings | None = None,
               gray: np.ndarray | None = None) -> list[Detection]:
        """The faces' detections alone, in colour or grey as the detector reads: what live video's detector
        thread needs (its crops are cut later, from the frame shown). ``gray``: the image's grey, if known."""
        s = settings or self.settings
        if image.ndim == 3 and image.shape[2] >= 3 and self.detector.uses_colour:
            return self.detect(to_rgb(image, order), s)
        return self.detect(gray if gray is not None else to_gray(image, order), s)

    def faces(self, detections: list[Detection], probs: np.ndarray) -> list[Face]:
        return [Face.from_probs(d.box, p, self.classes, detection=d) for d, p in zip(detections, probs, strict=True)]

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
        dets, crops = self.find_faces(arr, order=order, whole=whole, settings=settings)
        return self.faces(dets, self.classify(crops, tta=tta))
