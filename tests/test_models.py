"""The registry builds every architecture; each maps 48x48 faces to 7 logits; accounting is right;
ensembles are described by their members, and old letter-coded ones still load."""

from __future__ import annotations

import json

import pytest
import torch

from fer_core.common.labels import EMOTIONS
from fer_core.models.zoo import (
    ENSEMBLE,
    Ensemble,
    ModelConfig,
    count_macs,
    count_params,
    create_model,
    describe,
    legacy_members,
    list_models,
    members_text,
)


@pytest.mark.parametrize("name", list_models())
def test_every_architecture_gives_seven_logits(name: str) -> None:
    model = create_model(name).eval()
    assert model(torch.rand(2, 1, 48, 48)).shape == (2, 7)
    assert describe(name)


def test_registry_has_the_paper_and_our_designs() -> None:
    assert {"paper", "fernet_s", "fernet_m"} <= set(list_models())
    with pytest.raises(ValueError, match="unknown architecture 'vgg99'"):
        create_model("vgg99")


def test_paper_model_matches_its_description() -> None:
    model = create_model("paper")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size[0]) for c in convs] == [(64, 3), (128, 5), (512, 3), (512, 3)]
    dense = [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert dense == [256, 512, 7]
    assert count_params(model) == 4_474_759


def test_mac_count_of_a_known_layer() -> None:
    conv = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(8 * 48 * 48, 7))
    assert count_macs(conv) == 48 * 48 * 8 * 9 + 8 * 48 * 48 * 7


def test_model_config_refuses_unknown_arch() -> None:
    with pytest.raises(ValueError, match="unknown architecture"):
        ModelConfig.from_dict({"arch": "nope"})
    assert ModelConfig.from_dict(ModelConfig("paper").to_dict()) == ModelConfig("paper")


@pytest.mark.parametrize(("archs", "members"), [(("fernet_s", "fernet_s"), ["fernet_s", "fernet_s"]),
                                                 (("fernet_m", "fernet_s"), ["fernet_m", "fernet_s"]),
                                                 (("fernet_s", "fernet_m"), ["fernet_m", "fernet_s"])])
def test_runs_ship_as_an_ensemble_that_averages_probabilities(tmp_path, archs, members) -> None:
    from fer_core.models.checkpoint import load_checkpoint, save_checkpoint
    from fer_core.runs.ship import build_model

    nets = []
    for seed, arch in enumerate(archs):
        torch.manual_seed(seed)
        m = create_model(arch).eval()
        save_checkpoint(m, ModelConfig(arch), tmp_path / f"run{seed}" / "model.safetensors")
        nets.append(m)
    model, cfg = build_model([tmp_path / "run0", tmp_path / "run1"])
    assert cfg.arch == ENSEMBLE and cfg.members == members  # slots by architecture name, whatever the run order
    x = torch.rand(3, 1, 48, 48)
    with torch.no_grad():
        expected = (nets[0](x).softmax(1) + nets[1](x).softmax(1)) / 2
        assert torch.allclose(model(x).softmax(1), expected, atol=1e-6)
        save_checkpoint(model, cfg, tmp_path / "ens.safetensors")
        assert torch.allclose(load_checkpoint(tmp_path / "ens.safetensors")[0](x).softmax(1), expected, atol=1e-6)


def test_any_mix_of_networks_makes_an_ensemble(tmp_path) -> None:
    """No registry of ensembles to be in: the paper's CNN and a fernet_s make one, slots by name."""
    from fer_core.models.checkpoint import save_checkpoint
    from fer_core.runs.ship import build_model

    for i, arch in enumerate(("paper", "fernet_s")):
        save_checkpoint(create_model(arch), ModelConfig(arch), tmp_path / f"run{i}" / "model.safetensors")
    model, cfg = build_model([tmp_path / "run0", tmp_path / "run1"])
    assert cfg.members == ["fernet_s", "paper"] and cfg.label == "ensemble of fernet_s + paper"
    assert isinstance(model, Ensemble) and len(model.members) == 2


def test_networks_with_other_classes_make_no_ensemble(tmp_path) -> None:
    from fer_core.models.checkpoint import save_checkpoint
    from fer_core.runs.ship import build_model

    save_checkpoint(create_model("tiny"), ModelConfig("tiny"), tmp_path / "run0" / "model.safetensors")
    other = ModelConfig("tiny", classes=[f"c{i}" for i in range(7)])
    save_checkpoint(create_model("tiny"), other, tmp_path / "run1" / "model.safetensors")
    with pytest.raises(ValueError, match="other classes"):
        build_model([tmp_path / "run0", tmp_path / "run1"])


