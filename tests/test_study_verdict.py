"""Whether a study agrees with the paper: the verdict reads the study's own noise."""

from __future__ import annotations

import pytest

from fer_core.models.card import ModelCard, TestMetrics
from fer_core.training.study import Cell
from fer_core.training.study_verdict import against_paper, compare_with_paper


def cell(opt: str, lr: float, val: float, seeds: tuple[float, ...] = ()) -> Cell:
    c = Cell(opt, lr, "finished", best_val_acc=val, test_acc=val - 0.01, seeds=[0])
    if seeds:
        c.seeds = list(range(len(seeds)))
        c.val_acc_min, c.val_acc_max = min(seeds), max(seeds)
    return c


def test_the_papers_cell_on_top_agrees() -> None:
    v = compare_with_paper([cell("adam", 0.001, 0.55), cell("amsgrad", 0.01, 0.60)], val_images=2721)
    assert (v.outcome, v.rank, v.cells_finished, v.agreement) == ("best", 1, 2, "yes")
    assert "agrees with the paper" in v.sentence()


def test_a_gap_within_the_seed_spread_does_not_rank_the_cells_apart() -> None:
    cells = [cell("rmsprop", 0.001, 0.591, seeds=(0.585, 0.597)), cell("amsgrad", 0.01, 0.589),
             cell("sgd", 0.1, 0.50)]
    v = compare_with_paper(cells, val_images=2721)
    assert (v.outcome, v.rank) == ("tied", 2)
    assert v.gap == pytest.approx(0.002) and v.noise == pytest.approx(0.012)
    assert "seed-to-seed range of the 1 cell" in v.noise_source
    assert "does not rank them apart" in v.sentence()


def test_a_gap_beyond_the_noise_disagrees() -> None:
    cells = [cell("adam", 0.001, 0.62, seeds=(0.615, 0.625)), cell("sgd", 0.01, 0.60), cell("amsgrad", 0.01, 0.55)]
    v = compare_with_paper(cells, val_images=2721)
    assert (v.outcome, v.rank, v.agreement) == ("behind", 3, "no")
    assert "does not agree with the paper" in v.sentence() and "7.0 points behind" in v.sentence()


def test_without_replicas_the_noise_is_the_sampling_error_of_the_validation_slice() -> None:
    v = compare_with_paper([cell("adam", 0.001, 0.60), cell("amsgrad", 0.01, 0.595)], val_images=2400)
    assert v.noise == pytest.approx((2 * 0.6 * 0.4 / 2400) ** 0.5)  # 1.4 points
    assert v.outcome == "tied" and "two accuracies on 2,400 validation images" in v.noise_source
    behind = compare_with_paper([cell("adam", 0.001, 0.60), cell("amsgrad", 0.01, 0.58)], val_images=2400)
    assert behind.outcome == "behind"


def test_a_study_without_the_papers_cell_or_any_result_says_so() -> None:
    pending = Cell("amsgrad", 0.01, "pending")
    v = compare_with_paper([cell("adam", 0.001, 0.6), pending], val_images=None)
    assert v.outcome == "absent" and v.agreement == "not run" and "has not finished" in v.sentence()
    assert "No cell has finished" in compare_with_paper([], None).sentence()


def test_a_paper_cell_that_failed_to_train_is_a_disagreement_not_a_gap() -> None:
    diverged = Cell("amsgrad", 0.01, "failed", error="loss became nan")
    v = compare_with_paper([cell("adam", 0.001, 0.6), diverged], val_images=2721)
    assert v.outcome == "failed" and v.agreement == "no (it failed)"
    assert "failed to train in this study (loss became nan)" in v.sentence()
    assert {r[""]: r["this project"] for r in against_paper(v, None)}["rank of amsgrad lr 0.01"] == "failed"
    lost = Cell("amsgrad", 0.01, "lost")  # its workers kept dying: no result, not a disagreement
    assert compare_with_paper([cell("adam", 0.001, 0.6), lost], val_images=2721).outcome == "absent"


def test_the_table_sets_the_papers_figures_beside_ours() -> None:
    v = compare_with_paper([cell("rmsprop", 0.001, 0.6), cell("amsgrad", 0.01, 0.59)], val_images=2721)
    card = ModelCard(name="paper", arch="paper", epochs=30, test=TestMetrics(split="test", accuracy=0.6147))
    rows = {r[""]: (r["the paper"], r["this project"]) for r in against_paper(v, card)}
    assert rows == {"test accuracy of the paper's CNN": ("65.0%", "61.5% (the shipped model paper, 30 epochs)"),
                    "best optimizer and learning rate": ("amsgrad lr 0.01", "rmsprop lr 0.001"),
                    "rank of amsgrad lr 0.01": ("1", "2 of 2")}
    assert len(against_paper(v, None)) == 2  # no shipped model: the study's rows only

