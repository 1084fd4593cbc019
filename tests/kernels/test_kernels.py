"""Every kernel against its torch reference on fresh random inputs, at small and ragged shapes."""

import pytest
import torch

from tools import kernel_checks as kc
from tritonllm.kernels.rmsnorm import Norm

CPU = torch.device("cpu")

CASES = [
    ("embedding", kc.check_embedding, {}),
    ("embedding_ragged", kc.check_embedding, {"V": 37, "H": 33, "T": 1}),
    ("rmsnorm", kc.check_rmsnorm, {}),
    ("rmsnorm_ragged", kc.check_rmsnorm, {"T": 1, "H": 2880}),
    ("linear_bias_residual", kc.check_linear, {}),
    ("linear_decode", kc.check_linear, {"M": 1, "N": 77, "K": 45, "bias": False, "residual": False}),
    ("linear_bf16", kc.check_linear, {"M": 5, "N": 40, "K": 64, "x_dtype": torch.bfloat16, "out_dtype": torch.bfloat16}),
    ("linear_ragged", kc.check_linear, {"M": 70, "N": 19, "K": 300, "residual": False}),
    ("linear_decode_fused_norm", kc.check_linear, {"M": 1, "N": 50, "K": 300, "norm": True}),
    ("linear_prefill_norm", kc.check_linear, {"M": 20, "N": 50, "K": 96, "norm": True}),
    ("rope", kc.check_rope, {}),
    ("rope_gqa8_d64", kc.check_rope, {"T": 3, "NH": 16, "KVH": 2, "D": 64, "pos0": 4000}),
    ("qkv_rope_decode_into_ring", kc.check_qkv_rope_decode, {}),
    ("qkv_rope_decode_into_full_cache", kc.check_qkv_rope_decode, {"pos": 37, "rows": 64}),
    ("qkv_rope_decode_head_dim_64", kc.check_qkv_rope_decode, {"NH": 8, "KVH": 2, "D": 64, "pos": 5, "rows": 8}),
    ("qkv_rope_decode_heads_over_programs", kc.check_qkv_rope_decode,  # as GPUs tile it: 4 rows, K in chunks
     {"tile": {"BN": 4, "BK": 32, "num_warps": 4}}),
    ("kv_store_chunk_longer_than_ring", kc.check_kv_store, {}),
    ("kv_store_chunk_shorter_than_ring", kc.check_kv_store, {"T": 3, "pos0": 14, "rows": 8}),
    ("kv_store_full_cache", kc.check_kv_store, {"T": 13, "pos0": 27, "rows": 64}),
    ("prefill_window", kc.check_attention_prefill, {}),
    ("prefill_full_from_0", kc.check_attention_prefill, {"T": 40, "pos0": 0, "window": 0}),
    ("prefill_full_continued", kc.check_attention_prefill, {"T": 13, "pos0": 27, "window": 0}),
    ("prefill_window_longer_than_ring", kc.check_attention_prefill, {"T": 50, "pos0": 0, "window": 8}),
    ("prefill_ring_continued_long_chunk", kc.check_attention_prefill, {"T": 50, "pos0": 21, "window": 8}),
    ("prefill_ring_continued_short_chunk", kc.check_attention_prefill, {"T": 3, "pos0": 21, "window": 8}),
    ("prefill_ring_before_it_fills", kc.check_attention_prefill, {"T": 4, "pos0": 3, "window": 8}),
    ("prefill_ring_of_a_short_context", kc.check_attention_prefill, {"T": 2, "pos0": 4, "window": 8, "ctx": 6}),
    ("prefill_one_token", kc.check_attention_prefill, {"T": 1, "pos0": 20, "window": 0}),
    ("prefill_one_token_ring", kc.check_attention_prefill, {"T": 1, "pos0": 300, "window": 8}),
    ("prefill_split_output", kc.check_attention_prefill, {"T": 40, "pos0": 0, "window": 0, "split": True}),
    ("prefill_short_chunk_after_a_long_cache", kc.check_attention_prefill,  # cached keys over 3 programs, merged
     {"T": 5, "pos0": 300, "window": 0, "ctx": 512}),
    ("prefill_short_chunk_after_a_long_cache_split_output", kc.check_attention_prefill,
     {"T": 20, "pos0": 260, "window": 0, "ctx": 512, "split": True}),
    ("decode_window", kc.check_attention_decode, {}),
    ("decode_full", kc.check_attention_decode, {"window": 0}),
    ("decode_first_position", kc.check_attention_decode, {"pos": 0, "window": 8}),
    ("decode_ring_not_yet_full", kc.check_attention_decode, {"pos": 5, "window": 8}),
    ("decode_far_beyond_the_ring", kc.check_attention_decode, {"pos": 4000, "window": 8, "ctx": 8192}),
    ("decode_ring_of_a_short_context", kc.check_attention_decode, {"pos": 5, "window": 8, "ctx": 6}),
    ("decode_many_splits", kc.check_attention_decode, {"pos": 4500, "window": 0, "ctx": 4608, "NH": 8, "KVH": 1}),
    ("decode_more_splits_than_a_merge_block", kc.check_attention_decode,
     {"pos": 19000, "window": 0, "ctx": 20480, "NH": 8, "KVH": 1}),
    ("decode_some_splits_without_keys", kc.check_attention_decode,
     {"pos": 2100, "window": 0, "ctx": 20480, "NH": 8, "KVH": 1}),
    ("topk", kc.check_topk_softmax, {}),
    ("topk_128_experts", kc.check_topk_softmax, {"T": 5, "E": 128, "K": 4}),
    ("moe", kc.check_moe, {}),
    ("moe_one_token_gemv", kc.check_moe, {"T": 1, "E": 32, "K": 4, "H": 64, "I": 32}),
    ("moe_one_token_gemv_fused_norm", kc.check_moe, {"T": 1, "E": 32, "K": 4, "H": 64, "I": 32, "norm": True}),
    ("moe_grouped_norm", kc.check_moe, {"T": 9, "norm": True}),
    ("moe_two_tokens_gemv", kc.check_moe, {"T": 2, "E": 8, "K": 4, "H": 96, "I": 64}),
    ("moe_gemv_several_steps", kc.check_moe, {"T": 1, "E": 4, "K": 2, "H": 288, "I": 160}),  # 9 and 5 blocks
    ("moe_gemv_float32_input", kc.check_moe_gemv_planes, {}),
    ("moe_big_tiles", kc.check_moe, {"T": 140, "E": 2, "K": 1, "H": 64, "I": 32}),
    ("moe_ragged_hidden", kc.check_moe, {"T": 20, "E": 6, "K": 2, "H": 160, "I": 96}),
    ("moe_big_and_tail_tiles", kc.check_moe, {"T": 300, "E": 2, "K": 1, "H": 64, "I": 32}),
    ("moe_wide_scales_gemv", kc.check_moe, {"T": 1, "E": 4, "K": 2, "H": 64, "I": 32, "scale_codes": (100, 141)}),
    ("moe_wide_scales_grouped", kc.check_moe, {"T": 12, "E": 4, "K": 2, "H": 64, "I": 32, "scale_codes": (100, 141)}),
]


