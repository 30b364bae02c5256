"""channel_stats, the batched random crop + flip, and a training batch's scaling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from colearning.data import augment_batch, channel_stats
from colearning.errors import ConfigError
from colearning.training.data import CellData, Pool, gather

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def images(n=6, channels=3, size=5, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, channels, size, size), dtype=np.uint8)


def floats(x: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(x).to(device).float() / 255


def generator(device, seed=1) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


@pytest.mark.parametrize("device", DEVICES)
def test_batches_are_scaled_and_standardized_per_cell(device):
    """A training batch: pixels in [0, 1], then each cell's (x - mean) / std per channel."""
    x = images(n=8)
    pool = Pool(torch.from_numpy(x).to(device), torch.zeros(8, dtype=torch.long, device=device),
                num_classes=2, in_channels=3, image_size=5)

    def cell(mean, std):
        none = torch.zeros(0, dtype=torch.long)
        return CellData(none, none, None, np.zeros(0), torch.tensor(mean, device=device),
                        torch.tensor(std, device=device))

    cells = [cell([0.5, 0.4, 0.3], [0.2, 0.25, 0.5]), cell([0.1, 0.2, 0.3], [1.0, 0.5, 0.25])]
    index = torch.tensor([[0, 3, 5], [1, 3, 7]], device=device)
    out = gather(pool, index, cells).cpu()
    assert out.dtype == torch.float32 and out.shape == (2, 3, 3, 5, 5)
    plain = torch.from_numpy(x).float() / 255
    for k, c in enumerate(cells):
        expected = (plain[index[k].cpu()] - c.mean.cpu().view(-1, 1, 1)) / c.std.cpu().view(
            -1, 1, 1)
        torch.testing.assert_close(out[k], expected)
    plain_cells = [CellData(c.train, c.test, None, c.test_indices) for c in cells]
    torch.testing.assert_close(gather(pool, index, plain_cells).cpu(), plain[index.cpu()])


def test_channel_stats_matches_numpy():
    x = images(n=5000, size=2)  # more than one internal chunk
    mean, std = channel_stats(x)
    scaled = x.astype(np.float64) / 255
    np.testing.assert_allclose(mean, scaled.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(std, scaled.std(axis=(0, 2, 3)), rtol=1e-9)
    assert len(mean) == 3 and all(isinstance(v, float) for v in mean + std)


def draws(batch, padding, flip, device, seed=1):
    """The numbers augment_batch takes from the generator, in its documented order."""
    g = generator(device, seed)
    span = 2 * padding + 1
    dy = torch.randint(0, span, (batch,), generator=g, device=device) if padding else None
    dx = torch.randint(0, span, (batch,), generator=g, device=device) if padding else None
    mirrored = torch.randint(0, 2, (batch,), generator=g, device=device) if flip else None
    return dy, dx, mirrored


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("padding", "flip"), [(4, True), (2, False), (0, True), (1, True)])
def test_each_sample_is_its_own_crop_and_flip(device, padding, flip):
    x = floats(images(n=32, size=6), device)
    out = augment_batch(x, generator(device), padding=padding, flip=flip)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    dy, dx, mirrored = draws(32, padding, flip, device)
    padded = F.pad(x, (padding,) * 4)
    for i in range(32):  # the slow, obvious reference, one image at a time
        top = int(dy[i]) if padding else 0
        left = int(dx[i]) if padding else 0
        expected = padded[i, :, top : top + 6, left : left + 6]
        if flip and mirrored[i]:
            expected = expected.flip(-1)
        torch.testing.assert_close(out[i], expected, rtol=0, atol=0)
    if padding == 4:
        assert len(set(dy.tolist())) > 3 and len(set(dx.tolist())) > 3  # offsets vary per image
    if flip:
        assert 0 < int(mirrored.sum()) < 32  # some flipped, some not


@pytest.mark.parametrize("device", DEVICES)
def test_same_seed_same_batch(device):
    x = floats(images(n=16), device)
    first = augment_batch(x, generator(device, 7))
    torch.testing.assert_close(first, augment_batch(x, generator(device, 7)), rtol=0, atol=0)
    assert not torch.equal(first, augment_batch(x, generator(device, 8)))


def test_identity_and_errors():
    x = floats(images(), "cpu")
    assert augment_batch(x, generator("cpu"), padding=0, flip=False) is x
    with pytest.raises(ConfigError, match="padding must be >= 0"):
        augment_batch(x, generator("cpu"), padding=-1)
    with pytest.raises(ConfigError, match=r"expects \[B, C, H, W\]"):
        augment_batch(x[0], generator("cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_generator_on_another_device():
    x = floats(images(), "cuda")
    with pytest.raises(ConfigError, match="generator is on cpu but the images are on cuda"):
        augment_batch(x, generator("cpu"))
