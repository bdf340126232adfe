"""Whether a study agrees with the paper: is AMSGrad at lr 0.01 the best cell, or as good as it?

A ranking is only as sharp as its noise: two cells are ranked apart only when their validation
accuracies differ by more than two runs of one cell (with different seeds) do. The verdict measures
that noise from the study itself: the widest seed-to-seed range among the cells trained with more than
one seed. A study without replicas falls back on the sampling error of its validation slice: the
standard error of a difference between two cells' accuracies on it, which understates the noise
(it ignores the seed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fer_core.common.formatting import percent
from fer_core.models.card import ModelCard
from fer_core.training.study import Cell, ranked

PAPER_OPTIMIZER = "amsgrad"
PAPER_LR = 0.01
PAPER_TEST_ACC = 0.65  # the paper's test accuracy for its CNN trained with AMSGrad at lr 0.01
AGREEMENT = {"best": "yes", "tied": "within the noise", "behind": "no", "failed": "no (it failed)",
             "absent": "not run"}


@dataclass(frozen=True)
class Verdict:
    """Where the paper's cell stands in a study's ranking on validation accuracy."""

    outcome: str  # "best", "tied" (behind by no more than the noise), "behind", "failed" (the paper's cell
    # failed to train, e.g. its loss diverged), or "absent" (not run, not finished, or its workers died)
    winner: Cell | None
    paper: Cell | None
    rank: int | None  # 1-based, among the finished cells
    cells_finished: int  # how many cells the ranking holds
    gap: float | None  # the winner's validation accuracy minus the paper cell's
    noise: float | None
    noise_source: str

    @property
    def agreement(self) -> str:
        """Does the study agree with the paper, in a word or three (a table column)."""
        return AGREEMENT[self.outcome]

    def sentence(self) -> str:
        """The verdict in one sentence a reader of the Study page or the docs can check."""
        if self.winner is None:
            return "No cell has finished yet, so this study cannot be compared with the paper."
        best = f"{self.winner.optimizer} lr {self.winner.lr:g} ({percent(self.winner.best_val_acc)} on validation)"
        if self.outcome == "failed" and self.paper is not None:
            why = f" ({self.paper.error})" if self.paper.error else ""
            return (f"The best cell is {best}; the paper's choice, {PAPER_OPTIMIZER} lr {PAPER_LR:g}, failed to "
                    f"train in this study{why}, so this study does not agree with the paper.")
        if self.paper is None:
            return (f"The best cell is {best}. The paper's choice, {PAPER_OPTIMIZER} lr {PAPER_LR:g}, "
                    "has not finished in this study, so the study neither confirms nor refutes it.")
        if self.outcome == "best":
            return (f"This study agrees with the paper: {PAPER_OPTIMIZER} lr {PAPER_LR:g} is the best of "
                    f"{self.cells_finished} cells ({percent(self.paper.best_val_acc)} on validation).")
        where = (f"The best cell is {best}; the paper's choice, {PAPER_OPTIMIZER} lr {PAPER_LR:g}, ranks "
                 f"{self.rank} of {self.cells_finished} at {percent(self.paper.best_val_acc)}, "
                 f"{_points(self.gap)} behind")
        if self.outcome == "tied":
            return (f"{where}, within the noise ({_points(self.noise)}, {self.noise_source}): this study does "
                    "not rank them apart, so it is consistent with the paper without confirming it.")
        return (f"{where}, more than the noise ({_points(self.noise)}, {self.noise_source}): this study "
                "does not agree with the paper.")


def compare_with_paper(cells: list[Cell], val_images: int | None) -> Verdict:
    """The paper's cell against the study's winner, both on validation accuracy."""
    order = ranked(cells)
    paper = next((c for c in order if c.optimizer == PAPER_OPTIMIZER and math.isclose(c.lr, PAPER_LR)), None)
    winner = order[0] if order else None
    noise, source = study_noise(order, val_images)
    failed = next((c for c in cells if c.optimizer == PAPER_OPTIMIZER and math.isclose(c.lr, PAPER_LR)
                   and c.status == "failed"), None)  # diverged: a result; "lost" (workers died) is not
    if winner is not None and paper is None and failed is not None:
        return Verdict("failed", winner, failed, None, len(order), None, noise, source)
    if winner is None or paper is None:
        return Verdict("absent", winner, paper, None, len(order), None, noise, source)
    rank = order.index(paper) + 1
    gap = winner.best_val_acc - paper.best_val_acc
    if rank == 1:
        outcome = "best"
    else:
        outcome = "tied" if noise is not None and gap <= noise else "behind"
    return Verdict(outcome, winner, paper, rank, len(order), gap, noise, source)


def against_paper(verdict: Verdict, paper_model: ModelCard | None) -> list[dict[str, str]]:
    """The paper's headline figures beside this project's: its CNN's test accuracy (the shipped
    ``paper`` model, trained with the paper's recipe) and the optimizer study's ranking."""
    rows = [{"": "best optimizer and learning rate", "the paper": f"{PAPER_OPTIMIZER} lr {PAPER_LR:g}",
             "this project": f"{verdict.winner.optimizer} lr {verdict.winner.lr:g}" if verdict.winner else "—"},
            {"": f"rank of {PAPER_OPTIMIZER} lr {PAPER_LR:g}", "the paper": "1",
             "this project": f"{verdict.rank} of {verdict.cells_finished}" if verdict.rank
             else "failed" if verdict.outcome == "failed" else "not run"}]
    test = paper_model.test.accuracy if paper_model and paper_model.test else None
    if isinstance(test, int | float):
        epochs = f", {paper_model.epochs} epochs" if paper_model.epochs else ""
        rows.insert(0, {"": "test accuracy of the paper's CNN", "the paper": percent(PAPER_TEST_ACC),
                        "this project": f"{percent(test)} (the shipped model {paper_model.name}{epochs})"})
    return rows


def study_noise(finished: list[Cell], val_images: int | None) -> tuple[float | None, str]:
    """How far apart two runs of one cell land: measured over seeds where the study has replicas."""
    ranges = [c.val_acc_max - c.val_acc_min for c in finished
              if len(c.seeds) > 1 and c.val_acc_max is not None and c.val_acc_min is not None]
    if ranges:
        cells = sum(1 for c in finished if len(c.seeds) > 1)
        return max(ranges), f"the widest seed-to-seed range of the {cells} cell(s) trained with two seeds or more"
    if finished and val_images:
        p = finished[0].best_val_acc
        return (math.sqrt(2 * p * (1 - p) / val_images),
                f"the standard error of a difference of two accuracies on {val_images:,} validation images")
    return None, "unknown"


def _points(x: float | None) -> str:
    return f"{x * 100:.1f} points" if isinstance(x, int | float) else "an unknown margin"
