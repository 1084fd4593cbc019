"""Sampling on the device: greedy, temperature, top-p, seeds; over one program's block of the
vocabulary and over several (their best candidates, or top-p masses, reduced by the last to arrive)."""

import pytest
import torch

from tools.kernel_checks import check_top_p
from tritonllm.kernels.sampling import SamplerParams, SampleScratch, sample, top_p_support

BLOCKS = [None, 4]  # None: one program for these small vocabularies; 4 logits per program


def _rng(seed):
    return torch.tensor([seed, 0], dtype=torch.int64)


def _sample(logits, rng, temperature, top_p, block=None):
    scratch = SampleScratch(logits.numel(), "cpu", block)
    token = sample(logits, rng, SamplerParams(temperature, top_p), scratch=scratch)
    assert scratch.count.item() == 0  # left ready for the next call (a CUDA graph replays it as is)
    return token


@pytest.mark.parametrize("block", BLOCKS)
def test_greedy_is_argmax_lowest_id_among_ties(block):
    for V in (1, 50, 301):
        logits = torch.randn(V) * 4
        assert _sample(logits, _rng(0), 0.0, 1.0, block).item() == logits.argmax().item()
    tied = torch.zeros(30)
    tied[[9, 17, 25]] = 2.0
    assert _sample(tied, _rng(0), 0.0, 1.0, block).item() == 9


def test_same_seed_same_tokens_and_step_advances():
    logits = torch.randn(300)
    a, b = _rng(7), _rng(7)
    first = [_sample(logits, a, 1.0, 1.0).item() for _ in range(6)]
    second = [_sample(logits, b, 1.0, 1.0, block=16).item() for _ in range(6)]
    assert first == second  # the draw does not depend on how the vocabulary is split
    assert a.tolist() == [7, 6]
    other = [_sample(logits, _rng(8), 1.0, 1.0).item() for _ in range(6)]
    assert other != first


@pytest.mark.parametrize("block", BLOCKS)
def test_temperature_sampling_follows_softmax(block):
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, 0.5, 1.5])
    rng = _rng(3)
    n = 300
    counts = torch.bincount(torch.tensor([_sample(logits, rng, 0.8, 1.0, block).item() for _ in range(n)]),
                            minlength=6)
    expected = torch.softmax(logits / 0.8, -1) * n
    assert ((counts - expected).abs() <= 4 * expected.sqrt() + 3).all(), (counts, expected)


@pytest.mark.parametrize("block", [None, 16])  # 16: three programs (the interpreter is slow on small blocks)
def test_top_p_keeps_to_the_nucleus(block):
    logits = torch.linspace(3, -3, 40)
    keep = top_p_support(logits, 1.0, 0.6)
    assert 2 <= keep.sum() < 40
    rng = _rng(11)
    tokens = {_sample(logits, rng, 1.0, 0.6, block).item() for _ in range(40)}
    assert all(keep[t] for t in tokens)
    assert len(tokens) >= 2  # it samples, not just takes the argmax


@pytest.mark.parametrize("block", [None, 16])
def test_top_p_threshold_keeps_exactly_the_nucleus(block):
    """The passes' threshold against the sorted reference, at several temperatures and masses."""
    torch.manual_seed(0)
    for temperature, top_p in ((1.0, 0.3), (1.0, 0.9), (0.7, 0.99), (2.0, 0.5)):
        result = check_top_p("cpu", 300, temperature, top_p, block)
        assert result["rel_err"] == 0.0, result  # no token near the boundary at these draws: exact


def test_parameters_and_position_are_read_on_the_device():
    """What the engine's CUDA graph relies on: the same launches follow new parameters set in
    their tensor (top-p or not decides which launches), and advance the position they are given."""
    logits = torch.linspace(3, -3, 40)
    params, rng, pos = SamplerParams(0.0, 1.0), _rng(5), torch.tensor([9], dtype=torch.int32)
    scratch = SampleScratch(40, "cpu", block=16)
    assert sample(logits, rng, params, pos=pos, scratch=scratch).item() == 0
    assert pos.item() == 10 and rng.tolist() == [5, 0]
    params.set(1.0, 0.9)
    assert params.nucleus
    sample(logits, rng, params, pos=pos, scratch=scratch)
    params.values.copy_(SamplerParams(1.0, 0.6).values)  # a graph replays the launches of top_p 0.9
    keep = top_p_support(logits, 1.0, 0.6)
    tokens = {sample(logits, rng, params, pos=pos, scratch=scratch).item() for _ in range(24)}
    assert all(keep[t] for t in tokens) and len(tokens) >= 2
    assert pos.item() == 35 and rng.tolist() == [5, 25]


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="temperature -1"):
        SamplerParams(-1.0, 1.0)
    with pytest.raises(ValueError, match="top_p 0"):
        SamplerParams(1.0, 0.0)
    with pytest.raises(ValueError, match="another vocabulary than 50"):
        sample(torch.randn(50), _rng(0), SamplerParams(0.0, 1.0), scratch=SampleScratch(5000, "cpu", block=64))
