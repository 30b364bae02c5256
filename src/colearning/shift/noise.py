"""Noise corruptions: per-pixel random changes (CIFAR-10-C parameters, unchanged)."""

from __future__ import annotations

import torch
from torch import Tensor

from .core import corruption
from .ops import Random


@corruption("gaussian_noise", family="noise", description="adds Gaussian noise of std c",
            severities=(0.04, 0.06, 0.08, 0.09, 0.10))
def gaussian_noise(x: Tensor, std: float, rng: Random) -> Tensor:
    """Each value plus independent ``N(0, std^2)`` noise (sensor read-out noise)."""
    return x + std * rng.normal(tuple(x.shape))


@corruption("shot_noise", family="noise",
            description="Poisson photon noise with c photons at full intensity",
            severities=(500, 250, 100, 75, 50))
def shot_noise(x: Tensor, photons: float, rng: Random) -> Tensor:
    """``Poisson(x * photons) / photons``: the noise of counting few photons, stronger in
    bright regions in absolute terms; fewer photons is stronger noise."""
    return rng.poisson(x * photons) / photons


@corruption("impulse_noise", family="noise",
            description="salt-and-pepper: a fraction c of the values set to 0 or 1",
            severities=(0.01, 0.02, 0.03, 0.05, 0.07))
def impulse_noise(x: Tensor, amount: float, rng: Random) -> Tensor:
    """Each value (each channel of each pixel, as scikit-image's ``s&p``) is, with
    probability ``amount``, replaced by 0 or 1 with equal odds (dead and stuck pixels)."""
    flipped = rng.uniform(tuple(x.shape)) <= amount
    salt = (rng.uniform(tuple(x.shape)) <= 0.5).to(x.dtype)
    return torch.where(flipped, salt, x)


@corruption("speckle_noise", family="noise",
            description="multiplicative Gaussian noise x + x * N(0, c^2)",
            severities=(0.06, 0.10, 0.12, 0.16, 0.20))
def speckle_noise(x: Tensor, std: float, rng: Random) -> Tensor:
    """``x + x * N(0, std^2)``: noise proportional to the intensity (speckle)."""
    return x + x * std * rng.normal(tuple(x.shape))
