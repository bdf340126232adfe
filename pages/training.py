"""Training: launch a run in the background, watch it live, resume a stopped one, compare runs, promote one.

The page never trains anything itself: ``fer_core.runs.launcher`` starts a detached worker process
and this page only reads run folders (``fer_core.runs.store``), so it stays responsive and a run
survives the tab.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from fer_core.common.formatting import duration, percent
from fer_core.common.paths import default_data_path, shown_path
from fer_core.data.dataset import DatasetError, is_ferplus
from fer_core.models.active import DEFAULT_WEIGHTS, accurate_weights, active_weights
from fer_core.models.checkpoint import CheckpointError
from fer_core.models.zoo import describe, list_models
from fer_core.runs.app_settings import ADMIN_KEY, AppSettings, SettingsError, load_settings
from fer_core.runs.control import cancel_run, promote, restore_default
from fer_core.runs.duration import estimate
from fer_core.runs.errors import RunError
from fer_core.runs.launcher import check_config, resume_run, start_run
from fer_core.runs.lock import current_lock
from fer_core.runs.store import Run, list_runs, load_run
from fer_core.training.history import ACTIVE_STATES, read_history
from fer_core.training.loop import OPTIMIZERS, SCHEDULES, TrainConfig, TrainingError
from fer_core.training.targets import TARGET_MODES

REFRESH_S = 1.5
LR_PRESETS = ["0.1", "0.01", "0.001", "0.0001"]  # the paper's grid
CUSTOM = "custom…"
BATCH_SIZES = [32, 64, 128, 256]
STATUS_ICONS = {"finished": "✅", "running": "🏃", "preparing": "⏳", "starting": "⏳", "cancelled": "⏹️",
                "failed": "❌", "interrupted": "💥"}


def progress_fraction(p: dict) -> tuple[float, str]:
    epochs, steps = p.get("epochs"), p.get("steps")
    if not (isinstance(epochs, int) and isinstance(steps, int) and epochs > 0 and steps > 0):
        return 0.0, "loading and cleaning the data…"
    done = (p.get("epoch", 1) - 1) * steps + p.get("step", 0)
    frac = min(1.0, max(0.0, done / (epochs * steps)))
    return frac, f"epoch {p.get('epoch')}/{epochs} · step {p.get('step')}/{steps} · {frac * 100:.0f}%"


# --------------------------------------------------------------------------- live progress


def curves_figure(samples: list[dict], history: list[dict]) -> go.Figure:
    """Loss and accuracy: per-step running training values plus one point per finished epoch."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"))
    xs = [s["x"] for s in samples]
    if samples:
        fig.add_trace(go.Scatter(x=xs, y=[s["loss"] for s in samples], name="train (running)",
                                 line={"color": "#1f77b4"}), row=1, col=1)
        fig.add_trace(go.Scatter(x=xs, y=[s["acc"] for s in samples], name="train (running)",
                                 line={"color": "#1f77b4"}, showlegend=False), row=1, col=2)
    if history:
        ep = [h["epoch"] for h in history]
        for col, (tr, va) in enumerate((("train_loss", "val_loss"), ("train_acc", "val_acc")), start=1):
            fig.add_trace(go.Scatter(x=ep, y=[h[tr] for h in history], mode="lines+markers", name="train (epoch)",
                                     line={"color": "#aec7e8"}, showlegend=col == 1), row=1, col=col)
            fig.add_trace(go.Scatter(x=ep, y=[h[va] for h in history], mode="lines+markers", name="validation",
                                     line={"color": "#ff7f0e"}, showlegend=col == 1), row=1, col=col)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(height=320, margin={"t": 40, "b": 30, "l": 10, "r": 10})
    return fig


