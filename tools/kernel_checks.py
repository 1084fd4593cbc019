"""Each kernel against its torch reference on fresh random inputs, at any shape and device.

The CPU test suite runs these at small, ragged shapes under Triton's interpreter; the GPU
check (tools/gpu_check.py) runs them at gpt-oss shapes. Every check returns its relative
error and the bound that fits the output's precision.
"""

from __future__ import annotations

import torch

from tritonllm.kernels.attention import attention_decode, attention_prefill, attention_reference
from tritonllm.kernels.common import LOG2E
from tritonllm.kernels.embedding import embedding, embedding_reference
from tritonllm.kernels.linear import linear, linear_reference
from tritonllm.kernels.moe import moe_experts, swiglu_reference, topk_softmax
from tritonllm.kernels.moe_gemv import RouterParts, gemv_input, moe_arrivals, moe_gemv_combine
from tritonllm.kernels.rmsnorm import Norm, rmsnorm, rmsnorm_reference
from tritonllm.kernels.rope import kv_store, qkv_rope_decode, rope_qkv, rope_reference
from tritonllm.kernels.sampling import SamplerParams, SampleScratch, sample, top_p_support
from tritonllm.model.reference import dequantize_mxfp4

BF16_OUT = 1e-2  # outputs rounded to bf16 (relative rounding 2^-9, plus bf16 intermediates)
F32_OUT = 1e-4  # float32 activations and outputs: split-bf16 products carry ~2^-16 relative error


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double().cpu(), ref.double().cpu()
    if not torch.isfinite(out).all():
        return float("inf")
    return ((out - ref).norm() / ref.norm()).item()


def _result(name: str, shape: dict, out, ref, bound: float) -> dict:
    return {"kernel": name, **shape, "rel_err": rel_err(out, ref), "bound": bound}


def check_embedding(device, V=1000, H=96, T=7) -> dict:
    table = torch.randn(V, H, device=device).bfloat16()
    tokens = torch.randint(0, V, (T,), dtype=torch.int32, device=device)
    return _result("embedding", {"V": V, "H": H, "T": T}, embedding(tokens, table), embedding_reference(tokens, table), 0.0)


def _norm(device, H) -> Norm:
    return Norm(torch.randn(H, device=device), 1e-5)


def check_rmsnorm(device, T=5, H=100) -> dict:
    """The normed rows as bf16 hi + lo parts: together float32-accurate."""
    x = torch.randn(T, H, device=device) * 3
    norm = _norm(device, H)
    hi, lo = rmsnorm(x, norm)
    out = hi.float() + lo.float()
    return _result("rmsnorm", {"T": T, "H": H}, out, rmsnorm_reference(x, norm.scale, norm.eps), F32_OUT)


def check_linear(device, M=37, N=300, K=200, bias=True, residual=True, out_dtype=torch.float32, x_dtype=torch.float32,
                 norm=False) -> dict:
    """norm: the input's RMSNorm fused (decode) or run first (prefill)."""
    x = torch.randn(M, K, device=device).to(x_dtype) * (3 if norm else 1)
    w = (torch.randn(N, K, device=device) * 0.05).bfloat16()
    b = torch.randn(N, device=device).bfloat16() if bias else None
    r = torch.randn(M, N, device=device) if residual else None
    n = _norm(device, K) if norm else None
    ref = linear_reference(x, w, b, r, n)
    out = linear(x, w, b, r.clone() if residual else None, out_dtype=out_dtype, norm=n)
    bound = F32_OUT if out.dtype == torch.float32 else BF16_OUT
    shape = {"M": M, "N": N, "K": K, "bias": bias, "residual": residual, "x": str(x_dtype)[6:], "norm": norm}
    return _result("linear", shape, out, ref, bound)


def _rope_inputs(device, T, NH, KVH, D, pos0):
    qkv = torch.randn(T, (NH + 2 * KVH) * D, device=device)
    pos = torch.arange(pos0, pos0 + T, dtype=torch.int32, device=device)
    inv_freq = 1.0 / (150000 ** (torch.arange(0, D, 2, device=device).float() / D))
    return qkv, pos, inv_freq


