"""The test-time views: right count, order and geometry, and averaging undoes the stacking."""

from __future__ import annotations

import torch

from fer_core.evaluation import tta


def test_views_are_view_major_and_geometrically_right() -> None:
    x = torch.rand(3, 1, 48, 48)
    v = tta.views(x)
    assert v.shape == (tta.N_VIEWS * 3, 1, 48, 48) == (14 * 3, 1, 48, 48)
    half = tta.N_VIEWS // 2
    assert torch.equal(v[:3], x)  # view 0 is the face itself
    assert torch.equal(v[half * 3:half * 3 + 3], x.flip(3))  # and the first mirrored view its mirror
    right = v[3:6]  # shifted 2 px to the right: column j shows column j-2, the left edge repeats
    assert torch.equal(right[..., 2:], x[..., :-2]) and torch.equal(right[..., 0], x[..., 0])
    up = v[12:15]  # shifted 2 px up
    assert torch.equal(up[..., :-2, :], x[..., 2:, :])
    zoom_in = v[15:18]
    assert zoom_in.shape == x.shape and not torch.allclose(zoom_in, x)


def test_average_is_the_mean_over_views() -> None:
    p = torch.arange(tta.N_VIEWS * 2 * 7, dtype=torch.float32).view(tta.N_VIEWS * 2, 7)
    avg = tta.average(p, 2)
    assert avg.shape == (2, 7)
    assert torch.allclose(avg[1], p[1::2].mean(0))
