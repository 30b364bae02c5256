"""colearning.shift: every corruption keeps shape, dtype and range, is reproducible for a
seed, and (where the paper's table is monotone) changes an image more at higher severity;
the building blocks against numpy, scipy, colorsys and Pillow."""

from __future__ import annotations

import colorsys
import doctest
import io
import itertools

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from colearning.errors import ConfigError
from colearning.shift import CORRUPTIONS, FAMILIES, core, corrupt, ops
from colearning.shift.blur import _disk_kernel
from colearning.shift.digital import _round_trip

NAMES = CORRUPTIONS.names()


def structured(batch: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    """Smooth gradients with a filled disk and a bar per image, values in [0.1, 0.9]."""
    gen = torch.Generator().manual_seed(seed)
    axis = torch.linspace(0, 1, size)
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    images = []
    for i in range(batch):
        tilt = torch.rand(channels, 2, generator=gen)
        base = tilt[:, :1, None] * xs + tilt[:, 1:, None] * ys
        cx, cy, radius = torch.rand(3, generator=gen) * torch.tensor([1.0, 1.0, 0.3]) + 0.2
        disk = ((xs - cx) ** 2 + (ys - cy) ** 2 <= radius**2).float()
        bar = ((xs - 0.2 * (i % 4)).abs() < 0.08).float()
        colors = torch.rand(2, channels, 1, 1, generator=gen)
        image = base / 2 * (1 - disk) + colors[0] * disk
        images.append((image * (1 - bar) + colors[1] * bar) * 0.8 + 0.1)
    return torch.stack(images)


@pytest.fixture(scope="module")
def rgb():
    return structured(6, 3, 16)


@pytest.fixture(scope="module")
def gray():
    return structured(4, 1, 8, seed=1)


def test_registry_carries_the_metadata():
    assert len(NAMES) >= 12
    assert {CORRUPTIONS.meta(name)["family"] for name in NAMES} == set(FAMILIES)
    for name in NAMES:
        meta = CORRUPTIONS.meta(name)
        assert len(meta["severities"]) == 5 and "\n" not in meta["description"]
        assert CORRUPTIONS.get(name).__doc__, name


@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_range_and_seed(name, rgb, gray):
    for images in (rgb, gray, rgb.double()):
        out = corrupt(images, name, 3, seed=7)
        assert out.shape == images.shape and out.dtype == images.dtype
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        assert torch.equal(out, corrupt(images, name, 3, seed=7))
    if CORRUPTIONS.meta(name)["random"]:
        assert not torch.equal(corrupt(rgb, name, 3, seed=7), corrupt(rgb, name, 3, seed=8))
    else:
        assert torch.equal(corrupt(rgb, name, 3, seed=7), corrupt(rgb, name, 3, seed=8))


@pytest.mark.parametrize("name", NAMES)
def test_the_change_grows_with_the_severity(name, rgb):
    distance = [float((corrupt(rgb, name, s, seed=3) - rgb).abs().mean()) for s in range(1, 6)]
    assert min(distance) > 0
    if CORRUPTIONS.meta(name)["monotone"]:
        assert all(b >= a - 1e-6 for a, b in itertools.pairwise(distance)), distance
        assert distance[4] > distance[0]
    else:  # the paper's table is not monotone; its 5 severities still differ
        assert len({round(d, 6) for d in distance}) == 5, distance


def test_half_precision_rectangular_and_empty_batches():
    images = structured(2, 3, 12)[..., :10].half()
    for name in ("fog", "elastic_transform", "pixelate", "motion_blur"):
        out = corrupt(images, name, 5)
        assert out.shape == images.shape and out.dtype == torch.float16
    assert corrupt(torch.zeros(0, 3, 8, 8), "fog", 2).shape == (0, 3, 8, 8)


def test_bad_arguments_are_one_line_errors(rgb):
    for bad in (0, 6, 2.0, True):
        with pytest.raises(ConfigError, match="severity must be an int from 1 to 5"):
            corrupt(rgb, "fog", bad)
    with pytest.raises(ConfigError, match="unknown corruption 'frost'; valid: brightness"):
        corrupt(rgb, "frost", 1)
    with pytest.raises(ConfigError, match=r"lie in \[0, 1\]"):
        corrupt(rgb * 2, "fog", 1)
    with pytest.raises(ConfigError, match="floats in"):
        corrupt((rgb * 255).to(torch.uint8), "fog", 1)
    with pytest.raises(ConfigError, match="C = 1 or 3"):
        corrupt(rgb[:, :2], "fog", 1)
    with pytest.raises(ConfigError, match="torch tensor"):
        corrupt(rgb.numpy(), "fog", 1)


# --- building blocks against independent implementations --------------------------------

@pytest.mark.parametrize("mode, numpy_mode", [("replicate", "edge"), ("symmetric", "symmetric"),
                                              ("reflect", "reflect")])
def test_padding_matches_numpy_for_any_length(mode, numpy_mode):
    for n, width in ((5, 2), (4, 9), (1, 3)):
        got = ops.pad_index(n, width, width, mode, torch.device("cpu")).numpy()
        if n == 1 and numpy_mode == "reflect":
            numpy_mode = "edge"  # a single pixel mirrors onto itself
        assert got.tolist() == np.pad(np.arange(n), width, mode=numpy_mode).tolist()


@pytest.mark.parametrize("mode, numpy_mode", [("replicate", "edge"), ("symmetric", "symmetric"),
                                              ("reflect", "reflect")])
def test_padded_images_match_numpy(mode, numpy_mode):
    # pad's one-pass path (F.pad) and its index fallback (pads longer than the image)
    x = structured(2, 3, 6).double()
    for pad_h, pad_w in ((2, 1), (0, 3), (7, 2)):
        got = ops.pad(x, pad_h, pad_w, mode).numpy()
        want = np.pad(x.numpy(), ((0, 0), (0, 0), (pad_h, pad_h), (pad_w, pad_w)),
                      mode=numpy_mode)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shape", [(5, 1), (1, 3), (3, 3), (5, 5), (7, 7)])
def test_filter2d_is_scipys_correlate(shape):
    # up to SHIFTED_TAPS taps: a sum of shifted copies; more: a depthwise convolution
    x = structured(2, 3, 9).double()
    kernel = torch.rand(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = ops.filter2d(x, kernel, "reflect")
    want = ndimage.correlate(x.numpy(), kernel.numpy()[None, None], mode="mirror")
    np.testing.assert_allclose(got.numpy(), want, atol=1e-12)
    assert got.is_contiguous()


def test_gaussian_blur_is_scipys_gaussian_filter():
    x = structured(2, 3, 10).double()
    got = ops.gaussian_blur(x, 0.8, truncate=4.0, mode="replicate")
    want = ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, 0.8, 0.8), mode="nearest", truncate=4)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-12)
    got = ops.gaussian_blur(x, 3.0, truncate=3.0, mode="symmetric")  # radius 9 > size 10
    want = ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, 3, 3), mode="reflect", truncate=3)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-12)