@st.fragment(run_every=REFRESH_S)
def live_panel(path: str, cancellable: bool) -> None:
    """Re-reads the run's progress.json / history.csv every REFRESH_S seconds."""
    run = load_run(Path(path))
    p = run.progress
    if run.status not in ACTIVE_STATES:
        st.info(f"{STATUS_ICONS.get(run.status, '')} **{run.name}** ended: {run.status}"
                + (f" — {run.error}" if run.error else ""))
        key = f"ended:{path}"
        if not st.session_state.get(key):
            st.session_state[key] = True
            # the worker frees the lock just after its last write; on a loaded machine that can take
            # seconds, and a launcher drawn before it would stay disabled until the next visit
            deadline = time.monotonic() + 20
            while current_lock() is not None and time.monotonic() < deadline:
                time.sleep(0.1)
            st.rerun()  # once: refresh the launcher and the runs list below
        return
    frac, label = progress_fraction(p)
    st.progress(frac, text=f"**{run.name}** — {label}")
    c = st.columns(5)
    c[0].metric("Train loss", f"{p['train_loss']:.3f}" if isinstance(p.get("train_loss"), float) else "—")
    c[1].metric("Train accuracy", percent(p.get("train_acc")))
    c[2].metric("Best val accuracy", percent(p.get("best_val_acc")))
    c[3].metric("Images / s", f"{p['images_per_s']:.0f}" if isinstance(p.get("images_per_s"), float) else "—")
    c[4].metric("ETA", duration(p.get("eta_s")))
    samples = st.session_state.setdefault(f"samples:{path}", [])
    if isinstance(p.get("steps"), int) and isinstance(p.get("train_loss"), float):
        x = p["epoch"] - 1 + p["step"] / p["steps"]
        if not samples or x > samples[-1]["x"]:
            samples.append({"x": x, "loss": p["train_loss"], "acc": p["train_acc"]})
    st.plotly_chart(curves_figure(samples, read_history(run.path)), key=f"live-chart-{run.name}")
    if cancellable and st.button("Cancel this run", key="cancel", type="secondary"):
        try:
            pid = cancel_run(run.path)
            st.warning(f"Cancel sent to PID {pid}: the run stops after the current step and keeps its best "
                       "checkpoint.")
        except RunError as exc:
            st.error(str(exc))


def live_section(runs: list[Run]) -> None:
    active = [r for r in runs if r.status in ACTIVE_STATES]
    lock = current_lock()
    locked_run = Path(lock["run"]).resolve() if lock and lock.get("run") else None
    if not active:
        watched = st.session_state.get("watched")
        if watched and Path(watched).is_dir():  # the run this session watched has ended: say how
            run = load_run(Path(watched))
            st.info(f"{STATUS_ICONS.get(run.status, '')} **{run.name}** ended: {run.status}"
                    + (f" — {run.error}" if run.error else ""))
        return
    st.subheader("Run in progress")
    names = [r.name for r in active]
    default = next((i for i, r in enumerate(active) if r.path.resolve() == locked_run), 0)
    chosen = active[st.selectbox("Watch", range(len(names)), index=default, format_func=lambda i: names[i],
                                 key="watch")] if len(active) > 1 else active[0]
    st.session_state["watched"] = str(chosen.path)
    launched_here = chosen.path.resolve() == locked_run
    if not launched_here:
        st.caption("Started outside the app (e.g. `python train.py`): watch only; stop it where it was started.")
    live_panel(str(chosen.path), launched_here)


# --------------------------------------------------------------------------- launcher


def launch_problems(cfg: TrainConfig, settings: AppSettings, admin: bool) -> list[str]:
    """``check_config``, asked again only when the launch settings (or the data path's timestamp)
    change: ``TrainConfig.validate`` reads the data (all of fer2013.csv), and the page reruns on
    every click anywhere on it. Start checks afresh anyway (``start_run``)."""
    try:
        data_stamp: int | None = os.stat(cfg.data).st_mtime_ns
    except (OSError, ValueError):
        data_stamp = None
    key = repr((asdict(cfg), settings, admin, data_stamp))
    cached = st.session_state.get("launch-check")
    if cached is None or cached[0] != key:
        cached = (key, check_config(cfg, settings, admin))
        st.session_state["launch-check"] = cached
    return list(cached[1])


def dataset_field(settings: AppSettings) -> str:
    """A free-text path locally; on a public deployment only the configured dataset (no server paths)."""
    if settings.may_choose_paths():
        return st.text_input("Dataset: a FER-2013 folder (train/ test/) or fer2013.csv; or FER+ (Microsoft's "
                             "FER2013Train/ FER2013Valid/ folders, or fer2013.csv beside fer2013new.csv)",
                             value=str(default_data_path()), key="data")
    st.caption("Dataset: the copy this deployment is configured with (`FER_DATA`).")
    return str(default_data_path())


TARGET_HELP = {"majority": "the majority label (on FER-2013: its one label)",
               "probability": "a label drawn from the ten votes at every step (Barsoum et al.'s best)",
               "crossentropy": "the vote distribution itself",
               "multitarget": "any emotion with at least 30% of the votes counts as right"}


def target_field(data: str) -> str:
    """The label source the data offers, and for FER+ which of its four targets to train on."""
    try:
        ferplus = is_ferplus(data.strip()) if data.strip() else False
    except (DatasetError, OSError):
        ferplus = False
    if not ferplus:
        st.caption("Labels: FER-2013's one label per face, 7 classes. Give FER+ data to train on its votes.")
        return "majority"
    return st.selectbox("Labels: FER+ (ten votes per face, 8 classes incl. contempt); train on", TARGET_MODES,
                        index=TARGET_MODES.index("probability"), key="target",
                        format_func=lambda m: f"{m}: {TARGET_HELP[m]}")


