import torch

from colearning.evaluation import collapsed_members, evaluate_probs, output_spread


def test_collapsed_member_detection():
    gen = torch.Generator().manual_seed(0)
    healthy = torch.softmax(3 * torch.randn(200, 10, generator=gen), -1)
    # a collapsed member: almost uniform, one class barely ahead, tiny input dependence
    base = torch.full((10,), 0.1)
    base[8] += 0.002
    collapsed = base + 0.0005 * torch.randn(200, 10, generator=gen)
    collapsed = collapsed / collapsed.sum(-1, keepdim=True)
    probs = torch.stack([healthy, collapsed])
    assert collapsed_members(probs) == [False, True]
    spread = output_spread(probs)
    assert spread[0] > 0.5 and spread[1] < 0.01


def test_spread_by_hand():
    probs = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # mean (0.5, 0.5): |.|_1 = 1 per sample
    torch.testing.assert_close(output_spread(probs), torch.tensor([1.0]))


def test_evaluate_probs_keys_and_values():
    probs = torch.tensor([[[0.9, 0.1], [0.3, 0.7]], [[0.6, 0.4], [0.8, 0.2]]])
    labels = torch.tensor([0, 1])
    out = evaluate_probs(probs, labels)
    assert out["test/member_accuracy"] == [1.0, 0.5]
    assert out["test/ensemble_accuracy_mean"] == 0.5  # means (0.75, 0.25), (0.55, 0.45)
    assert out["test/ensemble_accuracy_vote"] == 0.5  # tie on sample 2 goes to class 0: wrong
    assert len(out["test/js_matrix"]) == 2 and out["test/js_matrix"][0][0] == 0.0
