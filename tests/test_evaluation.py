import math

import pytest
import torch

from colearning.evaluation import evaluate_log_probs, ignores_input, output_spread


def test_collapsed_member_detection():
    gen = torch.Generator().manual_seed(0)
    healthy = torch.softmax(3 * torch.randn(200, 10, generator=gen), -1)
    # a collapsed member: almost uniform, one class barely ahead, tiny input dependence
    base = torch.full((10,), 0.1)
    base[8] += 0.002
    collapsed = base + 0.0005 * torch.randn(200, 10, generator=gen)
    collapsed = collapsed / collapsed.sum(-1, keepdim=True)
    probs = torch.stack([healthy, collapsed])
    assert ignores_input(probs) == [False, True]
    spread = output_spread(probs)
    assert spread[0] > 0.5 and spread[1] < 0.01


def test_spread_by_hand():
    probs = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # mean (0.5, 0.5): |.|_1 = 1 per sample
    torch.testing.assert_close(output_spread(probs), torch.tensor([1.0]))


def test_evaluate_probs_keys_and_values():
    probs = torch.tensor([[[0.9, 0.1], [0.3, 0.7]], [[0.6, 0.4], [0.8, 0.2]]])
    labels = torch.tensor([0, 1])
    out = evaluate_log_probs(probs.log(), labels)
    assert out["test/member_accuracy"] == [1.0, 0.5]
    assert out["test/ensemble_accuracy_mean"] == 0.5  # means (0.75, 0.25), (0.55, 0.45)
    # the vote tie on sample 2 goes to the higher mean probability, class 0: wrong
    assert out["test/ensemble_accuracy_vote"] == 0.5
    assert len(out["test/js_matrix"]) == 2 and out["test/js_matrix"][0][0] == 0.0


def test_metrics_of_confident_members_are_exact_in_log_space():
    # Member 0 is right with p(wrong) = e^-40 (entropy ~ 41 e^-40, far below float16's or
    # even float32's resolution near p = 1); member 1 is confidently wrong with
    # log p(true) = -60 (an NLL that float16 probabilities would cap at 27.6 nats).
    log_probs = torch.tensor([[[0.0, -40.0]], [[-60.0, 0.0]]], dtype=torch.float64)
    log_probs = torch.log_softmax(log_probs, -1)
    out = evaluate_log_probs(log_probs, torch.tensor([0]))
    assert out["test/member_kl"][1] == pytest.approx(60.0, rel=1e-6)
    assert out["test/member_entropy"][0] == pytest.approx(41 * math.exp(-40), rel=1e-4)
    half = log_probs.exp().half().float()  # what float16 storage kept
    assert evaluate_log_probs(half.log(), torch.tensor([0]))["test/member_entropy"][0] == 0.0