def check_rope(device, T=13, NH=16, KVH=2, D=16, pos0=5) -> dict:
    qkv, pos, inv_freq = _rope_inputs(device, T, NH, KVH, D, pos0)
    q_ref = rope_reference(qkv[:, : NH * D].view(T, NH, D), pos, inv_freq, 1.35)
    k_ref = rope_reference(qkv[:, NH * D : (NH + KVH) * D].view(T, KVH, D), pos, inv_freq, 1.35)
    v_ref = qkv[:, (NH + KVH) * D :].float().view(T, KVH, D)
    q, k, v = rope_qkv(qkv, pos, inv_freq, 1.35, NH)
    out = torch.cat([t.flatten() for t in (q, k, v)])
    ref = torch.cat([t.flatten() for t in (q_ref, k_ref, v_ref)])
    return _result("rope_qkv", {"T": T, "NH": NH, "KVH": KVH, "D": D, "pos0": pos0}, out, ref, F32_OUT)


def check_qkv_rope_decode(device, NH=16, KVH=2, D=16, H=96, pos=4000, rows=8, tile=None) -> dict:
    """Decode's fused QKV: RMSNorm, projection, bias, RoPE, k and v into a cache of `rows` rows
    at row pos % rows (the other rows keep what they held). `tile`: the launcher's, if None."""
    N = (NH + 2 * KVH) * D
    x = torch.randn(1, H, device=device) * 3
    w = (torch.randn(N, H, device=device) * 0.05).bfloat16()
    b = torch.randn(N, device=device).bfloat16()
    norm = _norm(device, H)
    _, pos_t, inv_freq = _rope_inputs(device, 1, NH, KVH, D, pos)
    qkv = linear_reference(x, w, b, norm=norm)
    q_ref = rope_reference(qkv[:, : NH * D].view(1, NH, D), pos_t, inv_freq, 1.35)
    k_ref = rope_reference(qkv[:, NH * D : (NH + KVH) * D].view(1, KVH, D), pos_t, inv_freq, 1.35)
    caches = torch.randn(rows, KVH, D, device=device), torch.randn(rows, KVH, D, device=device)
    refs = [c.clone() for c in caches]
    refs[0][pos % rows], refs[1][pos % rows] = k_ref[0], qkv[0, (NH + KVH) * D :].view(KVH, D)
    q = qkv_rope_decode(x, w, b, norm, pos_t, inv_freq, 1.35, NH, *caches, tile=tile)
    out = torch.cat([t.flatten() for t in (q, *caches)])
    ref = torch.cat([t.flatten() for t in (q_ref, *refs)])
    return _result("qkv_rope_decode", {"NH": NH, "KVH": KVH, "D": D, "H": H, "pos": pos, "rows": rows}, out, ref,
                   F32_OUT)


def check_kv_store(device, T=50, pos0=20, KVH=2, D=16, rows=8) -> dict:
    """A chunk at pos0..pos0+T-1 into a cache of `rows` rows: its last `rows` positions land at
    row p % rows, the other rows keep what they held."""
    k, v = torch.randn(T, KVH, D, device=device), torch.randn(T, KVH, D, device=device)
    pos = torch.arange(pos0, pos0 + T, dtype=torch.int32, device=device)
    k_cache, v_cache = torch.randn(rows, KVH, D, device=device), torch.randn(rows, KVH, D, device=device)
    refs = (k_cache.clone(), v_cache.clone())
    kept = torch.arange(max(0, T - rows), T, device=device)
    for ref, new in zip(refs, (k, v)):
        ref[(pos0 + kept) % rows] = new[kept]
    kv_store(k, v, pos, k_cache, v_cache)
    shape = {"T": T, "pos0": pos0, "KVH": KVH, "D": D, "rows": rows}
    return _result("kv_store", shape, torch.cat([k_cache, v_cache]), torch.cat(refs), 0.0)


def cache_rows(window: int, ctx: int) -> int:
    """Rows of a layer's KV cache: a sliding window's ring, or the whole context."""
    return min(window, ctx) if window > 0 else ctx


def _ring(history: torch.Tensor, rows: int) -> torch.Tensor:
    """A cache of `rows` rows after positions 0..S-1 of history [S, KVH, D] were written:
    the last `rows` positions at row p % rows, rows never written random."""
    cache = torch.randn(rows, *history.shape[1:], device=history.device)
    kept = torch.arange(max(0, history.shape[0] - rows), history.shape[0], device=history.device)
    cache[kept % rows] = history[kept]
    return cache


def _attention_inputs(device, S, NH, KVH, D):
    """Dense key and value histories [S, KVH, D] and sinks [NH]."""
    return torch.randn(S, KVH, D, device=device), torch.randn(S, KVH, D, device=device), torch.randn(NH, device=device)


