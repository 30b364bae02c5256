"""Tensor building blocks of the corruptions: padding, filters, resampling, random draws.

Images are ``[B, C, H, W]`` floats. Every random number is drawn on the CPU from one
seeded generator and then moved to the images' device, so a corruption gives the same
result on every device for a seed.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from colearning import seeding

GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as OpenCV's RGB2GRAY


class Random:
    """The random draws of one corruption call: CPU generator, results on ``device``/``dtype``."""

    def __init__(self, seed: int, name: str, device: torch.device, dtype: torch.dtype) -> None:
        self.generator = seeding.generator(seed, "shift", name)
        self.device, self.dtype = device, dtype

    def _out(self, values: Tensor) -> Tensor:
        return values.to(device=self.device, dtype=self.dtype)

    def uniform(self, shape: tuple[int, ...], low: float = 0.0, high: float = 1.0) -> Tensor:
        u = torch.rand(shape, generator=self.generator, dtype=torch.float64)
        return self._out(low + (high - low) * u)

    def normal(self, shape: tuple[int, ...], mean: float = 0.0, std: float = 1.0) -> Tensor:
        z = torch.randn(shape, generator=self.generator, dtype=torch.float64)
        return self._out(mean + std * z)

    def integers(self, low: int, high: int, shape: tuple[int, ...]) -> Tensor:
        """Integers in ``[low, high)`` (int64, on the device)."""
        values = torch.randint(low, high, shape, generator=self.generator)
        return values.to(self.device)

    def poisson(self, rates: Tensor) -> Tensor:
        counts = torch.poisson(rates.detach().to("cpu", torch.float64), generator=self.generator)
        return self._out(counts)


def spatial_scale(x: Tensor) -> float:
    """How many image pixels one CIFAR pixel is: ``max(1, min(H, W) / 32)``.

    The paper's blur lengths are in pixels of 32x32 images. Larger images get them in
    proportion; smaller ones (8x8 digits) keep the paper's values, which would otherwise
    shrink below a pixel and leave the image unchanged.
    """
    return max(1.0, min(x.shape[-2:]) / 32.0)


def pad_index(n: int, before: int, after: int, mode: str, device: torch.device) -> Tensor:
    """Source index of each of ``before + n + after`` padded positions along an axis of ``n``.

    ``replicate``: edge value (``aaa|abcd|ddd``); ``symmetric``: mirrored with the edge
    repeated (``cba|abcd|dcb``, scipy's ``reflect``); ``reflect``: mirrored about the edge
    pixel (``dcb|abcd|cba``, OpenCV's default ``BORDER_REFLECT_101``). Pads of any length.
    """
    i = torch.arange(-before, n + after, device=device)
    if mode == "replicate" or n == 1:
        return i.clamp(0, n - 1)
    period = 2 * n if mode == "symmetric" else 2 * n - 2
    m = i.remainder(period)
    return torch.where(m < n, m, period - 1 - m if mode == "symmetric" else period - m)


def pad(x: Tensor, pad_h: int, pad_w: int, mode: str) -> Tensor:
    """``x [..., H, W]`` padded by ``pad_h`` rows and ``pad_w`` columns on each side."""
    h, w = x.shape[-2:]
    if x.dim() == 4 and (mode == "replicate" or (mode == "reflect" and pad_h < h and pad_w < w)):
        # the same indices as below, in one pass (index_select along H and W is slow on CPU)
        return F.pad(x, (pad_w, pad_w, pad_h, pad_h), mode=mode)
    rows = pad_index(h, pad_h, pad_h, mode, x.device)
    cols = pad_index(w, pad_w, pad_w, mode, x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


# filter2d sums shifted copies for kernels up to this many taps, else one depthwise conv
SHIFTED_TAPS = 16


def filter2d(x: Tensor, kernel: Tensor, mode: str) -> Tensor:
    """Correlate every channel of ``x [B, C, H, W]`` with ``kernel [kh, kw]`` (odd sizes);
    the borders padded by ``mode`` (see :func:`pad_index`), so the shape is kept.

    A small kernel (a separable blur's rows or columns) is a weighted sum of shifted copies,
    a larger one a depthwise convolution on channels-last images: both several times faster
    on CPU than a one-channel convolution over B*C images (docs/performance.md)."""
    b, c, h, w = x.shape
    kh, kw = kernel.shape
    padded = pad(x, kh // 2, kw // 2, mode)
    taps = [(i, j, weight) for i, row in enumerate(kernel.tolist())
            for j, weight in enumerate(row) if weight]
    if len(taps) <= SHIFTED_TAPS:
        out = torch.zeros_like(x)
        for i, j, weight in taps:
            out.add_(padded[..., i:i + h, j:j + w], alpha=weight)
        return out
    padded = padded.contiguous(memory_format=torch.channels_last)
    weight = kernel.to(x)[None, None].expand(c, 1, kh, kw).contiguous()
    return F.conv2d(padded, weight, groups=c).contiguous()


def gaussian_kernel1d(sigma: float, radius: int) -> Tensor:
    """The normalized Gaussian ``exp(-t^2 / 2 sigma^2)`` at ``t = -radius..radius`` (float64)."""
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    return k / k.sum()


def gaussian_blur(x: Tensor, sigma: float, *, truncate: float, mode: str) -> Tensor:
    """Separable Gaussian blur of ``x [B, C, H, W]`` as scipy's ``gaussian_filter``: radius
    ``int(truncate * sigma + 0.5)``; ``sigma <= 0`` leaves ``x`` unchanged."""
    if sigma <= 0:
        return x
    k = gaussian_kernel1d(sigma, int(truncate * sigma + 0.5))
    return filter2d(filter2d(x, k[:, None], mode), k[None, :], mode)


def gather_shifted(padded: Tensor, pad_size: int, dy: Tensor, dx: Tensor) -> Tensor:
    """Per image ``b``, the ``[H, W]`` window of ``padded [B, C, H + 2p, W + 2p]`` moved by
    ``(dy[b], dx[b])`` pixels (int64 ``[B]``, ``|d| <= p``): ``out[b, :, y, x] =
    image[b, :, y + dy[b], x + dx[b]]``."""
    b, c, hp, wp = padded.shape
    h, w = hp - 2 * pad_size, wp - 2 * pad_size
    rows = torch.arange(h, device=padded.device) + pad_size
    cols = torch.arange(w, device=padded.device) + pad_size
    base = (rows[:, None] * wp + cols[None, :]).reshape(1, h * w)
    index = base + (dy * wp + dx).reshape(b, 1)
    flat = padded.reshape(b, c, hp * wp)
    return flat.gather(2, index[:, None, :].expand(b, c, h * w)).reshape(b, c, h, w)


def motion_blur(x: Tensor, radius: float, sigma: float, angles: Tensor) -> Tensor:
    """ImageMagick's ``-motion-blur radius x sigma + angle``: a one-sided streak.

    ``out(p) = sum_i k_i x(p + round(i * (cos a, sin a)))`` for ``i = 0 .. 2 ceil(radius)``,
    ``k_i`` proportional to ``exp(-i^2 / 2 sigma^2)``, edges replicated; ``angles [B]`` in
    degrees, one per image (x to the right, y down).
    """
    width = 2 * math.ceil(radius) + 1  # ImageMagick's GetOptimalKernelWidth1D
    steps = torch.arange(width, dtype=torch.float64)
    weights = torch.exp(-(steps**2) / (2 * sigma**2))
    weights = (weights / weights.sum()).tolist()
    theta = torch.deg2rad(angles.to(torch.float64))
    # ceil(v - 0.5): ImageMagick's rounding of the offsets
    dx = torch.ceil(steps.to(theta.device)[None] * torch.cos(theta)[:, None] - 0.5).long()
    dy = torch.ceil(steps.to(theta.device)[None] * torch.sin(theta)[:, None] - 0.5).long()
    padded = pad(x, width - 1, width - 1, "replicate")
    out = torch.zeros_like(x)
    for i, weight in enumerate(weights):
        out += weight * gather_shifted(padded, width - 1, dy[:, i], dx[:, i])
    return out


def zoom_center(x: Tensor, factor: float) -> Tensor:
    """``x [B, C, H, W]`` enlarged ``factor`` (>= 1) times about its centre and cropped back
    to ``H x W`` (bilinear), the paper's ``clipped_zoom``."""
    theta = torch.tensor([[1 / factor, 0.0, 0.0], [0.0, 1 / factor, 0.0]], dtype=x.dtype,
                         device=x.device).expand(x.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def sample(x: Tensor, px: Tensor, py: Tensor, mode: str) -> Tensor:
    """Bilinear ``x [B, C, H, W]`` at pixel coordinates ``px, py [B, H', W']`` (pixel centres
    at integers); outside, mirrored as ``mode`` (``reflect`` or ``symmetric``)."""
    h, w = x.shape[-2:]
    if mode == "reflect":  # about the edge pixel centres
        grid = torch.stack([2 * px / max(w - 1, 1) - 1, 2 * py / max(h - 1, 1) - 1], -1)
    else:  # about the image border
        grid = torch.stack([(2 * px + 1) / w - 1, (2 * py + 1) / h - 1], -1)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="reflection",
                         align_corners=mode == "reflect")


def gray(x: Tensor) -> Tensor:
    """Luma ``[B, 1, H, W]`` of RGB ``x [B, 3, H, W]`` (``x`` itself when C = 1)."""
    if x.shape[1] == 1:
        return x
    weights = torch.tensor(GRAY, dtype=x.dtype, device=x.device)
    return (x * weights[None, :, None, None]).sum(1, keepdim=True)


def plasma_fractal(batch: int, size: int, decay: float, rng: Random) -> Tensor:
    """``[batch, size, size]`` diamond-square fractal noise in ``[0, 1]`` (``size`` a power
    of two), float64 on the CPU.

    Each pass halves the grid step: square centres get the mean of their 4 corners and
    diamond centres the mean of their 4 neighbours (wrapping around), each plus uniform
    noise of amplitude ``wibble^2`` (the paper's ``wibble * U(-wibble, wibble)``, wibble
    starting at 100); ``wibble`` is divided by ``decay`` per pass, so a small decay gives
    rough, patchy fog and a large one smooth haze.
    """
    heights = torch.zeros(batch, size, size, dtype=torch.float64)
    gen = rng.generator
    step, wibble = size, 100.0

    def wibbled(total: Tensor) -> Tensor:
        noise = torch.rand(total.shape, generator=gen, dtype=torch.float64) * 2 - 1
        return total / 4 + wibble * wibble * noise

    while step >= 2:
        half = step // 2
        corners = heights[:, ::step, ::step]
        squares = corners + corners.roll(-1, 1)
        squares = squares + squares.roll(-1, 2)
        heights[:, half::step, half::step] = wibbled(squares)
        centres, corners = heights[:, half::step, half::step], heights[:, ::step, ::step]
        left = centres + centres.roll(1, 1) + corners + corners.roll(-1, 2)
        heights[:, ::step, half::step] = wibbled(left)
        top = centres + centres.roll(1, 2) + corners + corners.roll(-1, 1)
        heights[:, half::step, ::step] = wibbled(top)
        step //= 2
        wibble /= decay
    heights -= heights.amin((1, 2), keepdim=True)
    return heights / heights.amax((1, 2), keepdim=True)


@functools.lru_cache(maxsize=64)
def box_resize_matrix(size_in: int, size_out: int) -> np.ndarray:
    """``[size_out, size_in]`` matrix of Pillow's ``BOX`` resampling along one axis (read off
    by resizing an identity image, so it is exactly Pillow's filter), float64."""
    from PIL import Image

    identity = Image.fromarray(np.eye(size_in, dtype=np.float32), mode="F")
    resized = np.asarray(identity.resize((size_out, size_in), Image.Resampling.BOX))
    return resized.T.astype(np.float64)
