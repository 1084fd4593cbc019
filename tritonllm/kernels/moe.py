"""Mixture of experts: router top-k, expert grouping, bf16 x MXFP4 expert matmuls, combine.

Flow for T tokens and k experts per token (R = T*k (token, expert) pairs, pair p = t*k + j):
1. `topk_softmax`: gate logits [T, E] -> expert ids [T, k] and softmax weights over the k.
2. `moe_align`: stable-sort pairs by expert on the device, padding each expert's group to
   whole tiles (`TilePlan`: big tiles, then small ones for the few rows left over), and list
   each tile's expert and first row. No host sync, so the launches need no knowledge of the
   routing.
3. `moe_mlp1`: for each tile, x rows @ W1[e].T + b1 with the clamped SwiGLU fused in the
   epilogue (gate and linear columns are interleaved: even = gate, odd = linear).
4. `moe_mlp2`: (act @ W2[e].T + b2) * gate weight, one float32 row per pair.
5. `moe_combine`: x[t] += sum over the token's k rows (the residual add), deterministic.
Decode (a few pairs) replaces the router's matmul and 1-5 with `moe_route` (the router's
matmul in parts and the RMSNorm of the expert input in one small launch, which writes the input
as the GEMV reads it) and the matrix-vector products of kernels.moe_gemv, whose programs each
finish the top-k from the parts and whose mlp2 also does the combine. `moe_experts` picks the
path. (The router's matmul and norm inside every mlp1 program instead was measured slower on the
H100, 24.9 against 20.2 us per layer: 80 -> 128 registers.)

Expert weights stay packed as on disk (see tritonllm.model.weights) and are decoded inside
the kernels (kernels.mxfp4). The grouped matmuls decode each BN x BK weight tile once in
registers to bf16 (exact: FP4 times a power of two) and use it for all BM rows of the tile; their float32 inputs arrive already split into bf16
hi + lo arrays (`rmsnorm` or `split_bf16`, and mlp1's epilogue for mlp2), so the K loop only loads,
decodes and multiplies: two tensor-core products per step (see kernels.common.dot).
"""

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from tritonllm.kernels.common import (
    cdiv, check, dependent_launch_args, dot, dot_f32, next_pow2, on_gpu, split_bf16, store_split, wait_for_inputs,
)
from tritonllm.kernels.linear import linear
from tritonllm.kernels.moe_gemv import (
    GEMV_MAX_PAIRS, SWIGLU_ALPHA, RouterParts, moe_arrivals, moe_gemv_combine, moe_gemv_swiglu, store_gemv_input,
    swiglu, topk_softmax_rows,
)
from tritonllm.kernels.mxfp4 import block_scale, e2m1_halves, e2m1_to_bf16
from tritonllm.kernels.rmsnorm import Norm, rmsnorm, rstd
from tritonllm.runtime.target import CPU, arch_of, small_shared_memory
from tritonllm.runtime.kernel import kernel

@kernel(dynamic=("T",))
def topk_softmax_kernel(
    logits_ptr, ids_ptr, gates_ptr, T, E, K: tl.constexpr, BT: tl.constexpr, BE: tl.constexpr, BK: tl.constexpr,
):
    t = tl.program_id(0) * BT + tl.arange(0, BT)
    t_ok = t < T
    e = tl.arange(0, BE)
    v = tl.load(logits_ptr + t[:, None] * E + e[None, :], mask=t_ok[:, None] & (e < E)[None, :], other=0.0)
    top_i, w = topk_softmax_rows(v, e, E, K, BK)
    kk = tl.arange(0, BK)
    out = t[:, None] * K + kk[None, :]
    mask = t_ok[:, None] & (kk < K)[None, :]
    tl.store(ids_ptr + out, top_i, mask=mask)
    tl.store(gates_ptr + out, w, mask=mask)


@kernel(dynamic=("R",))
def moe_histogram_kernel(ids_ptr, hist_ptr, R, BE: tl.constexpr, BR: tl.constexpr):
    """Pairs per expert in each chunk of BR (token, expert) pairs: hist [chunks, BE]."""
    r = tl.program_id(0) * BR + tl.arange(0, BR)
    ids = tl.load(ids_ptr + r, mask=r < R, other=-1)
    e = tl.arange(0, BE)
    tl.store(hist_ptr + tl.program_id(0) * BE + e, tl.sum((ids[:, None] == e[None, :]).to(tl.int32), axis=0))


