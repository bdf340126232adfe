"""Distillation: train a small network on targets blended from the labels and a teacher's answers.

Why: the accurate ensemble is too slow for live video, and a fast network trained on hard
labels alone learns less than it could. FER-2013's labels are noisy (fear vs sad vs
surprise are often a judgement call), and a strong teacher's probabilities say *how* a face
is ambiguous, which is what a small network can absorb. The teacher is run once, before
training, on the un-augmented training faces and their mirror images (the student is
trained on flipped faces too), so distilling costs about a minute, not a teacher pass per
step; the augmented copies of a face share its target.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from fer_core.checkpoint import load_checkpoint
from fer_core.device import autocast


@torch.inference_mode()
def teacher_probs(weights: str | os.PathLike, images: torch.Tensor, device: torch.device, precision: str,
                  batch_size: int = 512) -> torch.Tensor:
    """uint8 (N,1,48,48) -> float (N,7) on ``device``: the teacher's probabilities, mean of face and mirror."""
    teacher, _ = load_checkpoint(weights, device)
    teacher = teacher.to(memory_format=torch.channels_last)
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device).float().div_(255)
        with autocast(device, precision):
            logits = teacher(torch.cat([x, x.flip(3)]).contiguous(memory_format=torch.channels_last))
        out.append(logits.float().softmax(1).view(2, len(x), -1).mean(0))
    return torch.cat(out)


def blended_targets(labels: torch.Tensor, soft: torch.Tensor | None, weight: float) -> torch.Tensor:
    """Class indices when there is no teacher, else ``(1 - weight) * one-hot + weight * teacher``."""
    if soft is None:
        return labels
    return (1 - weight) * F.one_hot(labels, soft.shape[1]).to(soft.dtype) + weight * soft
