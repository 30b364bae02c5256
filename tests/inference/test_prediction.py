"""colearning.predict: a run's members on images from outside, as the run saw its own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import colearning
from colearning.combiners import combine, ensemble_predict
from colearning.errors import ConfigError
from colearning.inference import Prediction, predict
from colearning.inference.images import check_images

ATOL = 1e-5  # another batch size or float input may round the last bits differently


def test_predict_gives_the_probabilities_the_run_saved(trained_run, saved):
    result = predict(trained_run, saved["images"])
    want = torch.from_numpy(saved["log_probs"])
    assert isinstance(result, Prediction)
    assert result.member_log_probs.shape == want.shape == (2, 360, 10)
    assert result.probs.dtype == result.member_probs.dtype == torch.float32
    assert result.probs.device.type == "cpu"
    torch.testing.assert_close(result.member_log_probs, want, rtol=0, atol=ATOL)
    torch.testing.assert_close(result.member_probs, want.exp(), rtol=0, atol=ATOL)
    torch.testing.assert_close(result.probs, combine(want.exp(), "mean"), rtol=0, atol=ATOL)
    assert torch.equal(result.labels(), result.probs.argmax(-1))
    assert colearning.predict is predict and "predict" in colearning.__all__


def test_uint8_float_channels_last_and_tensors_give_the_same_result(trained_run, saved):
    ensemble, _ = colearning.load_ensemble(trained_run)
    images = saved["images"][:40]
    reference = predict(ensemble, images).member_log_probs
    as_float = images.astype(np.float32) / 255
    for variant in (as_float, images.astype(np.float64) / 255,
                    images.transpose(0, 2, 3, 1), as_float.transpose(0, 2, 3, 1).copy(),
                    torch.from_numpy(images), torch.from_numpy(as_float).double()):
        got = predict(ensemble, variant, batch_size=16).member_log_probs
        torch.testing.assert_close(got, reference, rtol=0, atol=ATOL)
    assert np.array_equal(as_float, images.astype(np.float32) / 255)  # the input is not changed


def test_every_combiner_and_its_labels(trained_run, saved):
    ensemble, _ = colearning.load_ensemble(trained_run)
    ensemble.train()  # predict runs in eval mode and leaves the mode as it found it
    for method in colearning.COMBINERS:
        result = predict(ensemble, saved["images"], method)
        torch.testing.assert_close(result.probs, combine(result.member_probs, method))
        assert torch.equal(result.labels(), ensemble_predict(result.member_probs, method))
    assert ensemble.training


def test_an_empty_batch_gives_empty_tensors(trained_run):
    result = predict(trained_run, np.zeros((0, 1, 8, 8), np.uint8))
    assert result.probs.shape == (0, 10) and result.member_probs.shape == (2, 0, 10)


@pytest.mark.parametrize("images, message", [
    (np.zeros((2, 1, 16, 16), np.uint8), "images are 16x16 but the run's members take 8x8"),
    (np.zeros((2, 16, 16, 1), np.uint8), "images are 16x16 but the run's members take 8x8"),
    (np.zeros((2, 3, 8, 8), np.uint8), "have neither 1 channels first nor last"),
    (np.zeros((1, 8, 8), np.uint8), "a single image needs a batch axis"),
    (np.zeros((2, 1, 8, 8), np.int64), "must be uint8 (0..255) or float (0..1), got torch.int64"),
    (np.full((2, 1, 8, 8), 255.0), "float images must lie in [0, 1], got values in [255, 255]"),
    (np.full((2, 1, 8, 8), np.nan, np.float32), "float images must lie in [0, 1]"),
    ([[0, 1]], "images must be a numpy array or a torch tensor, got list"),
])
def test_wrong_images_are_one_line_errors(trained_run, images, message):
    with pytest.raises(ConfigError) as error:
        predict(trained_run, images)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_wrong_arguments_are_one_line_errors(trained_run, saved):
    images = saved["images"][:4]
    for call, message in [
        (lambda: predict(trained_run, images, "median"), "unknown combiner 'median'; valid:"),
        (lambda: predict(trained_run, images, batch_size=0), "batch_size must be an integer"),
        (lambda: predict(torch.nn.Linear(2, 2), images), "got Linear"),
        (lambda: predict(trained_run.parent / "nope", images), "is not a directory"),
    ]:
        with pytest.raises(colearning.ColearningError) as error:
            call()
        assert message in str(error.value) and "\n" not in str(error.value)


def test_a_layout_that_fits_both_ways_must_be_named():
    inputs = {"in_channels": 3, "image_size": 3}
    images = np.arange(2 * 27, dtype=np.uint8).reshape(2, 3, 3, 3)
    with pytest.raises(ConfigError, match="say which with channels_last=True or False"):
        check_images(images, inputs)
    assert torch.equal(check_images(images, inputs, channels_last=False),
                       torch.from_numpy(images))
    assert torch.equal(check_images(images, inputs, channels_last=True),
                       torch.from_numpy(images).permute(0, 3, 1, 2))
    with pytest.raises(ConfigError, match=r"must be \[B, 8, 8, 1\] \(channels_last=True\)"):
        check_images(np.zeros((2, 1, 8, 8), np.uint8), {"in_channels": 1, "image_size": 8},
                     channels_last=True)