@kernel(dynamic=("R", "n_rows", "n_big", "n_tail"))
def moe_align_kernel(
    ids_ptr, hist_ptr, sorted_ptr, big_ptr, tail_ptr, R, n_rows, n_big, n_tail, E,
    BE: tl.constexpr, BR: tl.constexpr, BIG: tl.constexpr, TAIL: tl.constexpr, MAX_TAIL: tl.constexpr,
):
    """Program i places chunk i of the pairs (the chunks of `moe_histogram_kernel`), fills the
    padding among sorted rows [i*BR, (i+1)*BR) and describes big tiles and tail tiles
    [i*BR, (i+1)*BR) as (expert, first row), expert -1 for an unused tile. An expert's group
    is its pairs in order, in tiles of BIG rows, then up to MAX_TAIL rows left over in tiles
    of TAIL rows (more left over than that take one more big tile)."""
    pid = tl.program_id(0)
    e = tl.arange(0, BE)
    r_in = tl.arange(0, BR)
    counts = tl.zeros([BE], dtype=tl.int32)
    before = tl.zeros([BE], dtype=tl.int32)  # pairs of each expert in the chunks before this one
    for c0 in range(0, tl.cdiv(R, BR), BR):
        c = c0 + r_in
        hist = tl.load(hist_ptr + c[:, None] * BE + e[None, :], mask=(c < tl.cdiv(R, BR))[:, None], other=0)
        counts += tl.sum(hist, axis=0)
        before += tl.sum(tl.where((c < pid)[:, None], hist, 0), axis=0)
    left = counts % BIG
    bigs = counts // BIG + (left > MAX_TAIL).to(tl.int32)  # [BE] tiles of each expert
    tails = tl.where(left > MAX_TAIL, 0, (left + TAIL - 1) // TAIL)
    padded = bigs * BIG + tails * TAIL
    starts = tl.cumsum(padded, axis=0) - padded  # [BE] first sorted row of each expert's group
    j = pid * BR + r_in
    _store_tiles(big_ptr, j, n_big, bigs, starts, BIG, e, E)
    _store_tiles(tail_ptr, j, n_tail, tails, starts + bigs * BIG, TAIL, e, E)

    s = pid * BR + r_in  # sorted rows: padding where past its group's pairs
    inside = (s[:, None] >= starts[None, :]) & (s[:, None] < (starts + padded)[None, :]) & (e[None, :] < E)
    used = tl.sum(tl.where(inside, (s[:, None] - starts[None, :]) < counts[None, :], 0).to(tl.int32), axis=1)
    tl.store(sorted_ptr + s, tl.full([BR], -1, tl.int32), mask=(s < n_rows) & (used == 0))

    r = pid * BR + r_in  # pairs
    ids = tl.load(ids_ptr + r, mask=r < R, other=-1)
    onehot = (ids[:, None] == e[None, :]).to(tl.int32)  # [BR, BE]
    rank = tl.sum((tl.cumsum(onehot, axis=0) - onehot) * onehot, axis=1)  # earlier in this chunk
    base = tl.sum((starts + before)[None, :] * onehot, axis=1)
    tl.store(sorted_ptr + base + rank, r, mask=r < R)


@triton.jit
def _store_tiles(tiles_ptr, j, n, per_expert, first_row, BM: tl.constexpr, e, E):
    """Tiles j [BR] of a table of n: tile j is expert e's (j - (its first tile))-th, when
    experts take per_expert [BE] tiles each in order, their rows from first_row [BE] on."""
    ends = tl.cumsum(per_expert, axis=0)
    starts = ends - per_expert
    inside = (j[:, None] >= starts[None, :]) & (j[:, None] < ends[None, :]) & (e[None, :] < E)
    expert = tl.max(tl.where(inside, e[None, :], -1), axis=1)
    row = tl.sum(tl.where(inside, first_row[None, :] + (j[:, None] - starts[None, :]) * BM, 0), axis=1)
    tl.store(tiles_ptr + 2 * j, expert, mask=j < n)
    tl.store(tiles_ptr + 2 * j + 1, row, mask=j < n)


@triton.jit
def _mxfp4_tile_dot(acc, a_hi_ptr, a_lo_ptr, a_rows, a_ok, w_rows, s_rows, w_ok, k0, K, BK: tl.constexpr, F32: tl.constexpr):
    """acc [BN, BM] += W[w_rows, k0:k0+BK] @ A[a_rows, k0:k0+BK].T for one K step: the product
    transposed, so that the weight tile decoded in registers is the tensor cores' register
    operand (on Hopper, wgmma's A) and never goes through shared memory; the gathered rows of A
    stream in as the shared-memory operand. Measured on the H100 at 2,048 tokens: 2.68 -> 2.15
    ms per layer (docs/performance.md, note 20), 1.9 with `e2m1_to_bf16` (note 21).

    A is float32 given as two bf16 arrays (hi + lo, see common.dot) [*, K]; W is packed MXFP4,
    w_rows/s_rows [BN] point at each weight row's bytes and scales. The FP4 values and their
    scales are combined in registers into a bf16 tile (exact: FP4 times a power of two; a scale
    code of 0, 2^-127, reads as 0 there: its block's values are below 1e-37)."""
    k = k0 + tl.arange(0, BK)
    a_offs = a_rows[:, None] * K + k[None, :]
    a_mask = a_ok[:, None] & (k < K)[None, :]
    a_hi = tl.load(a_hi_ptr + a_offs, mask=a_mask, other=0.0)
    a_lo = tl.load(a_lo_ptr + a_offs, mask=a_mask, other=0.0)
    kb = k0 // 2 + tl.arange(0, BK // 2)
    packed = tl.load(w_rows[:, None] + kb[None, :], mask=w_ok[:, None] & (kb < K // 2)[None, :], other=0)
    ks = k0 // 32 + tl.arange(0, BK // 32)
    code = tl.load(s_rows[:, None] + ks[None, :], mask=w_ok[:, None] & (ks < K // 32)[None, :], other=0)
    if F32:
        lo, hi = e2m1_halves(packed)  # [BN, BK/2] each
        w = tl.reshape(tl.join(lo, hi), [w_rows.shape[0], BK // 32, 32]) * block_scale(code)[:, :, None]
        w = tl.reshape(w, [w_rows.shape[0], BK])
    else:
        scale = (code.to(tl.int16) << 7).to(tl.bfloat16, bitcast=True)  # 2^(code - 127), bf16 bits
        scale = tl.reshape(tl.broadcast_to(scale[:, :, None], [w_rows.shape[0], BK // 32, 16]), packed.shape)
        lo, hi = e2m1_to_bf16(packed, scale)
        w = tl.reshape(tl.join(lo, hi), [w_rows.shape[0], BK])
    acc = dot(w, tl.trans(a_lo), acc, F32)
    return dot(w, tl.trans(a_hi), acc, F32)


@kernel
def moe_mlp1_kernel(
    x_hi_ptr, x_lo_ptr, sorted_ptr, tiles_ptr, blocks_ptr, scales_ptr, bias_ptr, act_hi_ptr, act_lo_ptr,
    H, I, TOPK, limit,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, F32: tl.constexpr,
):
    """One tile of BM pairs of one expert x BN weight rows (BN/2 gate + BN/2 linear columns,
    interleaved as stored): x @ W1[e].T + b1, then the clamped SwiGLU into BN/2 activations."""
    tile, pid_n = tl.program_id(0), tl.program_id(1)
    e = tl.load(tiles_ptr + 2 * tile).to(tl.int64)
    if e >= 0:
        pair = tl.load(sorted_ptr + tl.load(tiles_ptr + 2 * tile + 1) + tl.arange(0, BM))  # [BM], -1 = padding
        row_ok = pair >= 0
        token = tl.where(row_ok, pair // TOPK, 0).to(tl.int64)
        n = pid_n * BN + tl.arange(0, BN)  # weight rows: even = gate, odd = linear
        n_ok = n < 2 * I
        w_rows = blocks_ptr + (e * 2 * I + n) * (H // 2)
        s_rows = scales_ptr + (e * 2 * I + n) * (H // 32)
        acc = tl.zeros([BN, BM], dtype=tl.float32)
        for k0 in range(0, H, BK):
            acc = _mxfp4_tile_dot(acc, x_hi_ptr, x_lo_ptr, token, row_ok, w_rows, s_rows, n_ok, k0, H, BK, F32)
        acc = tl.trans(acc)  # [BM, BN]
        acc += tl.load(bias_ptr + e * 2 * I + n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        act = swiglu(acc, limit, BN)
        j = pid_n * (BN // 2) + tl.arange(0, BN // 2)
        offs = tl.where(row_ok, pair, 0).to(tl.int64)[:, None] * I + j[None, :]
        store_split(act_hi_ptr, act_lo_ptr, offs, act, row_ok[:, None] & (j < I)[None, :])


@kernel
def moe_mlp2_kernel(
    act_hi_ptr, act_lo_ptr, sorted_ptr, tiles_ptr, gates_ptr, blocks_ptr, scales_ptr, bias_ptr, y_ptr,
    H, I,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, F32: tl.constexpr,
):
    """One tile of BM pairs of one expert x BN hidden columns: (act @ W2[e].T + b2) * gate."""
    tile, pid_n = tl.program_id(0), tl.program_id(1)
    e = tl.load(tiles_ptr + 2 * tile).to(tl.int64)
    if e >= 0:
        pair = tl.load(sorted_ptr + tl.load(tiles_ptr + 2 * tile + 1) + tl.arange(0, BM))
        row_ok = pair >= 0
        prow = tl.where(row_ok, pair, 0).to(tl.int64)
        n = pid_n * BN + tl.arange(0, BN)  # hidden columns
        n_ok = n < H
        w_rows = blocks_ptr + (e * H + n) * (I // 2)
        s_rows = scales_ptr + (e * H + n) * (I // 32)
        acc = tl.zeros([BN, BM], dtype=tl.float32)
        for k0 in range(0, I, BK):
            acc = _mxfp4_tile_dot(acc, act_hi_ptr, act_lo_ptr, prow, row_ok, w_rows, s_rows, n_ok, k0, I, BK, F32)
        acc = tl.trans(acc)  # [BM, BN]
        acc += tl.load(bias_ptr + e * H + n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        acc *= tl.load(gates_ptr + prow, mask=row_ok, other=0.0)[:, None]
        tl.store(y_ptr + prow[:, None] * H + n[None, :], acc, mask=row_ok[:, None] & n_ok[None, :])


@kernel
def moe_route_kernel(
    x_ptr, norm_ptr, w_ptr, part_ptr, h_ptr, E, K, eps,
    BE: tl.constexpr, NORM: tl.constexpr, BLOCK_K: tl.constexpr, CHUNK: tl.constexpr, PDL: tl.constexpr,
):
    """Decode's router, grid (tokens, chunks of CHUNK inputs): program (t, c) writes chunk c of the
    expert input h = RMSNorm(x) (x itself without NORM; as the expert GEMV reads it,
    `store_gemv_input`) and its part of the router logits, W[:, chunk] @ h[chunk], into part[t, c]
    [BE]. The GEMV programs add the parts and pick the experts (`RouterParts`): no program here
    waits for the others (a last one to arrive doing the top-k cost ~2 us per layer of stores,
    fence, atomic and loads, docs/performance.md note 43)."""
    wait_for_inputs(PDL)
    t, c = tl.program_id(0).to(tl.int64), tl.program_id(1)
    cols = c * CHUNK + tl.arange(0, CHUNK)
    c_ok = cols < K
    h = tl.load(x_ptr + t * K + cols, mask=c_ok, other=0.0)
    if NORM:  # every program sums the whole row's squares (11 KB from L2): no second launch for the norm
        row = tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + t * K + row, mask=row < K, other=0.0)
        h = h * rstd(tl.sum(x * x, axis=0), K, eps) * tl.load(norm_ptr + cols, mask=c_ok, other=0.0).to(tl.float32)
    store_gemv_input(h_ptr + t * 3 * K, cols, h, c_ok, K)
    e = tl.arange(0, BE)
    w = tl.load(w_ptr + e[:, None] * K + cols[None, :], mask=(e < E)[:, None] & c_ok[None, :], other=0.0)
    tl.store(part_ptr + (t * tl.num_programs(1) + c) * BE + e, tl.sum(w.to(tl.float32) * h[None, :], axis=1))


@kernel
def moe_combine_kernel(y_ptr, x_ptr, H, TOPK: tl.constexpr, BLOCK: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < H
    total = tl.load(x_ptr + t * H + cols, mask=mask, other=0.0)
    for j in tl.static_range(TOPK):
        total += tl.load(y_ptr + (t * TOPK + j) * H + cols, mask=mask, other=0.0)
    tl.store(x_ptr + t * H + cols, total, mask=mask)


def topk_softmax(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [T, E] float32 -> (expert ids [T, k] int32, weights [T, k] float32)."""
    check(logits.dim() == 2 and logits.is_contiguous() and 0 < k <= logits.shape[1], "topk_softmax: bad shapes")
    T, E = logits.shape
    ids = torch.empty(T, k, dtype=torch.int32, device=logits.device)
    gates = torch.empty(T, k, dtype=torch.float32, device=logits.device)
    BT = 16 if on_gpu(logits) else 256
    topk_softmax_kernel[(cdiv(T, BT),)](
        logits, ids, gates, T, E, K=k, BT=BT, BE=next_pow2(E), BK=next_pow2(k), num_warps=4,
    )
    return ids, gates


@dataclass(frozen=True)
class TilePlan:
    """How the grouped expert matmuls cover an expert's pairs: tiles of `big` rows, then, if at
    most `max_tail` rows are left over, tiles of `tail` rows for them (else one more big tile).
    Big tiles decode each weight tile once for more rows; tails pad less (note 26)."""

    big: int
    tail: int
    max_tail: int = 0


@dataclass
class ExpertGroups:
    """Pairs sorted by expert, each expert's group padded to whole tiles: sorted_pairs [rows]
    (pair index, -1 = padding) and, per tile size BM, a table [n, 2] int32 of (expert, first
    row) per tile, expert -1 for an unused one."""

    sorted_pairs: torch.Tensor
    tiles: list[tuple[int, torch.Tensor]]


def moe_align(ids: torch.Tensor, num_experts: int, plan: TilePlan) -> ExpertGroups:
    """ids [T, k] int32 -> the pairs grouped by expert (stable) and tiled by `plan`, on the
    device, no host sync. Two launches over chunks of pairs (a histogram, then the placement),
    so it scales with the pairs: one program doing it all took 92 us per 20b layer at 2,048
    tokens, 398 for 120b."""
    R, E, big = ids.numel(), num_experts, plan.big
    check(plan.max_tail < big and (plan.max_tail == 0 or plan.tail <= big), f"moe_align: bad tile plan {plan}")
    n_big = cdiv(R, big) + min(E, R)  # each expert pads fewer than `big` rows
    n_tail = min(E, R) * cdiv(plan.max_tail, plan.tail)
    BE, BR = next_pow2(E), 128
    hist = torch.empty(cdiv(R, BR), BE, dtype=torch.int32, device=ids.device)
    sorted_pairs = torch.empty(n_big * big, dtype=torch.int32, device=ids.device)
    big_tiles = torch.empty(n_big, 2, dtype=torch.int32, device=ids.device)
    tail_tiles = torch.empty(max(n_tail, 1), 2, dtype=torch.int32, device=ids.device)
    moe_histogram_kernel[(hist.shape[0],)](ids, hist, R, BE=BE, BR=BR, num_warps=4)
    moe_align_kernel[(cdiv(sorted_pairs.numel(), BR),)](
        ids, hist, sorted_pairs, big_tiles, tail_tiles, R, sorted_pairs.numel(), n_big, n_tail, E,
        BE=BE, BR=BR, BIG=big, TAIL=plan.tail, MAX_TAIL=plan.max_tail, num_warps=4,
    )
    tiles = [(big, big_tiles)] + ([(plan.tail, tail_tiles)] if n_tail else [])
    return ExpertGroups(sorted_pairs, tiles)


def mm_config(N: int, K: int, arch: int) -> dict:
    """Tile of the grouped expert matmuls: BN weight rows x BK values per step, for every BM.
    The interpreter pays per program, so it gets whole matrices. On the H100 (sweep of BN 64-256,
    BK 32-128, 4-8 warps, 2-4 stages at 16-128 rows: note 20) 128 x 64 with 4 warps and 3 stages
    won at every BM; ~100 KB-smem parts keep two stages."""
    if arch == CPU:
        return {"BN": min(256, next_pow2(N)), "BK": min(256, max(32, next_pow2(K))), "num_warps": 4}
    return {"BN": 128, "BK": 64, "num_warps": 4, "num_stages": 2 if small_shared_memory(arch) else 3}


def tile_plan(pairs: int, num_experts: int) -> TilePlan:
    """Tiles of the grouped expert matmuls, from the rows an expert sees on average: bigger
    tiles reuse each decoded weight tile over more rows, smaller ones pad less. From the H100
    sweeps at 16-4,096 tokens (notes 20, 26): 16 / 32 / 128 rows below 12 / 40 / more pairs per
    expert; from 128 pairs per expert up, up to 64 rows left over go to 32-row tails (-5% at
    2,048 tokens; with fewer pairs, two tails cost more than the big tile they replace)."""
    per_expert = pairs / num_experts
    if per_expert < 12:
        return TilePlan(16, 16)
    if per_expert < 40:
        return TilePlan(32, 32)
    return TilePlan(128, 32, 64) if per_expert >= 128 else TilePlan(128, 128)


def moe_experts(x, router, k: int, w1, w2, limit: float, residual: torch.Tensor, norm: Norm | None = None,
                arrivals: torch.Tensor | None = None):
    """The router and the expert MLPs of every token's top-k experts, added into the residual
    stream: x [T, H] float32 (the MLP input, or the raw residual to apply `norm` to), router =
    (weight [E, H], bias [E]), w1/w2 = (blocks, scales, bias); residual [T, H] += each token's
    gate-weighted expert outputs, in place. Returns residual. `arrivals` (`moe_arrivals`) serves
    the matrix-vector path of a few tokens; pass it where the call is repeated (decode)."""
    T, H = x.shape
    E = w1[0].shape[0]
    check(router[0].shape == (E, H) and router[1].shape == (E,),
          f"moe_experts: the router must be [{E}, {H}] and [{E}]")
    check(0 < k <= E, f"moe_experts: {k} experts per token of {E}")
    check(residual.shape == x.shape and residual.is_contiguous(), "moe_experts: residual must be [T, H] like x")
    if T * k <= GEMV_MAX_PAIRS:
        if arrivals is None:
            arrivals = moe_arrivals(H, x.device)
        route, h = moe_route(x, router, k, norm)
        return moe_gemv_combine(moe_gemv_swiglu(h, route, w1, limit), route, w2, residual, arrivals)
    parts = rmsnorm(x, norm) if norm else split_bf16(x)  # the router's and the experts' input, normed once
    ids, gates = topk_softmax(linear(parts, *router), k)
    groups = moe_align(ids, E, tile_plan(T * k, E))
    act = moe_mlp1(parts, groups, *w1, k, limit)
    return moe_combine(moe_mlp2(act, groups, gates, *w2), residual, k)


def moe_route(x, router, k: int, norm: Norm | None) -> tuple[RouterParts, torch.Tensor]:
    """Decode's router in one launch: x [T, H], router (weight [E, H] bf16, bias [E]) -> (the
    routing of k experts per token, as the expert GEMVs finish it: `RouterParts`; the expert input
    h = norm(x), or x itself without a norm, in the GEMV's layout: `gemv_input`)."""
    T, H = x.shape
    weight, bias = router
    E = weight.shape[0]
    check(x.is_contiguous() and weight.is_contiguous(), "moe_route: x and the router weight must be contiguous")
    check(T <= GEMV_MAX_PAIRS, f"moe_route: at most {GEMV_MAX_PAIRS} tokens")
    h = torch.empty(T, 3 * H, dtype=torch.bfloat16, device=x.device)
    BLOCK_K, BE = next_pow2(H), next_pow2(E)
    chunk = min(BLOCK_K, 256 if on_gpu(x) else 32)  # the interpreter: small chunks, so tests cover several
    chunks = cdiv(H, chunk)
    parts = torch.empty(T, chunks, BE, dtype=torch.float32, device=x.device)
    moe_route_kernel[(T, chunks)](
        x, x if norm is None else norm.scale, weight, parts, h, E, H, 0.0 if norm is None else norm.eps,
        BE=BE, NORM=norm is not None, BLOCK_K=BLOCK_K, CHUNK=chunk, num_warps=4, **dependent_launch_args(arch_of(x)),
    )
    return RouterParts(parts, bias, k), h


def moe_mlp1(x, groups: ExpertGroups, blocks, scales, bias, topk: int, limit: float,
             tile: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """x = split_bf16 parts of [T, H] -> SwiGLU activations [T*topk, I], one row per (token,
    expert) pair, again as bf16 hi + lo parts (the input of moe_mlp2). One launch per tile size."""
    x_hi, x_lo = x
    E, two_i, kblocks, _ = blocks.shape
    T, H = x_hi.shape
    check(kblocks * 32 == H and scales.shape == blocks.shape[:3] and bias.shape == (E, two_i), "moe_mlp1: weight shapes")
    I = two_i // 2
    act_hi = torch.empty(T * topk, I, dtype=torch.bfloat16, device=x_hi.device)
    act_lo = torch.empty_like(act_hi)
    tile = tile or mm_config(two_i, H, arch_of(x_hi))
    for bm, tiles in groups.tiles:
        moe_mlp1_kernel[(tiles.shape[0], cdiv(two_i, tile["BN"]))](
            x_hi, x_lo, groups.sorted_pairs, tiles, blocks, scales, bias, act_hi, act_lo, H, I, topk, limit,
            BM=bm, F32=dot_f32(x_hi), **tile,
        )
    return act_hi, act_lo


def moe_mlp2(act, groups: ExpertGroups, gates, blocks, scales, bias, tile: dict | None = None) -> torch.Tensor:
    """act = (hi, lo) parts of [R, I] -> gate-weighted expert outputs [R, H] float32. One launch
    per tile size."""
    act_hi, act_lo = act
    E, H, kblocks, _ = blocks.shape
    R, I = act_hi.shape
    check(kblocks * 32 == I and gates.numel() == R and bias.shape == (E, H), "moe_mlp2: weight shapes")
    y = torch.empty(R, H, dtype=torch.float32, device=act_hi.device)
    tile = tile or mm_config(H, I, arch_of(act_hi))
    for bm, tiles in groups.tiles:
        moe_mlp2_kernel[(tiles.shape[0], cdiv(H, tile["BN"]))](
            act_hi, act_lo, groups.sorted_pairs, tiles, gates, blocks, scales, bias, y, H, I,
            BM=bm, F32=dot_f32(act_hi), **tile,
        )
    return y


def moe_combine(y: torch.Tensor, x: torch.Tensor, topk: int) -> torch.Tensor:
    """x [T, H] float32 += sum over each token's `topk` rows of y [T*topk, H]; in place."""
    T, H = x.shape
    check(y.shape == (T * topk, H) and x.is_contiguous(), "moe_combine: bad shapes")
    BLOCK = 1024
    moe_combine_kernel[(T, cdiv(H, BLOCK))](y, x, H, TOPK=topk, BLOCK=BLOCK)
    return x


def swiglu_reference(h: torch.Tensor, limit: float) -> torch.Tensor:
    """Clamped SwiGLU over interleaved columns (even = gate, odd = linear + 1), float32."""
    gate, lin = h[..., 0::2].float().clamp(max=limit), h[..., 1::2].float().clamp(-limit, limit)
    return gate * torch.sigmoid(SWIGLU_ALPHA.value * gate) * (lin + 1)
