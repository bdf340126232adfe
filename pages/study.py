"""Optimizer study: the paper's optimizer × learning-rate experiment, as this project ran it.

Shows the shipped studies (``reports/*/``: the paper-scale one first, then the quick one) side by
side with their budgets, then any one study folder written by ``fer-study`` (those under the runs
directory too): the grid as a heatmap of validation and test accuracy, the winner chosen on
validation, and the full table with each cell's spread over seeds.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from fer_core.common.formatting import duration, percent
from fer_core.common.paths import WEIGHTS_DIR, shown_path
from fer_core.models.card import load_card
from fer_core.runs.app_settings import SettingsError, load_settings
from fer_core.training.study import Cell, heatmap_figure, known_studies, load_study
from fer_core.training.study_verdict import PAPER_LR, PAPER_OPTIMIZER, against_paper, compare_with_paper


def spread(c: Cell) -> str:
    """A cell's validation accuracy over its seeds: min–max, or nothing for a single seed."""
    if len(c.runs) < 2 or c.val_acc_min is None or c.val_acc_max is None:
        return ""
    return f"{c.val_acc_min * 100:.1f}–{c.val_acc_max * 100:.1f}%"


def overview(studies: list[Path]) -> pd.DataFrame:
    """One row per study: its budget, its winner and the paper's choice, so that studies of different
    budgets are read side by side rather than mistaken for one another."""
    rows = []
    for folder in studies:
        try:
            meta, cells = load_study(folder)
        except ValueError:
            continue
        budget = meta["budget"]  # load_study makes budget and data_sizes dicts
        verdict = compare_with_paper(cells, meta["data_sizes"].get("val"))
        best, paper = verdict.winner, verdict.paper
        rows.append({"study": shown_path(str(folder)), "network": budget.get("arch"),
                     "epochs": budget.get("epochs"), "images per class": str(budget.get("subset") or "all"),
                     "cells done": f"{meta.get('cells_done', 0)}/{meta.get('cells_total', 0)}",
                     "best (on validation)": f"{best.optimizer} lr {best.lr:g}" if best else "—",
                     "its val / test": f"{percent(best.best_val_acc)} / {percent(best.test_acc)}" if best else "—",
                     f"{PAPER_OPTIMIZER} lr {PAPER_LR:g} val / test": f"{percent(paper.best_val_acc)} / "
                     f"{percent(paper.test_acc)}" if paper else "—",
                     "agrees with the paper": verdict.agreement})
    return pd.DataFrame(rows)


st.title("Optimizer study")
st.markdown(f"The paper reports that **{PAPER_OPTIMIZER} with learning rate {PAPER_LR:g}** trains its CNN best. "
            "Here every optimizer the project "
            "supports is trained with every learning rate on the same budget (architecture, data, epochs, "
            "subset, batch size and seed are identical in every cell); the winner is picked on validation "
            "accuracy, and test accuracy is reported beside it.")

try:
    may_choose = load_settings().may_choose_paths()
except SettingsError as exc:
    st.error(f"This deployment's settings are invalid: {exc}")
    st.stop()
studies = known_studies()
options = [str(p) for p in studies] + (["another folder…"] if may_choose else [])  # public: listed studies only
if not options:
    st.info("No study is available on this deployment.")
    st.stop()
if len(studies) > 1:
    st.subheader("The studies side by side")
    st.dataframe(overview(studies), hide_index=True, key="study-overview")
choice = st.selectbox("Study folder", options, key="study", format_func=shown_path)
folder = st.text_input("Path to a study folder", key="study-path") if choice == "another folder…" else choice
if not folder:
    st.info("Run one with `fer-study --out DIR …` and give its folder here.")
    st.stop()
try:
    meta, cells = load_study(Path(folder.strip()))
except ValueError as exc:
    st.error(str(exc))
    st.stop()
if not cells:
    st.warning("This study has no cells yet.")
    st.stop()

budget, sizes = meta["budget"], meta["data_sizes"]  # dicts, whatever the file held (load_study)
runs, done = meta.get("runs_done"), meta.get("cells_done")
several_seeds = isinstance(runs, int) and isinstance(done, int) and runs > done
runs_note = f" ({runs} runs, counting every seed)" if several_seeds else ""
st.caption(f"Budget per cell: `{budget.get('arch')}`, {budget.get('epochs')} epoch(s), "
           f"{budget.get('subset') or 'all'} training images per class ({sizes.get('train', '?')} in all, "
           f"validation {sizes.get('val', '?')}, test {sizes.get('test', '?')}), batch {budget.get('batch_size')}, "
           f"schedule {budget.get('schedule')}, seed {budget.get('seed')} · {done}/"
           f"{meta.get('cells_total')} cells done{runs_note} in {duration(meta.get('wall_seconds'))} on "
           f"{meta.get('device') or '?'} ({meta.get('precision') or '?'}).")

verdict = compare_with_paper(cells, sizes.get("val"))
best = verdict.winner
if best:
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Best optimizer", best.optimizer, help="chosen on validation accuracy, never on test")
    c2.metric("Its learning rate", f"{best.lr:g}")
    c3.metric("Its validation accuracy", percent(best.best_val_acc))
    c4.metric("Its test accuracy", percent(best.test_acc))
st.subheader("Against the paper")
st.markdown(verdict.sentence())
st.dataframe(pd.DataFrame(against_paper(verdict, load_card(WEIGHTS_DIR / "paper.safetensors"))),
             hide_index=True, key="against-paper")

st.plotly_chart(heatmap_figure(cells), key="heatmap")
notes = Path(folder.strip()) / "README.md"
if notes.is_file():
    with st.expander("How to read this study", expanded=True):
        st.markdown(notes.read_text(encoding="utf-8", errors="replace").split("## How to read it", 1)[-1])
table = pd.DataFrame([{"optimizer": c.optimizer, "lr": f"{c.lr:g}", "status": c.status,
                       "best val acc": percent(c.best_val_acc), "val over seeds": spread(c),
                       "seeds": ", ".join(map(str, c.seeds)) or "—",  # the seeds that finished
                       "test acc": percent(c.test_acc),
                       "macro-F1": f"{c.macro_f1:.3f}" if isinstance(c.macro_f1, int | float) else "—",
                       "seconds": c.wall_seconds, "error": c.error or ""} for c in cells])
st.dataframe(table, hide_index=True, key="study-table")
