"""The network the app runs computes what the trained network computes, with the training-only layers gone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fer_core.common.device import autocast
from fer_core.models.inference import CHUNK, StridedMaxPool2x2, for_inference
from fer_core.models.zoo import ModelConfig, create_model, list_models


def _trained_looking(model: nn.Module) -> nn.Module:
    """BatchNorm statistics and affine parameters away from their identity defaults, as after training."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.3)
    return model.eval()


def _build(name: str) -> nn.Module:
    """A registered network, or "ensemble": two fernet_s averaged."""
    return ModelConfig.ensemble(["fernet_s", "fernet_s"]).create() if name == "ensemble" else create_model(name)


@pytest.mark.parametrize("name", [*list_models(), "ensemble"])
@torch.no_grad()
def test_the_inference_network_computes_the_same_function(name: str) -> None:
    model = _trained_looking(_build(name))
    fast = for_inference(model)
    x = torch.rand(8, 1, 48, 48, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-4)
    assert not any(isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d | nn.Dropout) for m in fast.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()), "the trained network must stay as it was"


@torch.inference_mode()
def test_bf16_weights_give_exactly_what_autocast_gives() -> None:
    model = _trained_looking(_build("ensemble"))
    fast, stored = for_inference(model), for_inference(model, "bf16")
    assert all(p.dtype == torch.bfloat16 for p in stored.parameters())
    x = torch.rand(4, 1, 48, 48, generator=torch.Generator().manual_seed(2))
    with autocast(torch.device("cpu"), "bf16"):
        assert torch.equal(stored(x), fast(x))


def test_the_fast_model_keeps_no_pool_or_batchnorm_parameters_and_needs_no_gradients() -> None:
    model = _trained_looking(create_model("fernet_s"))
    fast = for_inference(model)
    assert not any(isinstance(m, nn.MaxPool2d) for m in fast.modules())
    assert sum(isinstance(m, StridedMaxPool2x2) for m in fast.modules()) == 4
    assert sum(p.numel() for p in fast.parameters()) < sum(p.numel() for p in model.parameters())
    assert not any(p.requires_grad for p in fast.parameters())


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (2, 3, 7, 9), (1, 4, 2, 3)])
def test_strided_pool_is_max_pool_exactly(shape: tuple[int, ...]) -> None:
    x = torch.randn(*shape).contiguous(memory_format=torch.channels_last)
    assert torch.equal(StridedMaxPool2x2()(x), nn.MaxPool2d(2)(x))
    assert torch.equal(StridedMaxPool2x2()(x.to(torch.bfloat16)), nn.MaxPool2d(2)(x.to(torch.bfloat16)))


def test_only_plain_2x2_pools_are_replaced() -> None:
    model = nn.Sequential(nn.MaxPool2d(4), nn.MaxPool2d(2, stride=1), nn.MaxPool2d(2, ceil_mode=True), nn.MaxPool2d(2))
    kinds = [type(m).__name__ for m in for_inference(model).net]
    assert kinds == ["MaxPool2d", "MaxPool2d", "MaxPool2d", "StridedMaxPool2x2"]


def test_relu_before_a_pool_moves_after_it() -> None:
    """Bit-identical (max and ReLU commute), and the ReLU then runs on a quarter of the values."""
    model = nn.Sequential(nn.ReLU(), nn.MaxPool2d(2), nn.ReLU(), nn.MaxPool2d(3), nn.ReLU()).eval()
    fast = for_inference(model)
    assert [type(m).__name__ for m in fast.net] == ["StridedMaxPool2x2", "ReLU", "ReLU", "MaxPool2d", "ReLU"]
    x = torch.randn(3, 4, 13, 13)
    with torch.no_grad():
        assert torch.equal(fast(x), model(x))


@torch.no_grad()
def test_a_batch_larger_than_a_chunk_gives_what_it_gives_in_one_piece() -> None:
    model = _trained_looking(create_model("tiny"))
    fast = for_inference(model)
    x = torch.rand(2 * CHUNK + 3, 1, 48, 48, generator=torch.Generator().manual_seed(3))
    out = fast(x)
    assert out.shape == (len(x), 7)
    torch.testing.assert_close(out, fast.net(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, model(x), rtol=1e-4, atol=1e-4)
