"""Sampling on the device: greedy, temperature, top-p, seeds."""

import torch

from tritonllm.kernels.sampling import sample, top_p_support


def _rng(seed):
    return torch.tensor([seed, 0], dtype=torch.int64)


def test_greedy_is_argmax():
    for V in (1, 50, 5000):
        logits = torch.randn(V) * 4
        assert sample(logits, _rng(0), 0.0, 1.0).item() == logits.argmax().item()


def test_same_seed_same_tokens_and_step_advances():
    logits = torch.randn(300)
    a, b = _rng(7), _rng(7)
    first = [sample(logits, a, 1.0, 1.0).item() for _ in range(6)]
    second = [sample(logits, b, 1.0, 1.0).item() for _ in range(6)]
    assert first == second
    assert a.tolist() == [7, 6]
    other = [sample(logits, _rng(8), 1.0, 1.0).item() for _ in range(6)]
    assert other != first


def test_temperature_sampling_follows_softmax():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, 0.5, 1.5])
    rng = _rng(3)
    n = 600
    counts = torch.bincount(torch.tensor([sample(logits, rng, 0.8, 1.0).item() for _ in range(n)]), minlength=6)
    expected = torch.softmax(logits / 0.8, -1) * n
    assert ((counts - expected).abs() <= 4 * expected.sqrt() + 3).all(), (counts, expected)


def test_top_p_keeps_to_the_nucleus():
    logits = torch.linspace(3, -3, 40)
    keep = top_p_support(logits, 1.0, 0.6)
    assert 2 <= keep.sum() < 40
    rng = _rng(11)
    tokens = {sample(logits, rng, 1.0, 0.6).item() for _ in range(120)}
    assert all(keep[t] for t in tokens)
    assert len(tokens) >= 2  # it samples, not just takes the argmax
