"""Per-sample augmentation of whole batches of tensors, on whatever device the batch is.

Each image gets its own random flip, rotation, scale and shift through one batched
``affine_grid``/``grid_sample`` call, then an optional random-erasing rectangle: no
Python loop over images, no PIL, so augmenting costs a few percent of a training step.

``CAMERA`` adds what real cameras do to a face that FER-2013's web crops rarely show: exposure
(brightness, contrast, gamma), focus blur and sensor noise, all per image and batched too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    flip: float = 0.5  # probability of a horizontal flip
    rotate_deg: float = 15.0
    scale: tuple[float, float] = (0.85, 1.15)
    shift: float = 0.1  # fraction of the image side
    erase: float = 0.5  # probability of one random-erasing rectangle
    erase_area: tuple[float, float] = (0.02, 0.2)
    brightness: float = 0.0  # +- shift of the mean grey level, in [0, 1] units
    contrast: tuple[float, float] = (1.0, 1.0)
    gamma: tuple[float, float] = (1.0, 1.0)
    blur: float = 0.0  # probability of a Gaussian blur with sigma up to blur_sigma pixels
    blur_sigma: float = 1.2
    noise: float = 0.0  # largest standard deviation of Gaussian sensor noise


CAMERA = AugmentConfig(brightness=0.15, contrast=(0.7, 1.3), gamma=(0.7, 1.4), blur=0.3, noise=0.03)
"""The geometric defaults plus a real camera's exposure, focus and noise."""


def augment_batch(x: torch.Tensor, g: torch.Generator, cfg: AugmentConfig = AugmentConfig()) -> torch.Tensor:
    """x: float (N, 1, H, W) in [0, 1]; returns a new augmented batch of the same shape."""
    n, _, h, w = x.shape
    dev = x.device

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g, device=g.device).to(dev)

    angle = (rand(n) * 2 - 1) * math.radians(cfg.rotate_deg)
    scale = cfg.scale[0] + rand(n) * (cfg.scale[1] - cfg.scale[0])
    flip = torch.where(rand(n) < cfg.flip, -1.0, 1.0)
    tx, ty = [(rand(n) * 2 - 1) * cfg.shift * 2 for _ in range(2)]  # grid units span 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if cfg.erase > 0:
        area = (cfg.erase_area[0] + rand(n) * (cfg.erase_area[1] - cfg.erase_area[0])) * h * w
        aspect = torch.exp((rand(n) * 2 - 1) * math.log(3.0))
        eh = (area * aspect).sqrt().clamp(1, h)
        ew = (area / aspect).sqrt().clamp(1, w)
        y0 = rand(n) * (h - eh)
        x0 = rand(n) * (w - ew)
        ys = torch.arange(h, device=dev).view(1, h, 1)
        xs = torch.arange(w, device=dev).view(1, 1, w)
        box = ((ys >= y0.view(n, 1, 1)) & (ys < (y0 + eh).view(n, 1, 1))
               & (xs >= x0.view(n, 1, 1)) & (xs < (x0 + ew).view(n, 1, 1)))
        box &= (rand(n) < cfg.erase).view(n, 1, 1)
        out = torch.where(box.unsqueeze(1), rand(n, 1, h, w), out)
    if cfg.contrast != (1.0, 1.0) or cfg.brightness or cfg.gamma != (1.0, 1.0):
        out = _exposure(out, rand, cfg)
    if cfg.blur > 0:
        out = _blur(out, rand, cfg)
    if cfg.noise > 0:
        # Gaussian noise from uniform draws (Box-Muller), so the one generator drives everything
        u1, u2 = rand(n, 1, h, w).clamp_min(1e-7), rand(n, 1, h, w)
        normal = (-2 * u1.log()).sqrt() * torch.cos(2 * math.pi * u2)
        out = (out + normal * (rand(n) * cfg.noise).view(n, 1, 1, 1)).clamp(0, 1)
    return out


def _between(rand, n: int, low: float, high: float) -> torch.Tensor:
    return (low + rand(n) * (high - low)).view(n, 1, 1, 1)


def _exposure(x: torch.Tensor, rand, cfg: AugmentConfig) -> torch.Tensor:
    """Contrast about each face's mean, a brightness shift, then a gamma curve."""
    n = x.shape[0]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * _between(rand, n, *cfg.contrast) + mean
    x = x + _between(rand, n, -cfg.brightness, cfg.brightness)
    return x.clamp(0, 1).pow(_between(rand, n, *cfg.gamma))


def _blur(x: torch.Tensor, rand, cfg: AugmentConfig) -> torch.Tensor:
    """A 5x5 Gaussian blur of random strength on a random share of the batch (sigma 0 leaves a face sharp)."""
    n = x.shape[0]
    sigma = (rand(n) * cfg.blur_sigma * (rand(n) < cfg.blur)).clamp_min(1e-3)
    taps = torch.arange(-2, 3, device=x.device, dtype=x.dtype)
    k1 = torch.exp(-(taps.view(1, -1) ** 2) / (2 * sigma.view(-1, 1) ** 2))
    k1 = k1 / k1.sum(1, keepdim=True)
    kernel = (k1.view(n, 5, 1) * k1.view(n, 1, 5)).view(n, 1, 5, 5)
    padded = F.pad(x, (2, 2, 2, 2), mode="replicate").view(1, n, x.shape[2] + 4, x.shape[3] + 4)
    return F.conv2d(padded, kernel, groups=n).view_as(x)
