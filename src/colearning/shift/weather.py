"""Weather-like corruptions, synthesized (CIFAR-10-C parameters). The paper's frost
blends photographs of frost, which a library without downloads cannot ship: it is left out."""

from __future__ import annotations

import torch
from torch import Tensor

from . import ops
from .core import corruption
from .ops import Random


@corruption("fog", family="weather",
            description="adds c[0] times a plasma-fractal haze, then rescales",
            severities=((0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75)))
def fog(x: Tensor, parameter: tuple[float, float], rng: Random) -> Tensor:
    """Adds ``c[0]`` times a diamond-square fractal in [0, 1] (roughness decay ``c[1]``:
    lower is patchier) to every channel, then scales by ``peak / (peak + c[0])`` with
    ``peak`` the image's maximum, so haze washes out contrast. The fractal is drawn on a
    power-of-two grid of at least 32 (the paper's 32 for CIFAR) and cropped to H x W."""
    amount, decay = parameter
    b, _, h, w = x.shape
    size = max(32, 1 << (max(h, w) - 1).bit_length())
    haze = ops.plasma_fractal(b, size, decay, rng)[:, None, :h, :w].to(x)
    peak = x.amax((1, 2, 3), keepdim=True)
    return (x + amount * haze) * peak / (peak + amount)


@corruption("brightness", family="weather",
            description="raises the HSV value (brightest channel) by c",
            severities=(0.05, 0.10, 0.15, 0.20, 0.30), random=False)
def brightness(x: Tensor, amount: float, rng: Random) -> Tensor:
    """HSV value ``V = max_channel`` raised by ``amount`` (clipped at 1) with hue and
    saturation kept, i.e. every channel scaled by ``V' / V`` (black becomes gray ``V'``):
    the paper's rgb2hsv -> V + c -> hsv2rgb, in closed form. For C = 1, ``x + c``."""
    value = x.amax(1, keepdim=True)
    raised = (value + amount).clamp_max(1.0)
    return torch.where(value > 0, x * raised / value.clamp_min(1e-12), raised)


@corruption("snow", family="weather",
            description="motion-blurred snowflakes over a brightened, grayed image",
            severities=((0.1, 0.2, 1.0, 0.6, 8, 3, 0.95), (0.1, 0.2, 1.0, 0.5, 10, 4, 0.9),
                        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
                        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
                        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)), monotone=False)
def snow(x: Tensor, parameter: tuple[float, ...], rng: Random) -> Tensor:
    """Snowflakes: Gaussian noise ``N(c[0], c[1]^2)`` per pixel, zoomed by ``c[2]`` about the
    centre, values below ``c[3]`` removed, motion-blurred (radius ``c[4]``, sigma ``c[5]``
    pixels) at an angle uniform in [-135, -45] degrees. The image is mixed towards
    ``max(x, 1.5 gray + 0.5)`` by ``1 - c[6]`` (a bright, washed-out sky) and the flake
    layer is added twice, as is and rotated by 180 degrees. In the paper's table severities
    2 and 3 change an image by about the same amount (either may be the larger)."""
    loc, std, zoom, threshold, radius, sigma, keep = parameter
    b, _, h, w = x.shape
    flakes = ops.zoom_center(rng.normal((b, 1, h, w), loc, std), zoom)
    flakes = torch.where(flakes < threshold, torch.zeros_like(flakes), flakes).clamp(0, 1)
    scale = ops.spatial_scale(x)
    angles = rng.uniform((b,), -135.0, -45.0)
    flakes = ops.motion_blur(flakes, radius * scale, sigma * scale, angles)
    x = keep * x + (1 - keep) * torch.maximum(x, ops.gray(x) * 1.5 + 0.5)
    return x + flakes + flakes.flip(-2, -1)
