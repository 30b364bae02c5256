"""Distribution shift: corrupted copies of an image test split (CIFAR-10-C style).

    from colearning.shift import CORRUPTIONS, corrupt
    shifted = corrupt(images, "gaussian_noise", severity=3, seed=0)   # [B, C, H, W] in [0, 1]
    CORRUPTIONS.meta("fog")   # {'family': 'weather', 'description': ..., 'severities': ...}

The corruptions of Hendrycks & Dietterich (2019), "Benchmarking Neural Network Robustness
to Common Corruptions and Perturbations", at 5 severities with the parameter tables of
their CIFAR-10-C generator (``make_cifar_c.py``), written as batched torch code (Pillow
for JPEG and the BOX resampling matrices). Families: noise (gaussian, shot, impulse,
speckle), blur (gaussian, defocus, glass, motion, zoom), weather (fog, brightness, snow;
frost needs photographs and is left out) and digital (contrast, saturate, jpeg, pixelate,
elastic). Each entry's docstring says what it does and where it departs from the paper.

Images are floats in [0, 1] with C = 1 (gray) or 3 (RGB), any size. Blur lengths are in
pixels of a 32x32 image, scaled up for larger images (:func:`.ops.spatial_scale`). The
paper stores 8-bit images; these stay floats (JPEG aside), so values are not quantized.
"""

from __future__ import annotations

from . import blur, digital, noise, weather  # noqa: F401 - fill CORRUPTIONS
from .core import CORRUPTIONS, FAMILIES, SEVERITIES, corrupt

__all__ = ["CORRUPTIONS", "FAMILIES", "SEVERITIES", "corrupt"]
