"""The registry builds every architecture; each maps 48x48 faces to 7 logits; accounting is right."""

from __future__ import annotations

import pytest
import torch

from fer_core.models.zoo import ModelConfig, count_macs, count_params, create_model, describe, list_models


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


@pytest.mark.parametrize(("archs", "ensemble"), [(("fernet_s", "fernet_s"), "fernet_s_x2"),
                                                  (("fernet_m", "fernet_s"), "fernet_ms")])
def test_runs_ship_as_an_ensemble_that_averages_probabilities(tmp_path, archs, ensemble) -> None:
    from fer_core.models.checkpoint import load_checkpoint, save_checkpoint
    from fer_core.runs.ship import build_model

    members = []
    for seed, arch in enumerate(archs):
        torch.manual_seed(seed)
        m = create_model(arch).eval()
        save_checkpoint(m, ModelConfig(arch), tmp_path / f"run{seed}" / "model.safetensors")
        members.append(m)
    model, cfg = build_model([tmp_path / "run0", tmp_path / "run1"])
    assert cfg.arch == ensemble
    x = torch.rand(3, 1, 48, 48)
    with torch.no_grad():
        expected = (members[0](x).softmax(1) + members[1](x).softmax(1)) / 2
        assert torch.allclose(model(x).softmax(1), expected, atol=1e-6)
        save_checkpoint(model, cfg, tmp_path / "ens.safetensors")
        assert torch.allclose(load_checkpoint(tmp_path / "ens.safetensors")[0](x).softmax(1), expected, atol=1e-6)


def test_runs_that_make_no_registered_ensemble_are_refused(tmp_path) -> None:
    from fer_core.models.checkpoint import save_checkpoint
    from fer_core.runs.ship import build_model

    for i, arch in enumerate(("paper", "fernet_s")):
        save_checkpoint(create_model(arch), ModelConfig(arch), tmp_path / f"run{i}" / "model.safetensors")
    with pytest.raises(ValueError, match="no ensemble architecture is made of paper \\+ fernet_s"):
        build_model([tmp_path / "run0", tmp_path / "run1"])


def test_every_registered_ensemble_fits_a_shipped_file() -> None:
    """choose_ensemble only offers what can ship, but a registered name that can never ship would
    still be offered to ``ship`` and the app; each must fit weights/'s limit in some storage."""
    from fer_core.models.checkpoint import SHIPPED_FILE_LIMIT, stored_bytes
    from fer_core.models.zoo import ENSEMBLES

    member_bytes = {a: stored_bytes(create_model(a), "int8") for a in {m for ms in ENSEMBLES.values() for m in ms}}
    too_big = {name: sum(member_bytes[m] for m in members) for name, members in ENSEMBLES.items()
               if sum(member_bytes[m] for m in members) > SHIPPED_FILE_LIMIT - 100_000}  # 100 kB for the header
    assert not too_big