def test_disk_kernels():
    plus = _disk_kernel(1.0, 1e-3)  # radius 1: the centre and its 4 neighbours
    want = torch.zeros(5, 5, dtype=torch.float64)
    want[2, 1:4] = want[1:4, 2] = 0.2
    torch.testing.assert_close(plus, want)
    g = torch.exp(-torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64) / (2 * 0.4**2))
    g /= g.sum()  # radius 0.3: one pixel, so the 3x3 anti-aliasing Gaussian alone
    torch.testing.assert_close(_disk_kernel(0.3, 0.4), torch.outer(g, g))
    assert _disk_kernel(1.5, 0.1).sum().item() == pytest.approx(1.0)


def test_brightness_and_saturate_are_the_hsv_round_trip():
    x = structured(1, 3, 6, seed=4).double()
    x[0, :, 0, 0] = 0.0  # black
    x[0, :, 0, 1] = 0.5  # gray: hue 0, so added saturation tints it red
    pixels = x[0].permute(1, 2, 0).reshape(-1, 3).tolist()
    for name, severity, change in (("brightness", 5, lambda h, s, v: (h, s, min(v + 0.3, 1))),
                                   ("saturate", 1, lambda h, s, v: (h, s * 0.3, v)),
                                   ("saturate", 5, lambda h, s, v: (h, min(s * 2.5 + 0.2, 1), v))):
        want = [colorsys.hsv_to_rgb(*change(*colorsys.rgb_to_hsv(*p))) for p in pixels]
        got = corrupt(x, name, severity)[0].permute(1, 2, 0).reshape(-1, 3)
        np.testing.assert_allclose(got.numpy(), np.array(want), atol=1e-12)


