"""Digital corruptions: contrast, colour, compression, resampling and geometry
(CIFAR-10-C parameters; elastic and pixelate are relative to the image size already)."""

from __future__ import annotations

import io

import numpy as np
import torch
from torch import Tensor

from . import ops
from .core import corruption
from .ops import Random


@corruption("contrast", family="digital",
            description="pulls each channel towards its mean: (x - mean) * c + mean",
            severities=(0.75, 0.5, 0.4, 0.3, 0.15), random=False)
def contrast(x: Tensor, factor: float, rng: Random) -> Tensor:
    """``(x - m) * factor + m`` with ``m`` each channel's mean over the image (low light,
    a dull screen): smaller factors are stronger."""
    mean = x.mean((2, 3), keepdim=True)
    return (x - mean) * factor + mean


@corruption("saturate", family="digital",
            description="HSV saturation S -> S * c[0] + c[1]: grayer (1-2) or more vivid (3-5)",
            severities=((0.3, 0.0), (0.1, 0.0), (1.5, 0.0), (2.0, 0.1), (2.5, 0.2)),
            random=False, monotone=False)
def saturate(x: Tensor, parameter: tuple[float, float], rng: Random) -> Tensor:
    """HSV saturation ``S`` -> ``clip(S * c[0] + c[1], 0, 1)`` with hue and value kept (the
    paper's rgb2hsv / hsv2rgb round trip in closed form: each channel becomes
    ``V - (V - x) S' / S``; gray pixels have hue 0, so a raised saturation tints them red,
    as in the paper). The paper's table desaturates at severities 1-2 and saturates at 3-5,
    so the change does not grow with the severity. Gray images (C = 1) have no saturation
    and are returned unchanged."""
    if x.shape[1] == 1:
        return x.clone()
    factor, shift = parameter
    value, low = x.amax(1, keepdim=True), x.amin(1, keepdim=True)
    sat = torch.where(value > 0, (value - low) / value.clamp_min(1e-12), torch.zeros_like(value))
    new_sat = (sat * factor + shift).clamp(0.0, 1.0)
    hue_zero = torch.tensor([0.0, 1.0, 1.0], dtype=x.dtype, device=x.device)[None, :, None, None]
    colored = value - (value - x) * new_sat / sat.clamp_min(1e-12)
    grayish = value * (1 - new_sat * hue_zero)
    return torch.where(sat > 0, colored, grayish)


@corruption("jpeg_compression", family="digital",
            description="JPEG encoding at quality c (Pillow)",
            severities=(80, 65, 58, 50, 40), random=False)
def jpeg_compression(x: Tensor, quality: int, rng: Random) -> Tensor:
    """The image saved as JPEG at ``quality`` with Pillow (8-bit, 4:2:0 chroma subsampling
    for RGB) and decoded: blocking and ringing artefacts. A loop over the images on the
    host."""
    from PIL import Image

    pixels = (x * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    decoded = []
    for image in pixels:
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(
            buffer, format="JPEG", quality=quality)
        decoded.append(np.asarray(Image.open(buffer)).reshape(image.shape))
    out = torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2)
    return out.to(device=x.device, dtype=x.dtype) / 255


@corruption("pixelate", family="digital",
            description="box-downsampled to c times the size and back (Pillow BOX)",
            severities=(0.95, 0.9, 0.85, 0.75, 0.65), random=False, monotone=False)
def pixelate(x: Tensor, factor: float, rng: Random) -> Tensor:
    """Resized to ``int(H * factor) x int(W * factor)`` and back with Pillow's ``BOX``
    filter (its exact resampling matrices, applied as tensor products): blocky pixels.
    The resolution lost grows with the severity, but the mean change need not: a simple
    ratio (32 -> 24 px at severity 4) keeps the pixel grid aligned and may change sharp
    edges less than an irregular one (32 -> 27 px at severity 3)."""
    h, w = x.shape[-2:]
    rows, cols = (_round_trip(n, max(1, int(n * factor)), x) for n in (h, w))
    return torch.einsum("ij,bcjk,lk->bcil", rows, x, cols)


def _round_trip(size: int, small: int, like: Tensor) -> Tensor:
    matrix = ops.box_resize_matrix(small, size) @ ops.box_resize_matrix(size, small)
    return torch.from_numpy(matrix).to(like)


@corruption("elastic_transform", family="digital",
            description="random affine warp plus a smooth random displacement field",
            severities=((0.0, 0.0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06),
                        (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)), monotone=False)
def elastic_transform(x: Tensor, parameter: tuple[float, float, float], rng: Random) -> Tensor:
    """Geometric distortion, all lengths as fractions of the image size S = min(H, W):
    three points at ``S // 3`` around the centre move by up to ``c[2] S`` pixels, and the
    affine map they define warps the image (bilinear, mirrored about the edge pixels);
    then every pixel is displaced by uniform noise smoothed by a Gaussian of std ``c[1] S``
    (truncated at 3 std) times ``c[0] S`` (bilinear, mirrored about the border). The paper's
    table shrinks the affine part as the elastic part grows, so severity 1 is a pure affine
    warp and the mean change to the pixels *falls* with the severity while the local
    distortion grows."""
    alpha, sigma, shift = (value * min(x.shape[-2:]) for value in parameter)
    b, _, h, w = x.shape
    side = max(1, min(h, w) // 3)  # at least 1: three distinct points on tiny images
    cx, cy = float(w // 2), float(h // 2)
    before = torch.tensor([[cx + side, cy + side], [cx + side, cy - side],
                           [cx - side, cy - side]], dtype=torch.float64)
    after = before + rng.uniform((b, 3, 2), -shift, shift).cpu().to(torch.float64)
    ones = torch.ones(3, 1, dtype=torch.float64)
    # the affine map A (x, y, 1) -> (x', y') taking `before` to `after`; sample at its inverse
    forward = torch.linalg.solve(torch.cat([before, ones], 1), after).transpose(1, 2)  # [B, 2, 3]
    linear_inverse = torch.linalg.inv(forward[:, :, :2])
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64),
                            torch.arange(w, dtype=torch.float64), indexing="ij")
    points = torch.stack([xs, ys], -1)[None] - forward[:, None, None, :, 2]  # [B, H, W, 2]
    source = torch.einsum("bij,bhwj->bhwi", linear_inverse, points).to(x.device)
    x = ops.sample(x, source[..., 0], source[..., 1], "reflect")
    if alpha <= 0:
        return x
    fields = ops.gaussian_blur(rng.uniform((b, 2, h, w), -1.0, 1.0), sigma, truncate=3.0,
                               mode="symmetric") * alpha
    grid_y, grid_x = (t.to(x) for t in torch.meshgrid(torch.arange(h), torch.arange(w),
                                                      indexing="ij"))
    return ops.sample(x, grid_x + fields[:, 0], grid_y + fields[:, 1], "symmetric")
