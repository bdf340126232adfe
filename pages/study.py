"""Optimizer study: the paper's optimizer × learning-rate experiment, as this project ran it.

Shows any study folder written by ``fer-study`` (the shipped one in
``reports/study`` by default, or any under the runs directory): the grid as a heatmap of
validation and test accuracy, the winner chosen on validation, and the full table.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from fer_core.common.paths import PROJECT_ROOT, runs_dir
from fer_core.runs.app_settings import SettingsError, load_settings
from fer_core.training.study import heatmap_figure, load_study, winner

SHIPPED = PROJECT_ROOT / "reports" / "study"
PAPER_CLAIM = "AMSGrad with learning rate 0.01"


def known_studies() -> list[Path]:
    """The shipped study first, then every study folder directly under the runs directory."""
    found = [SHIPPED] if (SHIPPED / "study.json").is_file() else []
    root = runs_dir()
    if root.is_dir():
        found += sorted((p for p in root.iterdir() if (p / "study.json").is_file()), key=lambda p: p.name)
    return found


def study_label(option: str) -> str:
    """A study as the project names it (``reports/study``, ``runs/<name>``), not as a server path."""
    path = Path(option)
    for root, prefix in ((PROJECT_ROOT, ""), (runs_dir(), "runs/")):
        if path.is_relative_to(root):
            return prefix + str(path.relative_to(root))
    return option


def pct(x: object) -> str:
    return f"{x * 100:.1f}%" if isinstance(x, int | float) else "—"


st.title("Optimizer study")
st.markdown(f"The paper reports that **{PAPER_CLAIM}** trains its CNN best. Here every optimizer the project "
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
choice = st.selectbox("Study folder", options, key="study", format_func=study_label)
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

budget = meta.get("budget", {})
sizes = meta.get("data_sizes") or {}
st.caption(f"Budget per cell: `{budget.get('arch')}`, {budget.get('epochs')} epoch(s), "
           f"{budget.get('subset') or 'all'} training images per class ({sizes.get('train', '?')} in all, "
           f"validation {sizes.get('val', '?')}, test {sizes.get('test', '?')}), batch {budget.get('batch_size')}, "
           f"schedule {budget.get('schedule')}, seed {budget.get('seed')} · {meta.get('cells_done')}/"
           f"{meta.get('cells_total')} cells done in {meta.get('wall_seconds', 0) / 60:.1f} min on "
           f"{meta.get('device') or '?'} ({meta.get('precision') or '?'}).")

best = winner(cells)
if best:
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Best optimizer", best.optimizer, help="chosen on validation accuracy, never on test")
    c2.metric("Its learning rate", f"{best.lr:g}")
    c3.metric("Its validation accuracy", pct(best.best_val_acc))
    c4.metric("Its test accuracy", pct(best.test_acc))
    paper = next((c for c in cells if c.optimizer == "amsgrad" and abs(c.lr - 0.01) < 1e-12), None)
    if paper and paper.status == "finished":
        st.caption(f"The paper's choice, amsgrad lr 0.01: validation {pct(paper.best_val_acc)}, "
                   f"test {pct(paper.test_acc)}.")

st.plotly_chart(heatmap_figure(cells), key="heatmap")
notes = Path(folder.strip()) / "README.md"
if notes.is_file():
    with st.expander("How to read this study", expanded=True):
        st.markdown(notes.read_text(encoding="utf-8", errors="replace").split("## How to read it", 1)[-1])
table = pd.DataFrame([{"optimizer": c.optimizer, "lr": f"{c.lr:g}", "status": c.status,
                       "best val acc": pct(c.best_val_acc), "test acc": pct(c.test_acc),
                       "macro-F1": f"{c.macro_f1:.3f}" if isinstance(c.macro_f1, int | float) else "—",
                       "seconds": c.wall_seconds, "error": c.error or ""} for c in cells])
st.dataframe(table, hide_index=True, key="study-table")
