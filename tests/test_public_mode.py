"""A public deployment (FER_PUBLIC=1): the settings object, the admin gate, no server paths, no
evaluation on request, and every cap named in its refusal. Pages run headless with AppTest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from fer_core.common.paths import runs_dir
from fer_core.data.dataset import load_split
from fer_core.evaluation.cache import cached_evaluate
from fer_core.models.checkpoint import save_checkpoint
from fer_core.models.zoo import ModelConfig, create_model
from fer_core.runs.app_settings import PUBLIC_DEFAULTS, AppSettings, SettingsError, load_settings
from fer_core.runs.launcher import resume_run, start_run
from fer_core.training.loop import TrainConfig
from tests.conftest import write_folder_dataset, write_test_video

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def _fresh_streamlit_caches() -> None:
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture
def public(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A public deployment with an admin password and a tiny configured dataset."""
    data = write_folder_dataset(tmp_path / "fer", {"train": 20, "test": 5})
    monkeypatch.setenv("FER_PUBLIC", "1")
    monkeypatch.setenv("FER_ADMIN_PASSWORD", PASSWORD)
    monkeypatch.setenv("FER_DATA", str(data))
    return data


def page(name: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / f"{name}.py"), default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


# --------------------------------------------------------------------------- the settings object


def test_public_mode_tightens_the_defaults_and_secrets_win_over_the_environment() -> None:
    local = load_settings(env={}, secrets={})
    assert not local.public and local.may_control_runs(admin=False) and local.may_choose_paths()
    public = load_settings(env={"FER_PUBLIC": "1"}, secrets={})
    assert public.public and not public.may_control_runs(admin=False) and public.may_control_runs(admin=True)
    assert not public.may_choose_paths()
    assert {k: getattr(public, k) for k in PUBLIC_DEFAULTS} == PUBLIC_DEFAULTS
    both = load_settings(env={"FER_PUBLIC": "1", "FER_MAX_FILES": "4"}, secrets={"FER_MAX_FILES": 2})
    assert both.max_files == 2
    assert load_settings(env={}, secrets={"FER_PUBLIC": True}).public  # a TOML boolean