@pytest.mark.parametrize("name,check,kwargs", CASES, ids=[c[0] for c in CASES])
def test_kernel_matches_reference(name, check, kwargs):
    result = check(CPU, **kwargs)
    assert result["rel_err"] <= result["bound"], result


def _expected_groups(flat: list[int], experts: int, plan) -> tuple[list[int], list[list[int]], list[list[int]]]:
    """The rows and tiles moe_align must give: each expert's pairs in order, padded to big tiles,
    and to tail tiles when at most plan.max_tail rows are left over."""
    rows, big, tail = [], [], []
    for e in range(experts):
        pairs = [p for p, x in enumerate(flat) if x == e]
        n_big, left = divmod(len(pairs), plan.big)
        n_big += left > plan.max_tail
        n_tail = 0 if left > plan.max_tail else -(-left // plan.tail)
        big += [[e, len(rows) + i * plan.big] for i in range(n_big)]
        tail += [[e, len(rows) + n_big * plan.big + i * plan.tail] for i in range(n_tail)]
        rows += pairs + [-1] * (n_big * plan.big + n_tail * plan.tail - len(pairs))
    return rows, big, tail


@pytest.mark.parametrize("tokens,k,experts,plan", [
    (4, 2, 5, (4, 4, 0)), (100, 4, 7, (16, 16, 0)), (300, 4, 32, (32, 32, 0)), (70, 4, 128, (16, 16, 0)),
    (300, 4, 7, (128, 32, 64)), (200, 4, 5, (64, 16, 48)), (9, 4, 3, (16, 8, 8)),
])
def test_moe_align_matches_a_stable_sort_across_chunks(tokens, k, experts, plan):
    """Several chunks of 128 pairs: each chunk places its pairs after those of earlier chunks;
    with tails, an expert's last few rows go to small tiles and no rows are lost."""
    from tritonllm.kernels.moe import TilePlan, moe_align

    plan = TilePlan(*plan)
    ids = torch.stack([torch.randperm(experts)[:k] for _ in range(tokens)]).int()
    groups = moe_align(ids, experts, plan)
    rows, big, tail = _expected_groups(ids.flatten().tolist(), experts, plan)
    sorted_pairs = groups.sorted_pairs.tolist()
    assert sorted_pairs == rows + [-1] * (len(sorted_pairs) - len(rows))
    tables = dict(groups.tiles)
    assert [t for t in tables[plan.big].tolist() if t[0] >= 0] == big
    assert all(t[0] == -1 for t in tables[plan.big].tolist()[len(big):])
    if plan.max_tail:
        assert [t for t in tables[plan.tail].tolist() if t[0] >= 0] == tail
        assert all(t[0] == -1 for t in tables[plan.tail].tolist()[len(tail):])
    else:
        assert len(groups.tiles) == 1 and not tail


def test_moe_align_refuses_a_tail_as_big_as_a_tile():
    from tritonllm.kernels.moe import TilePlan, moe_align

    with pytest.raises(ValueError, match="bad tile plan"):
        moe_align(torch.zeros(4, 2, dtype=torch.int32), 4, TilePlan(32, 16, 32))


def test_launcher_rejects_bad_shapes():
    from tritonllm.kernels.linear import linear

    with pytest.raises(ValueError, match="linear"):
        linear(torch.randn(4, 8).bfloat16(), torch.randn(3, 9).bfloat16())
    with pytest.raises(ValueError, match=r"norm needs float32 x and a scale \[8\]"):
        linear(torch.randn(1, 8), torch.randn(3, 8).bfloat16(), norm=Norm(torch.ones(9), 1e-5))



@pytest.mark.parametrize("rows", [1, 9])
def test_linear_takes_float32_input_as_its_split_parts(rows):
    """Kernels that feed a matmul store its float32 input as bf16 hi + lo (attention's output):
    the parts give the float32 result, one row (a one-token prefill) included."""
    from tritonllm.kernels.common import split_bf16
    from tritonllm.kernels.linear import linear, linear_reference

    x, w, bias = torch.randn(rows, 64), torch.randn(48, 64).bfloat16(), torch.randn(48).bfloat16()
    out = linear(split_bf16(x), w, bias, residual=torch.zeros(rows, 48))
    assert kc.rel_err(out, linear_reference(x, w, bias)) <= 1e-5
    with pytest.raises(ValueError, match="split parts of x must be two contiguous bf16"):
        linear((x.bfloat16(), x), w)

def test_moe_rejects_a_router_of_the_wrong_shape():
    from tritonllm.kernels.moe import moe_experts

    x = torch.randn(1, 64)
    w1, w2 = kc.random_experts(CPU, 8, 64, 64), kc.random_experts(CPU, 8, 64, 32)
    router = (torch.randn(4, 64).bfloat16(), torch.randn(4).bfloat16())  # 4 experts' router, 8 experts
    with pytest.raises(ValueError, match=r"the router must be \[8, 64\] and \[8\]"):
        moe_experts(x, router, 2, w1, w2, 7.0, residual=x.clone())


def test_route_writes_the_expert_input_in_the_gemv_layout():
    """moe_route's expert input (what the GEMVs read) is laid out as gemv_input's: three planes
    carrying x * 2^32 to float32's precision, values in the weight words' nibble-pair order.
    (The interpreter rounds to bf16 toward zero, GPUs to nearest: the planes may differ, their
    sum may not.)"""
    from tritonllm.kernels.moe import moe_route
    from tritonllm.kernels.moe_gemv import RouterParts, gemv_input, moe_gemv_combine

    def values(h):  # planes summed, back in value order
        return h.view(2, 3, 12, 4, 2).transpose(3, 4).reshape(2, 3, 96).double().sum(1) * 2.0**-32

    x = torch.randn(2, 96)
    _, h = moe_route(x, kc.random_router(CPU, 8, 96), 2, None)
    for layout in (h, gemv_input(x)):
        assert torch.allclose(values(layout), x.double(), rtol=2**-22, atol=0)
    with pytest.raises(ValueError, match=r"act must be bf16 \[2, 96\] \(gemv_input\)"):
        moe_gemv_combine(x, RouterParts.choosing(torch.tensor([[0, 1]], dtype=torch.int32), 8),
                         kc.random_experts(CPU, 8, 96, 32), torch.zeros(1, 96))


def test_ring_cache_misuse_is_refused():
    from tritonllm.kernels.attention import attention_prefill

    ring = torch.zeros(8, 2, 16)
    q, k = torch.randn(2, 16, 16), torch.randn(2, 2, 16)
    with pytest.raises(ValueError, match="a cache of 8 rows lost positions before 20"):
        attention_prefill(q, ring, ring, k, k, torch.zeros(16), 20, 0.25, window=16)


def test_launch_arithmetic_matches_tritons():
    import triton

    from tritonllm.kernels.common import cdiv, next_pow2

    assert [next_pow2(n) for n in range(1, 300)] == [triton.next_power_of_2(n) for n in range(1, 300)]
    assert all(cdiv(a, b) == triton.cdiv(a, b) for a in range(0, 100) for b in range(1, 20))