def test_pixelate_is_pillows_box_round_trip():
    x = structured(1, 1, 13).double()
    small = Image.fromarray(x[0, 0].numpy().astype(np.float32), mode="F")
    small = small.resize((int(13 * 0.65),) * 2, Image.Resampling.BOX)
    want = np.asarray(small.resize((13, 13), Image.Resampling.BOX))
    np.testing.assert_allclose(corrupt(x, "pixelate", 5)[0, 0].numpy(), want, atol=1e-6)
    # the resolution kept (the rank of the round trip) falls with the severity
    ranks = [int(torch.linalg.matrix_rank(_round_trip(32, int(32 * c), x)))
             for c in CORRUPTIONS.meta("pixelate")["severities"]]
    assert ranks == [30, 28, 27, 24, 20]


def test_jpeg_is_pillows_encoding():
    x = structured(1, 3, 16)
    pixels = (x[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=40)
    want = np.asarray(Image.open(buffer)).astype(np.float32) / 255
    got = corrupt(x, "jpeg_compression", 5)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_geometry_helpers_are_identities_at_rest():
    x = structured(2, 3, 9).double()
    torch.testing.assert_close(ops.zoom_center(x, 1.0), x)
    elastic = CORRUPTIONS.get("elastic_transform")
    rng = ops.Random(0, "test", x.device, x.dtype)
    torch.testing.assert_close(elastic(x, (0.0, 0.0, 0.0), rng), x)  # no affine, no field
    torch.testing.assert_close(elastic(x, (1e-9, 0.1, 0.0), rng), x)  # a vanishing field
    still = ops.motion_blur(x, 3, 1e-3, torch.tensor([30.0, -30.0]))  # all weight at step 0
    torch.testing.assert_close(still, x)


def test_motion_blur_by_hand():
    x = torch.arange(5.0).repeat(1, 1, 5, 1).double()  # each row is 0 1 2 3 4
    # radius 1: steps 0, 1, 2 to the right, weights exp(-i^2 / 2) normalized, edge replicated
    w = torch.exp(-torch.tensor([0.0, 1.0, 4.0], dtype=torch.float64) / 2)
    w /= w.sum()
    out = ops.motion_blur(x, 1.0, 1.0, torch.tensor([0.0]))
    want = [sum(float(w[i]) * min(col + i, 4) for i in range(3)) for col in range(5)]
    np.testing.assert_allclose(out[0, 0, 2].numpy(), want, atol=1e-12)
    down = ops.motion_blur(x.transpose(-1, -2), 1.0, 1.0, torch.tensor([90.0]))  # y down
    np.testing.assert_allclose(down[0, 0, :, 2].numpy(), want, atol=1e-12)


def test_plasma_fractal_spans_zero_to_one_and_follows_the_seed():
    first = ops.plasma_fractal(2, 16, 2.0, ops.Random(5, "fog", torch.device("cpu"),
                                                       torch.float64))
    again = ops.plasma_fractal(2, 16, 2.0, ops.Random(5, "fog", torch.device("cpu"),
                                                       torch.float64))
    assert torch.equal(first, again) and not torch.equal(first[0], first[1])
    assert first.amin((1, 2)).tolist() == [0.0, 0.0] and first.amax((1, 2)).tolist() == [1, 1]


def test_docstring_examples():
    assert doctest.testmod(core).failed == 0
