"""Blur corruptions (CIFAR-10-C parameters; lengths in pixels of a 32x32 image, scaled by
:func:`~colearning.shift.ops.spatial_scale` for larger images)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from . import ops
from .core import corruption
from .ops import Random


@corruption("gaussian_blur", family="blur", description="Gaussian blur of std c pixels",
            severities=(0.4, 0.6, 0.7, 0.8, 1.0), random=False)
def gaussian_blur(x: Tensor, sigma: float, rng: Random) -> Tensor:
    """Gaussian blur of standard deviation ``sigma`` pixels (truncated at 4 sigma, edges
    replicated, as scikit-image's ``gaussian``)."""
    return ops.gaussian_blur(x, sigma * ops.spatial_scale(x), truncate=4.0, mode="replicate")


def _disk_kernel(radius: float, alias_sigma: float) -> Tensor:
    """The paper's anti-aliased disk: the pixels within ``radius`` of the centre on a grid
    of at least 17x17, normalized, then smoothed by a 3x3 (5x5 beyond radius 8) Gaussian
    of std ``alias_sigma``; cropped to its support. float64 ``[k, k]``."""
    half = 8 if radius <= 8 else math.ceil(radius)
    smooth = 1 if radius <= 8 else 2
    grid = torch.arange(-half, half + 1, dtype=torch.float64)
    disk = ((grid[:, None] ** 2 + grid[None, :] ** 2) <= radius**2).to(torch.float64)
    disk /= disk.sum()
    g = ops.gaussian_kernel1d(alias_sigma, smooth)
    kernel = F.conv2d(F.pad(disk, (smooth,) * 4)[None, None], torch.outer(g, g)[None, None])[0, 0]
    reach = min(math.floor(radius) + smooth, half)  # the smoothed disk's support
    return kernel[half - reach: half + reach + 1, half - reach: half + reach + 1]


@corruption("defocus_blur", family="blur",
            description="out-of-focus blur with a disk of radius c[0] pixels",
            severities=((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1)),
            random=False)
def defocus_blur(x: Tensor, parameter: tuple[float, float], rng: Random) -> Tensor:
    """Convolution with an anti-aliased disk (the lens' circle of confusion) of radius
    ``c[0]`` pixels, anti-aliased by a Gaussian of std ``c[1]``; edges mirrored about the
    edge pixel (OpenCV's default). At severities 1-3 the disk is one pixel, so the blur is
    the anti-aliasing Gaussian alone, as in the paper."""
    scale = ops.spatial_scale(x)
    kernel = _disk_kernel(parameter[0] * scale, parameter[1] * scale)
    return ops.filter2d(x, kernel, "reflect")


@corruption("glass_blur", family="blur",
            description="blur, local pixel shuffling, blur again (frosted glass)",
            severities=((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
            monotone=False)
def glass_blur(x: Tensor, parameter: tuple[float, int, int], rng: Random) -> Tensor:
    """Gaussian blur of std ``c[0]``, then ``c[2]`` sweeps over the pixels (bottom-right to
    top-left) each swapping a pixel with one offset by up to ``c[1]`` pixels, then the blur
    again. The offsets are drawn from ``[-c[1], c[1] - 1]`` like the paper's
    ``randint(-c[1], c[1])``, so pixels drift up and left. The paper's table is not
    monotone: severity 3 (more blur, one sweep) changes an image less than severity 2,
    and 5 less than 4. The sweep is sequential, a loop over pixel positions (each step
    vectorized over the batch): slow for large images."""
    scale = ops.spatial_scale(x)
    sigma, delta, sweeps = parameter[0] * scale, max(1, round(parameter[1] * scale)), parameter[2]
    x = ops.gaussian_blur(x, sigma, truncate=4.0, mode="replicate")
    b, c, h, w = x.shape
    flat = x.reshape(b, c, h * w).clone()
    positions = [(row, col) for row in range(h - delta, delta, -1)
                 for col in range(w - delta, delta, -1)]
    for _ in range(sweeps):
        offsets = rng.integers(-delta, delta, (len(positions), 2, b))  # (dx, dy) per image
        for (row, col), (dx, dy) in zip(positions, offsets, strict=True):
            here = row * w + col
            there = ((row + dy) * w + (col + dx))[:, None, None].expand(b, c, 1)
            value = flat[:, :, here].clone()
            flat[:, :, here] = flat.gather(2, there)[:, :, 0]
            flat.scatter_(2, there, value[:, :, None])
    return ops.gaussian_blur(flat.reshape(b, c, h, w), sigma, truncate=4.0, mode="replicate")


@corruption("motion_blur", family="blur",
            description="camera shake: a one-sided Gaussian streak at a random angle",
            severities=((6, 1.0), (6, 1.5), (6, 2.0), (8, 2.0), (9, 2.5)))
def motion_blur(x: Tensor, parameter: tuple[float, float], rng: Random) -> Tensor:
    """ImageMagick's motion blur (radius ``c[0]``, sigma ``c[1]`` pixels) at an angle
    uniform in [-45, 45] degrees per image: each pixel becomes a weighted mean of the
    pixels behind it along that direction, weights ``exp(-i^2 / 2 c[1]^2)`` at step i.
    Offsets are rounded to whole pixels as ImageMagick does; edges replicated."""
    scale = ops.spatial_scale(x)
    angles = rng.uniform((x.shape[0],), -45.0, 45.0)
    return ops.motion_blur(x, parameter[0] * scale, parameter[1] * scale, angles)


@corruption("zoom_blur", family="blur",
            description="mean of the image zoomed about its centre by 1, 1.01, ..., c",
            severities=(1.06, 1.11, 1.15, 1.20, 1.25), random=False)
def zoom_blur(x: Tensor, largest: float, rng: Random) -> Tensor:
    """The mean of the image and its copies zoomed about the centre by ``1, 1.01, ...,
    largest`` (bilinear; the paper's ``np.arange(1, c, 0.01)`` steps, whose float endpoints
    give the largest zooms listed): moving towards the object during the exposure."""
    count = round((largest - 1.0) / 0.01) + 1
    total = x.clone()
    for step in range(count):
        total += ops.zoom_center(x, 1.0 + 0.01 * step)
    return total / (count + 1)
