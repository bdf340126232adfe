"""fer_core: every piece of the facial-emotion-recognition system that is not UI.

    from fer_core import Recognizer
    for face in Recognizer.load().predict("group.jpg"):
        print(face.box, face.label, face.confidence)

The package is layered; each subpackage answers one question and imports only from the
layers below it (``docs/architecture.md``; checked by import-linter in ``make test``):
``common`` < ``data`` < ``models`` < ``evaluation`` < ``training`` | ``recognition`` <
``runs`` < ``tools`` < ``cli``. The public names below load on first use, so ``import
fer_core`` stays cheap and importing any layer never pulls in the layers above it (the layers
import nothing from this file, only from each other).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from fer_core.common.labels import EMOTIONS, IMAGE_SIZE

_PUBLIC = {
    "Recognizer": "fer_core.recognition.recognizer",
    "Face": "fer_core.recognition.recognizer",
    "DetectorSettings": "fer_core.recognition.detect",
    "DETECTORS": "fer_core.recognition.detect",
    "ImageError": "fer_core.recognition.imageio",
    "VideoAnalysis": "fer_core.recognition.video",
    "VideoError": "fer_core.recognition.video",
    "analyse_video": "fer_core.recognition.video",
    "create_model": "fer_core.models.zoo",
    "list_models": "fer_core.models.zoo",
    "load_checkpoint": "fer_core.models.checkpoint",
    "CheckpointError": "fer_core.models.checkpoint",
}

__all__ = ["EMOTIONS", "IMAGE_SIZE", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fer_core' has no attribute {name!r}")