@pytest.mark.parametrize(("env", "message"), [
    ({"FER_PUBLIC": "maybe"}, "FER_PUBLIC must be 1 or 0"),
    ({"FER_MAX_VIDEO_FRAMES": "lots"}, "FER_MAX_VIDEO_FRAMES must be a whole number, got 'lots'"),
    ({"FER_MAX_VIDEO_SECONDS": "-3"}, "FER_MAX_VIDEO_SECONDS must be > 0"),
    ({"FER_MAX_PIXELS": "inf"}, "FER_MAX_PIXELS must be a whole number"),
    ({"FER_MAX_VIDEO_WALL_SECONDS": "nan"}, "FER_MAX_VIDEO_WALL_SECONDS must be > 0"),
])
def test_a_bad_setting_is_named(env: dict, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(env=env, secrets={})


def test_the_password_is_checked_and_never_shown() -> None:
    s = AppSettings(public=True, admin_password=PASSWORD)
    assert s.password_matches(PASSWORD)
    assert not s.password_matches("correct horse") and not s.password_matches("") and not s.password_matches(None)
    assert not AppSettings(public=True).password_matches("")  # no password configured: nobody gets in
    assert PASSWORD not in repr(s)


def test_the_launcher_itself_refuses_a_visitor_of_a_public_deployment(public: Path) -> None:
    cfg = TrainConfig(data=str(public), arch="tiny", epochs=1, subset=5, batch_size=8)
    settings = load_settings(secrets={})
    with pytest.raises(ValueError, match="only the admin may train"):
        start_run(cfg, settings)
    assert not runs_dir().exists() or not any(runs_dir().iterdir())  # nothing was created
    with pytest.raises(ValueError, match="only the admin may train"):
        resume_run(runs_dir() / "nothing", settings)


# --------------------------------------------------------------------------- pages


def test_training_page_by_url_without_the_password_shows_no_control(public: Path) -> None:
    at = page("training")
    assert not [b for b in at.button if b.key in ("start", "cancel", "resume", "promote", "restore")]
    assert [t.key for t in at.text_input] == ["admin-password"]
    assert "admin" in at.info[0].value
    at.text_input(key="admin-password").set_value("guess")
    at.button[0].click().run()  # the form's submit button
    assert not at.exception and "Wrong password" in at.error[0].value
    assert not any(b.key == "start" for b in at.button)


def test_training_page_with_the_password_offers_no_server_path(public: Path) -> None:
    at = page("training")
    at.text_input(key="admin-password").set_value(PASSWORD)
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(b.key == "start" for b in at.button)
    assert not any(t.key == "data" for t in at.text_input)  # the configured dataset only
    assert any("configured with" in c.value for c in at.caption)


def test_training_page_without_a_configured_password_stays_closed(public: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FER_ADMIN_PASSWORD")
    at = page("training")
    assert not at.text_input and any("No admin password is configured" in c.value for c in at.caption)


@pytest.mark.parametrize("name", ["dataset", "metrics", "study", "training", "photo", "video"])
def test_no_page_asks_a_visitor_for_a_server_path(public: Path, name: str) -> None:
    at = page(name)
    assert [t.key for t in at.text_input if t.key != "admin-password"] == []
    for box in at.selectbox:
        assert "another folder…" not in box.options


def test_metrics_shows_only_precomputed_evaluations(public: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(3)
    weights = save_checkpoint(create_model("tiny"), ModelConfig(arch="tiny"), tmp_path / "tiny.safetensors")
    monkeypatch.setenv("FER_WEIGHTS", str(weights))
    at = page("metrics")
    assert any("has not been evaluated in advance" in i.value for i in at.info)
    assert not any(m.label == "Macro-F1" and m.value.startswith("0.") for m in at.metric)
    from fer_core.common.paths import cache_dir

    assert not (cache_dir() / "evals").exists() or not any((cache_dir() / "evals").iterdir())  # nothing computed
    ev, _ = cached_evaluate(weights, load_split(public, "test"))  # what fer-precompute does
    at = page("metrics")
    assert {m.label: m.value for m in at.metric}["Accuracy"] == f"{ev.accuracy * 100:.2f}%"


def test_photo_caps_are_named_in_their_refusals(public: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import io

    from PIL import Image

    monkeypatch.setenv("FER_MAX_PIXELS", "5000")
    torch.manual_seed(3)
    monkeypatch.setenv("FER_WEIGHTS", str(save_checkpoint(create_model("tiny"), ModelConfig(arch="tiny"),
                                                          tmp_path / "tiny.safetensors")))
    buf = io.BytesIO()
    Image.fromarray(np.full((100, 100, 3), 128, np.uint8)).save(buf, format="PNG")
    at = page("photo")
    at.file_uploader[0].set_value(("big.png", buf.getvalue(), "image/png")).run()
    assert not at.exception
    assert "FER_MAX_PIXELS" in at.error[0].value and "big.png" in at.error[0].value
    assert 0 not in at.select_slider[0].options and "full size" not in at.select_slider[0].options  # one
    # visitor's full-size detection would hold the shared detector for everyone


@pytest.mark.parametrize(("env", "expect"), [
    ({"FER_MAX_VIDEO_FRAMES": "2"}, ("caption", "FER_MAX_VIDEO_FRAMES")),
    ({"FER_MAX_VIDEO_SECONDS": "0.25"}, ("caption", "FER_MAX_VIDEO_SECONDS")),
    ({"FER_MAX_VIDEO_PIXELS": "1000"}, ("error", "FER_MAX_VIDEO_PIXELS")),
])
def test_video_caps_are_named(public: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict,
                              expect: tuple[str, str]) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    torch.manual_seed(3)
    monkeypatch.setenv("FER_WEIGHTS", str(save_checkpoint(create_model("tiny"), ModelConfig(arch="tiny"),
                                                          tmp_path / "tiny.safetensors")))
    clip = tmp_path / "clip.mp4"
    write_test_video(clip, [np.full((96, 128), 60 + i, np.uint8) for i in range(12)], codec="mpeg4")
    at = page("video")
    at.file_uploader[0].set_value(("clip.mp4", clip.read_bytes(), "video/mp4")).run()
    assert not at.exception, [e.value for e in at.exception]
    kind, name = expect
    texts = [c.value for c in (at.caption if kind == "caption" else at.error)]
    assert any(name in t for t in texts), texts


def test_public_mode_hides_error_details(public: Path) -> None:
    import streamlit as st

    before = (st.get_option("client.showErrorDetails"), st.get_option("client.toolbarMode"))
    try:
        at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
        at.run()
        assert st.get_option("client.showErrorDetails") == "none"
        assert st.get_option("client.toolbarMode") == "viewer"
    finally:
        st.set_option("client.showErrorDetails", before[0])
        st.set_option("client.toolbarMode", before[1])


def test_precompute_fills_the_cache_the_public_metrics_page_reads(public: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from fer_core.evaluation.cache import lookup
    from fer_core.evaluation.precompute import main, precompute

    torch.manual_seed(3)
    weights = save_checkpoint(create_model("tiny"), ModelConfig(arch="tiny"), tmp_path / "tiny.safetensors")
    first = precompute(public, ["test"], {"tiny": weights}, log=lambda _: None)
    assert [(name, split, tta, hit) for name, split, tta, hit, _ in first] == [
        ("tiny", "test", False, False), ("tiny", "test", True, False)]
    again = precompute(public, ["test"], {"tiny": weights}, log=lambda _: None)
    assert all(hit for *_, hit, _ in again)  # a second run does nothing
    split = load_split(public, "test")
    assert lookup(weights, split, tta=False) is not None and lookup(weights, split, tta=True) is not None
    assert main(["--data", str(public), "--splits", "test,val"]) == 2  # a split the data lacks, named


def test_a_secrets_file_that_cannot_be_read_is_an_error_not_local_mode(tmp_path: Path) -> None:
    import streamlit as st
    from streamlit import config

    broken = tmp_path / "secrets.toml"
    broken.write_text('FER_PUBLIC = 1\nFER_ADMIN_PASSWORD = "unterminated\n')
    before = config.get_option("secrets.files")
    config.set_option("secrets.files", [str(broken)])
    st.secrets._reset()
    try:
        with pytest.raises(SettingsError, match="cannot be read"):
            load_settings(env={})
        broken.write_text('FER_PUBLIC = 1\nFER_ADMIN_PASSWORD = "fine"\n')
        st.secrets._reset()
        assert load_settings(env={}).public and load_settings(env={}).password_matches("fine")
    finally:
        config.set_option("secrets.files", before)
        st.secrets._reset()