def test_an_ensemble_too_big_for_a_shipped_file_is_refused_before_any_measurement(tmp_path, monkeypatch) -> None:
    """Any mix can be built, so size is the one limit: ship refuses (choose_ensemble never offers) one
    that fits no storage, before it reads data or writes anything."""
    from fer_core.models import checkpoint
    from fer_core.runs import ship

    for i in range(2):
        weights = tmp_path / f"run{i}" / "model.safetensors"
        checkpoint.save_checkpoint(create_model("tiny"), ModelConfig("tiny"), weights)
    monkeypatch.setattr(checkpoint, "SHIPPED_FILE_LIMIT", 1000)
    monkeypatch.setattr(ship, "WEIGHTS_DIR", tmp_path / "weights")
    with pytest.raises(ValueError, match="ensemble of 2 tiny does not fit"):
        ship.ship([tmp_path / "run0", tmp_path / "run1"], "big", str(tmp_path / "no-data"), "cmd", "here")
    assert not (tmp_path / "weights").exists()


def test_only_single_networks_are_listed() -> None:
    """What train.py --arch, the Training page and the bench offer: no ensemble, old code or not."""
    assert list_models() == list_models()
    assert ENSEMBLE not in list_models() and not [n for n in list_models() if legacy_members(n)]


@pytest.mark.parametrize(("code", "members"), [
    ("fernet_s_x2", ["fernet_s", "fernet_s"]),
    ("fernet_ms", ["fernet_m", "fernet_s"]),
    ("fernet_lmmms", ["fernet_l", "fernet_m", "fernet_m", "fernet_m", "fernet_s"]),
    ("fernet_rrmms", ["fernet_r", "fernet_r", "fernet_m", "fernet_m", "fernet_s"]),
])
def test_an_old_letter_code_is_read_as_its_members_in_slot_order(code: str, members: list[str]) -> None:
    old = {"arch": code, "num_classes": 7, "classes": list(EMOTIONS), "input_size": 48}
    cfg = ModelConfig.from_dict(old)
    assert cfg == ModelConfig.ensemble(members) and cfg.to_dict()["members"] == members
    assert cfg.label == f"ensemble of {members_text(members)}"


@pytest.mark.parametrize("name", ["fernet_s", "fernet_x", "fernet_", "fernet_sz", "paper_x2"])
def test_names_that_are_no_old_code_stay_what_they_are(name: str) -> None:
    assert legacy_members(name) is None


def test_an_old_checkpoint_named_by_its_letter_code_loads_as_its_members(tmp_path) -> None:
    from fer_core.models.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = Ensemble([create_model("fernet_m"), create_model("fernet_s")]).eval()
    save_checkpoint(model, ModelConfig("fernet_ms"), tmp_path / "old.safetensors")  # as files were saved before
    assert json.loads((tmp_path / "old_config.json").read_text())["arch"] == "fernet_ms"
    loaded, cfg = load_checkpoint(tmp_path / "old.safetensors")
    assert cfg.arch == ENSEMBLE and cfg.members == ["fernet_m", "fernet_s"]
    x = torch.rand(2, 1, 48, 48)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_an_ensemble_config_round_trips_through_its_checkpoint(tmp_path) -> None:
    from fer_core.models.checkpoint import load_checkpoint, save_checkpoint

    cfg = ModelConfig.ensemble(["fernet_s", "tiny", "tiny"])
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert list(cfg.to_dict()) == ["arch", "members", "num_classes", "classes", "input_size"]
    assert "members" not in ModelConfig("tiny").to_dict()  # single networks' configs are as they always were
    save_checkpoint(cfg.create(), cfg, tmp_path / "e.safetensors", storage="int8")
    assert json.loads((tmp_path / "e_config.json").read_text()) == cfg.to_dict()
    model, loaded = load_checkpoint(tmp_path / "e.safetensors")
    assert loaded == cfg and [type(m) for m in model.members] == [type(m) for m in cfg.create().members]


@pytest.mark.parametrize(("config", "message"), [
    ({"arch": "ensemble"}, "needs the list of its members"),
    ({"arch": "ensemble", "members": []}, "needs the list of its members"),
    ({"arch": "ensemble", "members": ["fernet_s", "vgg99"]}, "unknown member architecture 'vgg99'"),
    ({"arch": "ensemble", "members": ["fernet_s", "ensemble"]}, "unknown member architecture 'ensemble'"),
    ({"arch": "fernet_s", "members": ["fernet_s"]}, "single network"),
])
def test_a_malformed_ensemble_config_is_refused(config: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelConfig.from_dict(config)


def test_the_shipped_ensemble_config_is_in_the_members_form_and_matches_its_files_metadata() -> None:
    """weights/accurate.safetensors keeps its old code in its metadata (rewriting it would change the
    file); the JSON beside it says the same thing in the new form."""
    from safetensors import safe_open

    from fer_core.common.paths import WEIGHTS_DIR
    from fer_core.models.checkpoint import CONFIG_KEY

    written = json.loads((WEIGHTS_DIR / "accurate_config.json").read_text())
    assert written["arch"] == ENSEMBLE
    assert written["members"] == ["fernet_l", "fernet_m", "fernet_m", "fernet_m", "fernet_s"]
    with safe_open(str(WEIGHTS_DIR / "accurate.safetensors"), framework="pt") as fh:
        meta = json.loads(fh.metadata()[CONFIG_KEY])
    assert meta["arch"] == "fernet_lmmms" and ModelConfig.from_dict(meta) == ModelConfig.from_dict(written)