def check_attention_prefill(device, T=13, pos0=27, NH=16, KVH=2, D=16, window=8, ctx=64, split=False) -> dict:
    """A chunk continuing a cache (a ring of the window's rows for window > 0) that holds 0..pos0-1.
    split: the output as its bf16 hi + lo parts (the output projection's input), summed here."""
    k, v, sinks = _attention_inputs(device, pos0 + T, NH, KVH, D)
    rows = cache_rows(window, ctx)
    q = torch.randn(T, NH, D, device=device)
    k_new, v_new = k[pos0:].contiguous(), v[pos0:].contiguous()
    out = attention_prefill(q, _ring(k[:pos0], rows), _ring(v[:pos0], rows), k_new, v_new, sinks, pos0, D**-0.5, window,
                            split=split)
    if split:
        out = out[0].float() + out[1].float()
    ref = attention_reference(q, k, v, sinks, pos0, D**-0.5, window)
    shape = {"T": T, "pos0": pos0, "NH": NH, "KVH": KVH, "D": D, "window": window, "rows": rows, "split": split}
    return _result("attention_prefill", shape, out, ref, F32_OUT)


def check_attention_decode(device, pos=39, NH=16, KVH=2, D=16, window=8, ctx=64) -> dict:
    """One query at pos over a cache (a ring of the window's rows for window > 0) holding 0..pos."""
    k, v, sinks = _attention_inputs(device, pos + 1, NH, KVH, D)
    rows = cache_rows(window, ctx)
    q = torch.randn(1, NH, D, device=device)
    pos_t = torch.tensor([pos], dtype=torch.int32, device=device)
    out = attention_decode(q, _ring(k, rows), _ring(v, rows), sinks, pos_t, D**-0.5, window)
    ref = attention_reference(q, k, v, sinks, pos, D**-0.5, window)
    shape = {"pos": pos, "NH": NH, "KVH": KVH, "D": D, "window": window, "ctx": ctx, "rows": rows}
    return _result("attention_decode", shape, out, ref, F32_OUT)


