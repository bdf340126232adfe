"""What a training step aims at: FER-2013's one label per face, or one of FER+'s four targets built
from its ten votes (``fer_core.data.votes``), optionally blended with a teacher's probabilities.

Why several: FER+'s annotators disagree on many faces, and Barsoum et al. found that training on the
votes (drawing a label from them at each step, or matching their distribution) reads faces as people do
better than the majority label alone. One loss function serves every mode, so the training loop stays one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fer_core.data.dataset import Split
from fer_core.data.votes import TARGET_MODES, multi_target_mask, vote_distribution

__all__ = ["TARGET_MODES", "face_targets", "step_targets", "target_loss"]


def face_targets(split: Split, mode: str, fer2013_share: float = 0.0) -> torch.Tensor | None:
    """(N, classes) float per face for the vote modes, None for ``majority`` (the labels themselves).

    ``fer2013_share`` > 0 blends FER-2013's own label of each face (``split.fer2013_labels``, where known)
    into the target, as one more voter with that weight. Why: FER+'s annotators call mild anger and fear
    "neutral", and a network that copies them alone stops seeing posed expressions; FER-2013's
    annotator kept them, and at a minor share the blend leaves the majority label where it is on most faces."""
    if mode not in TARGET_MODES:
        raise ValueError(f"unknown target mode '{mode}' (known: {', '.join(TARGET_MODES)})")
    if mode != "majority" and split.votes is None:
        raise ValueError(f"target mode '{mode}' needs FER+'s votes; {split.name} has one label per face "
                         "(give FER+ data, or --target majority)")
    if mode == "multitarget":
        return multi_target_mask(split.votes).float()
    if not fer2013_share or split.fer2013_labels is None:
        return None if mode == "majority" else vote_distribution(split.votes)
    n = len(split.classes)
    base = F.one_hot(split.labels, n).float() if mode == "majority" else vote_distribution(split.votes)
    known = split.fer2013_labels >= 0
    theirs = F.one_hot(split.fer2013_labels.clamp_min(0), n).float()
    blended = (1 - fer2013_share) * base + fer2013_share * theirs
    return torch.where(known.unsqueeze(1), blended, base)


def step_targets(mode: str, labels: torch.Tensor, per_face: torch.Tensor | None, teacher: torch.Tensor | None,
                 distill: float, gen: torch.Generator) -> torch.Tensor:
    """One batch's targets: class indices (majority, no teacher) or (B, classes) probabilities.

    ``probability`` draws one label per face from its votes, anew at every step (Barsoum's PLD); a
    teacher's probabilities, in the run's own classes, take ``distill`` of every target."""
    if mode == "multitarget":
        return per_face  # the teacher is a separate term of the loss: see target_loss
    if per_face is None:
        target = labels
    elif mode == "probability":
        target = torch.multinomial(per_face, 1, generator=gen).squeeze(1)
    else:
        target = per_face
    if teacher is None:
        return target
    if target.dim() == 1:
        target = F.one_hot(target, teacher.shape[1]).to(teacher.dtype)
    return (1 - distill) * target + distill * teacher


def target_loss(mode: str, logits: torch.Tensor, target: torch.Tensor, smoothing: float,
                teacher: torch.Tensor | None = None, distill: float = 0.0) -> torch.Tensor:
    """Cross-entropy against the targets; for ``multitarget``, minus the log of the probability given to
    any emotion that holds 30% of the votes (an answer people would accept), plus the teacher's share."""
    if mode != "multitarget":
        return F.cross_entropy(logits, target, label_smoothing=smoothing)
    log_p = F.log_softmax(logits, dim=1)
    accepted = -torch.logsumexp(log_p.masked_fill(target <= 0, float("-inf")), dim=1).mean()
    if teacher is None:
        return accepted
    return (1 - distill) * accepted + distill * F.cross_entropy(logits, teacher, label_smoothing=smoothing)
