"""Distillation: train a small network on targets blended from the labels and a teacher's answers.

Why: the accurate ensemble is too slow for live video, and a fast network trained on hard
labels alone learns less than it could. FER-2013's labels are noisy (fear vs sad vs
surprise are often a judgement call), and a strong teacher's probabilities say *how* a face
is ambiguous, which is what a small network can absorb. The teacher is run once, before
training, on the un-augmented training faces and their mirror images (the student is
trained on flipped faces too), so distilling costs one teacher pass (about 3 min for
`accurate` on 2 cores), not one per step; the augmented copies of a face share its target.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from fer_core.common.labels import to_label_space
from fer_core.evaluation.evaluate import predict_probs
from fer_core.models.checkpoint import load_checkpoint


def teacher_probs(weights: str | os.PathLike, images: torch.Tensor, device: torch.device, precision: str,
                  classes: Sequence[str] | None = None, batch_size: int = 512) -> torch.Tensor:
    """uint8 (N,1,48,48) -> float (N, classes) on ``device``: the teacher's probabilities, mean of face and
    mirror, in the student's ``classes`` (the teacher's own by default). A FER-2013 teacher of a FER+
    student gives contempt nothing (``to_label_space``)."""
    teacher, cfg = load_checkpoint(weights, device)
    face, mirror = (predict_probs(teacher, x, batch_size=batch_size, precision=precision)
                    for x in (images, images.flip(3)))
    probs = to_label_space((face + mirror) / 2, cfg.classes, classes if classes is not None else cfg.classes)
    return torch.from_numpy(probs).to(device)