def routing_reference(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Router logits [T, E] -> the top-k expert ids [T, k] int32 and their softmax weights."""
    top = torch.topk(logits, k)
    return top.indices.int(), torch.softmax(top.values, -1)


def random_router(device, E: int, H: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A random router (weight [E, H], bias [E], bf16 as published)."""
    return torch.randn(E, H, device=device).bfloat16(), torch.randn(E, device=device).bfloat16()


def check_topk_softmax(device, T=9, E=8, K=4) -> dict:
    logits = torch.randn(T, E, device=device)
    ids, gates = topk_softmax(logits, K)
    ref_ids, ref_gates = routing_reference(logits, K)
    if not torch.equal(ids, ref_ids):
        return {"kernel": "topk_softmax", "T": T, "E": E, "K": K, "rel_err": float("inf"), "bound": 0.0}
    return _result("topk_softmax", {"T": T, "E": E, "K": K}, gates, ref_gates, F32_OUT)


def random_experts(device, E, N, K, scale_codes=(118, 121)):
    """Random packed MXFP4 weights [E, N, K/32, 16] + E8M0 scales in [scale_codes) (default
    around 2^-8), and a bias."""
    blocks = torch.randint(0, 256, (E, N, K // 32, 16), dtype=torch.uint8, device=device)
    scales = torch.randint(*scale_codes, (E, N, K // 32), dtype=torch.uint8, device=device)
    bias = (torch.randn(E, N, device=device) * 0.1).bfloat16()
    return blocks, scales, bias


def moe_reference(x, ids, gates, w1, w2, limit) -> torch.Tensor:
    """Gate-weighted expert outputs [T*k, H] float32, as moe_experts; one dequantization per
    expert, applied to all of its pairs."""
    T, k = ids.shape
    y = torch.empty(T * k, w2[0].shape[1], device=x.device)
    flat = ids.flatten()
    for e in flat.unique().tolist():
        pairs = (flat == e).nonzero().flatten()
        h = x[pairs // k].float() @ dequantize_mxfp4(w1[0][e], w1[1][e]).T + w1[2][e].float()
        out = swiglu_reference(h, limit) @ dequantize_mxfp4(w2[0][e], w2[1][e]).T + w2[2][e].float()
        y[pairs] = out * gates.flatten()[pairs, None]
    return y


def check_moe(device, T=9, E=8, K=4, H=96, I=64, limit=7.0, scale_codes=(118, 121), norm=False) -> dict:
    """The whole expert path: routing, mlp1 + SwiGLU, mlp2, weighted combine; norm: of the input,
    fused. Up to GEMV_MAX_PAIRS pairs take the matrix-vector kernel, more the grouped tensor-core one."""
    x = torch.randn(T, H, device=device)
    router = random_router(device, E, H)
    n = _norm(device, H) if norm else None
    h = rmsnorm_reference(x, n.scale, n.eps) if norm else x
    ids, gates = routing_reference(linear_reference(h, *router), K)
    w1 = random_experts(device, E, 2 * I, H, scale_codes)
    w2 = random_experts(device, E, H, I, scale_codes)
    residual = torch.randn(T, H, device=device)
    # Twice with one set of arrival counts, as decode runs: each call must leave them zero.
    arrivals = moe_arrivals(H, device)
    out = torch.cat([moe_experts(x, router, K, w1, w2, limit, residual=residual.clone(), norm=n, arrivals=arrivals)
                     for _ in range(2)])
    ref = residual.double() + moe_reference(h, ids, gates, w1, w2, limit).view(T, K, H).double().sum(1)
    # F32_OUT on both paths: the softmax over the chosen experts amplifies the router's float32
    # rounding (the GEMV path reached 1.4e-6 in one H100 draw); the GEMV's own float32 precision
    # has its exact check, check_moe_gemv_planes.
    return _result("moe", {"T": T, "E": E, "K": K, "H": H, "I": I, "norm": norm}, out, torch.cat([ref, ref]), F32_OUT)


def check_moe_gemv_planes(device, E=4, N=32, K=96, k=2) -> dict:
    """The decode GEMV keeps float32 inputs: 1 + 2^-9 + 2^-18, whose bf16 hi + lo carry 1 + 2^-9
    and only the third plane the 2^-18, times weights all 1.0, so the products add up coherently
    and a lost plane shows as a 2^-18 (3.8e-6) relative error."""
    x = torch.full((k, K), 1 + 2**-9 + 2**-18, device=device)
    w2 = (torch.full((E, N, K // 32, 16), 0x22, dtype=torch.uint8, device=device),  # FP4 1.0 in both nibbles
          torch.full((E, N, K // 32), 127, dtype=torch.uint8, device=device),
          torch.zeros(E, N, dtype=torch.bfloat16, device=device))
    route = RouterParts.choosing(torch.tensor([[1, 3]], dtype=torch.int32, device=device), E)  # gates 1/2 each
    out = moe_gemv_combine(gemv_input(x), route, w2, torch.zeros(1, N, device=device))
    ref = torch.full((1, N), K * (1 + 2**-9 + 2**-18), dtype=torch.float64, device=device)
    return _result("moe_gemv_planes", {"E": E, "N": N, "K": K}, out, ref, 2**-22)


def check_top_p(device, V=300, temperature=1.0, top_p=0.9, block=None) -> dict:
    """The top-p passes' threshold (bits of p) against the sorted float64 reference: the mass of
    the tokens kept by one and not the other, over the whole mass, leaving out the tokens at the
    boundary, which rounding decides: within a few units of the last place of the kernels'
    threshold (GPUs' exp2 is approximate), and the reference's last kept and first dropped
    token (float32 sums of the mass differ from float64 ones by ~1e-7 of it: at 201k logits
    that moves the boundary by one token in ~2% of draws, measured on the H100)."""
    logits = torch.randn(V, device=device) * 3
    scratch = SampleScratch(V, device, block)
    token = sample(logits, torch.tensor([1, 0], device=device), SamplerParams(temperature, top_p, device),
                   scratch=scratch)
    p = torch.exp2((logits - logits.max()) / temperature * LOG2E.value)  # as the kernels compute it
    tau = scratch.tau.view(torch.float32)
    ref = top_p_support(logits, temperature, top_p)
    boundary = (p - tau).abs() <= tau * 2**-20
    boundary[torch.where(ref, p, float("inf")).argmin()] = True
    boundary[torch.where(ref, float("-inf"), p).argmax()] = True
    err = (p.double() * (((p >= tau) != ref) & ~boundary)).sum() / p.double().sum()
    err = err.item() if ref[token].item() else float("inf")  # the draw is from the kept set too
    return {"kernel": "top_p", "V": V, "temperature": temperature, "top_p": top_p, "rel_err": err, "bound": 1e-6}


def run_kernel_checks(device, large: bool) -> list[dict]:
    """The suite: small ragged shapes, or (large=True) gpt-oss shapes."""
    if not large:
        return [
            check_embedding(device), check_rmsnorm(device), check_linear(device),
            check_linear(device, M=1, bias=False, residual=False, out_dtype=torch.bfloat16, x_dtype=torch.bfloat16),
            check_linear(device, M=1, norm=True), check_linear(device, M=9, norm=True),
            check_rope(device), check_qkv_rope_decode(device), check_kv_store(device),
            check_attention_prefill(device), check_attention_prefill(device, window=0, pos0=0, T=40),
            check_attention_prefill(device, T=50, pos0=20, window=8),
            check_attention_decode(device), check_attention_decode(device, window=0),
            check_attention_decode(device, pos=4000, window=8), check_topk_softmax(device),
            check_moe(device), check_moe(device, T=1, norm=True), check_moe(device, norm=True), check_moe_gemv_planes(device),
            check_top_p(device),
        ]
    return [
        check_embedding(device, V=201088, H=2880, T=64),
        check_rmsnorm(device, T=512, H=2880),
        check_linear(device, M=512, N=5120, K=2880, residual=False),
        check_linear(device, M=64, N=640, K=2880, out_dtype=torch.bfloat16, x_dtype=torch.bfloat16),
        check_linear(device, M=1, N=2880, K=4096),
        check_linear(device, M=1, N=5120, K=2880, residual=False, norm=True),
        check_linear(device, M=512, N=5120, K=2880, residual=False, norm=True),
        check_linear(device, M=1, N=201088, K=2880, bias=False, residual=False, norm=True),
        check_rope(device, T=512, NH=64, KVH=8, D=64, pos0=100),
        check_qkv_rope_decode(device, NH=64, KVH=8, D=64, H=2880, pos=4000, rows=128),
        check_qkv_rope_decode(device, NH=64, KVH=8, D=64, H=2880, pos=4000, rows=8192),
        check_kv_store(device, T=2048, pos0=300, KVH=8, D=64, rows=128),
        check_kv_store(device, T=300, pos0=700, KVH=8, D=64, rows=8192),
        check_attention_prefill(device, T=512, pos0=0, NH=64, KVH=8, D=64, window=128, ctx=1024),
        check_attention_prefill(device, T=300, pos0=700, NH=64, KVH=8, D=64, window=128, ctx=8192),
        check_attention_prefill(device, T=300, pos0=700, NH=64, KVH=8, D=64, window=0, ctx=1024),
        check_attention_prefill(device, T=512, pos0=0, NH=64, KVH=8, D=64, window=0, ctx=1024, split=True),
        check_attention_prefill(device, T=90, pos0=4000, NH=64, KVH=8, D=64, window=0, ctx=8192, split=True),
        check_attention_prefill(device, T=3, pos0=7000, NH=64, KVH=8, D=64, window=0, ctx=8192),
        check_attention_decode(device, pos=4000, NH=64, KVH=8, D=64, window=0, ctx=8192),
        check_attention_decode(device, pos=4000, NH=64, KVH=8, D=64, window=128, ctx=8192),
        check_attention_decode(device, pos=30000, NH=64, KVH=8, D=64, window=0, ctx=32768),
        check_topk_softmax(device, T=512, E=128, K=4),
        check_moe(device, T=1, E=32, K=4, H=2880, I=2880),
        check_moe(device, T=1, E=32, K=4, H=2880, I=2880, norm=True),
        check_moe(device, T=512, E=32, K=4, H=2880, I=2880, norm=True),
        check_moe(device, T=3, E=32, K=4, H=2880, I=2880),
        check_moe(device, T=1, E=4, K=2, H=288, I=160, scale_codes=(27, 161)),  # the GEMV's exact range of scales
        check_moe_gemv_planes(device),  # small K: a long one adds the tensor cores' own accumulation error
        check_moe(device, T=1024, E=128, K=4, H=2880, I=2880),
        check_moe(device, T=600, E=4, K=2, H=256, I=128),
        check_top_p(device, V=201088, top_p=0.9),
        check_top_p(device, V=201088, temperature=0.6, top_p=0.95),
    ]