def launcher(settings: AppSettings, runs: list[Run], admin: bool) -> None:
    st.subheader("Launch a run")
    data = dataset_field(settings)
    archs = list_models()
    c1, c2, c3 = st.columns(3)
    arch = c1.selectbox("Architecture", archs, index=archs.index("fernet_s") if "fernet_s" in archs else 0,
                        key="arch", help="; ".join(f"{a}: {describe(a)}" for a in archs))
    optimizer = c2.selectbox("Optimizer", OPTIMIZERS, index=OPTIMIZERS.index("amsgrad"), key="optimizer")
    lr_text = c3.selectbox("Learning rate", [*LR_PRESETS, CUSTOM], index=1, key="lr")
    if lr_text == CUSTOM:
        lr_text = c3.text_input("Custom learning rate", value="0.005", key="lr-custom")
    c4, c5, c6, c7 = st.columns(4)
    epochs = c4.number_input("Epochs", min_value=1, max_value=settings.max_epochs, value=1, step=1, key="epochs")
    batch = c5.selectbox("Batch size", BATCH_SIZES, index=BATCH_SIZES.index(128), key="batch")
    cap = settings.max_subset
    subset = c6.number_input("Images per class (0 = all)" if cap is None else f"Images per class (≤ {cap})",
                             min_value=0, max_value=cap, value=min(200, cap or 200), step=50, key="subset")
    seed = c7.number_input("Seed", min_value=0, value=0, step=1, key="seed")
    c8, c9 = st.columns(2)
    schedule = c8.selectbox("Learning-rate schedule", SCHEDULES, index=SCHEDULES.index("onecycle"), key="schedule")
    augment = c9.checkbox("Augmentation (flips, shifts, rotations)", value=True, key="augment")
    target = target_field(data)

    lr_problems: list[str] = []
    try:
        lr = float(str(lr_text).strip())
    except (TypeError, ValueError):
        lr = float("nan")
        lr_problems.append(f"learning rate '{lr_text}' is not a number")
    cfg = TrainConfig(data=data.strip(), arch=arch, optimizer=optimizer, lr=lr, epochs=int(epochs),
                      batch_size=int(batch), subset=int(subset) or None, seed=int(seed), schedule=schedule,
                      augment=bool(augment), target=target)
    problems = lr_problems + [p for p in launch_problems(cfg, settings, admin)
                              if not (lr_problems and p.startswith("learning rate"))]
    busy = current_lock()
    if problems:
        st.error("Cannot start:\n" + "\n".join(f"- {p}" for p in problems))
    else:
        try:
            est = estimate(cfg, runs)
            st.caption(f"Estimated duration **{duration(est.seconds)}**: {cfg.epochs} × "
                       f"{est.images_per_epoch:,} training images at {est.images_per_s:.0f} img/s "
                       f"(measured on this machine, from {est.source}), plus evaluation and data loading.")
        except (OSError, ValueError, RuntimeError) as exc:
            st.caption(f"No duration estimate: {exc}")
    if busy:
        st.info(f"A run is in progress (PID {busy.get('pid')}); one run at a time.")
    if st.button("Start training", type="primary", disabled=bool(problems) or busy is not None, key="start"):
        try:
            out = start_run(cfg, settings, admin)
        except (ValueError, RunError, TrainingError) as exc:
            st.error(f"Not started: {exc}")
        else:
            st.session_state["watched"] = str(out)
            st.rerun()


# --------------------------------------------------------------------------- runs, comparison, promotion


def runs_table(runs: list[Run]) -> pd.DataFrame:
    rows = []
    for r in runs:
        c = r.config
        rows.append({"run": r.name, "status": f"{STATUS_ICONS.get(r.status, '')} {r.status}",
                     "arch": c.get("arch"), "optimizer": c.get("optimizer"), "lr": c.get("lr"),
                     "epochs": c.get("epochs"), "subset": c.get("subset"), "best val acc": percent(r.best_val_acc),
                     "test acc": percent(r.test_acc), "error": r.error or ""})
    return pd.DataFrame(rows)


def compare_figure(runs: list[Run]) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("validation accuracy", "training loss"))
    for i, r in enumerate(runs):
        h = read_history(r.path)
        color = f"hsl({(i * 67) % 360}, 65%, 45%)"
        ep = [row["epoch"] for row in h]
        fig.add_trace(go.Scatter(x=ep, y=[row["val_acc"] for row in h], name=r.name, mode="lines+markers",
                                 line={"color": color}, legendgroup=r.name), row=1, col=1)
        fig.add_trace(go.Scatter(x=ep, y=[row["train_loss"] for row in h], name=r.name, mode="lines+markers",
                                 line={"color": color}, legendgroup=r.name, showlegend=False), row=1, col=2)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(height=360, margin={"t": 40, "b": 30, "l": 10, "r": 10})
    return fig


def runs_section(runs: list[Run]) -> None:
    st.subheader("Runs")
    if not runs:
        st.caption("No runs yet.")
        return
    st.dataframe(runs_table(runs), hide_index=True, key="runs-table")
    with_curves = [r for r in runs if read_history(r.path)]
    if with_curves:
        names = [r.name for r in with_curves]
        picked = st.multiselect("Compare runs", names, default=names[:2], key="compare")
        if picked:
            st.plotly_chart(compare_figure([r for r in with_curves if r.name in picked]), key="compare-chart")


def resume_section(runs: list[Run], settings: AppSettings, admin: bool) -> None:
    stopped = [r for r in runs if r.resumable]
    if not stopped:
        return
    st.subheader("Resume a stopped run")
    names = [r.name for r in stopped]
    c1, c2 = st.columns([3, 1])
    choice = next(r for r in stopped if r.name == c1.selectbox("Stopped run", names, key="resume-run"))
    done = len(read_history(choice.path))
    c1.caption(f"{choice.status} after epoch {done} of {choice.config.get('epochs', '?')}: it goes on from there "
               "with its own settings, and ends exactly as if it had never stopped.")
    if choice.status == "failed" and choice.error:  # e.g. a resume that could not go on: say why before a retry
        c1.warning(f"{STATUS_ICONS['failed']} The last attempt failed: {choice.error}")
    busy = current_lock()
    if c2.button("Resume", key="resume", disabled=busy is not None):
        try:
            out = resume_run(choice.path, settings, admin)
        except (ValueError, RunError, TrainingError) as exc:
            st.error(f"Not resumed: {exc}")
        else:
            st.session_state["watched"] = str(out)
            st.rerun()


def promote_section(runs: list[Run]) -> None:
    st.subheader("Active model")
    current = st.empty()
    finished = [r for r in runs if r.status == "finished" and r.has_model]
    c1, c2 = st.columns([3, 1])
    if finished:
        names = [r.name for r in finished]
        choice = c1.selectbox("Finished run", names, key="promote-run")
        if c1.button("Promote to active model", key="promote"):
            try:
                path = promote(next(r.path for r in finished if r.name == choice))
                st.success(f"Every page now uses `{shown_path(path)}`.")
            except (RunError, CheckpointError, OSError) as exc:
                st.error(f"Not promoted: {exc}")
    else:
        c1.caption("No finished run to promote yet.")
    if c2.button("Restore shipped default", key="restore"):
        try:
            restore_default()
            st.success("Every page now uses the shipped models again.")
        except OSError as exc:
            st.error(f"Could not restore the default: {exc}")
    weights = active_weights()
    if weights == DEFAULT_WEIGHTS:
        current.caption(f"Live video uses the shipped fast model `{shown_path(weights)}`; photos and reports "
                        f"use `{shown_path(accurate_weights())}`.")
    else:
        current.caption(f"Every page uses `{shown_path(weights)}`.")


# --------------------------------------------------------------------------- page


def admin_sign_in(settings: AppSettings) -> None:
    """On a public deployment, the one way in: the admin password (from the deployment's secrets)."""
    st.info("On this public deployment, training, cancelling and promoting runs are for its admin only.")
    if not settings.admin_password:
        st.caption("No admin password is configured (`FER_ADMIN_PASSWORD` in `.streamlit/secrets.toml`), "
                   "so training stays off.")
        return
    with st.form("admin-sign-in", clear_on_submit=True):  # the typed password does not stay in the session
        given = st.text_input("Admin password", type="password", key="admin-password")
        if st.form_submit_button("Sign in"):
            if settings.password_matches(given):
                st.session_state[ADMIN_KEY] = True
                st.rerun()
            time.sleep(1.0)  # slows guessing down; the comparison itself is constant-time
            st.error("Wrong password.")


st.title("Training")
try:
    settings = load_settings()
except SettingsError as exc:
    st.error(f"This deployment's settings are invalid: {exc}")
    st.stop()
if not settings.allow_training:
    st.info("Training is disabled on this deployment (FER_ALLOW_TRAINING=0).")
    st.stop()
admin = bool(st.session_state.get(ADMIN_KEY, False))
if not settings.may_control_runs(admin):  # reached by its URL: nothing below is drawn, nothing can be clicked
    admin_sign_in(settings)
    st.stop()
if settings.public and st.sidebar.button("Sign out (admin)", key="sign-out"):
    st.session_state[ADMIN_KEY] = False
    st.rerun()
st.caption("Runs train in a separate background process with the same code as `python train.py`: you may close "
           "this tab and come back. One run at a time.")
all_runs = list_runs()
live_section(all_runs)
launcher(settings, all_runs, admin)
runs_section(all_runs)
resume_section(all_runs, settings, admin)
promote_section(all_runs)
