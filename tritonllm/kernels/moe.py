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
Decode (a few pairs) replaces the router's matmul and 1-5 with `moe_route` (the router,
top-k and the RMSNorm of the expert input in one small launch, which writes the input as the
GEMV reads it: `store_gemv_input`) and `moe_gemv_kernel`, matrix-vector products on mma.m16n8k16
with the FP4 words decoded straight into A fragments (one program per (row block, pair) for
mlp1 and for mlp2; H100: 19.3 + 12.2 us per 20b layer, against 16.5 + 9.8 for a kernel that
only reads the same weights, and 20.4 + 13.1 for the float32-FMA GEMV it replaced);
the last of a token's mlp2 programs on a row block adds the k gate-weighted parts into the
residual (the combine, fused). `moe_experts` picks the path.
(Routing and norm inside every mlp1 program instead was measured slower on the H100, 24.9
against 20.2 us per layer: the kernel went from 80 to 128 registers.)

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

from tritonllm.kernels import tuning
from tritonllm.kernels.common import (
    cdiv, check, dependent_launch_args, dot, dot_f32, last_to_arrive, next_pow2, on_gpu, split_bf16, store_split,
    wait_for_inputs,
)
from tritonllm.kernels.linear import linear
from tritonllm.kernels.mxfp4 import (
    GEMV_INPUT_SCALE, GEMV_WEIGHT_SCALE, bf16_block_factor, block_scale, e2m1_halves, e2m1_mma, e2m1_to_bf16,
    e2m1_word_values,
)
from tritonllm.kernels.rmsnorm import Norm, rmsnorm, rstd
from tritonllm.runtime.target import CPU, arch_of, small_shared_memory
from tritonllm.runtime.kernel import kernel

GEMV_MAX_PAIRS = 8  # up to this many (token, expert) pairs, experts run as matrix-vector products
SWIGLU_ALPHA = tl.constexpr(1.702)


@triton.jit
def _swiglu(h, limit, N: tl.constexpr):
    """gpt-oss's clamped SwiGLU over [.., N] interleaved columns (even = gate, odd = linear)
    -> [.., N/2]: gate * sigmoid(1.702 gate) * (linear + 1), gate clamped above at limit,
    linear to +-limit."""
    gate, lin = tl.split(tl.reshape(h, h.shape[:-1] + [N // 2, 2]))
    gate = tl.minimum(gate, limit)
    lin = tl.minimum(tl.maximum(lin, -limit), limit)
    return gate * tl.sigmoid(SWIGLU_ALPHA * gate) * (lin + 1.0)


@triton.jit
def _topk_softmax(v, e, E, K: tl.constexpr, BK: tl.constexpr):
    """Router logits v [BT, BE] of experts e [BE] (E real) -> the K largest as expert ids
    [BT, BK] (descending, lowest id first among equals) and their softmax weights [BT, BK]
    (columns K.. are padding: id 0, weight 0)."""
    v = tl.where((e < E)[None, :], v, float("-inf"))
    kk = tl.arange(0, BK)
    top_v = tl.full([v.shape[0], BK], float("-inf"), tl.float32)
    top_i = tl.zeros([v.shape[0], BK], dtype=tl.int32)
    for j in tl.static_range(K):
        best = tl.max(v, axis=1)
        idx = tl.min(tl.where(v == best[:, None], e[None, :], v.shape[1]), axis=1)
        top_v = tl.where(kk[None, :] == j, best[:, None], top_v)
        top_i = tl.where(kk[None, :] == j, idx[:, None], top_i)
        v = tl.where(e[None, :] == idx[:, None], float("-inf"), v)
    w = tl.where(kk[None, :] < K, tl.exp(top_v - tl.max(top_v, axis=1)[:, None]), 0.0)
    return top_i, w / tl.sum(w, axis=1)[:, None]


@kernel(dynamic=("T",))
def topk_softmax_kernel(
    logits_ptr, ids_ptr, gates_ptr, T, E, K: tl.constexpr, BT: tl.constexpr, BE: tl.constexpr, BK: tl.constexpr,
):
    t = tl.program_id(0) * BT + tl.arange(0, BT)
    t_ok = t < T
    e = tl.arange(0, BE)
    v = tl.load(logits_ptr + t[:, None] * E + e[None, :], mask=t_ok[:, None] & (e < E)[None, :], other=0.0)
    top_i, w = _topk_softmax(v, e, E, K, BK)
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
        act = _swiglu(acc, limit, BN)
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


@triton.jit
def store_gemv_input(ptr, k, x, mask, K):
    """Store float32 values x of columns k (mask) of one row as the expert GEMV reads its input:
    x * 2^GEMV_SHIFT as three bf16 planes, hi + lo + lo2 (float32's 24 bits; see `e2m1_mma` for
    the shift), each plane K values in the order of the weight words' nibble pairs: per 8 values
    (one word), value j at 2j and value j + 4 at 2j + 1. ptr: the row's start, bf16 [3K]."""
    xs = x * GEMV_INPUT_SCALE
    hi = xs.to(tl.bfloat16)
    rest = xs - hi.to(tl.float32)
    lo = rest.to(tl.bfloat16)
    lo2 = (rest - lo.to(tl.float32)).to(tl.bfloat16)
    at = k - k % 8 + (k % 4) * 2 + (k % 8) // 4
    tl.store(ptr + at, hi, mask=mask)
    tl.store(ptr + K + at, lo, mask=mask)
    tl.store(ptr + 2 * K + at, lo2, mask=mask)


@triton.jit
def _opaque(v):
    """v unchanged, hidden from Triton's analysis: the lane-indexed tensors below stay one
    element per thread, in lane order, instead of being regrouped."""
    return tl.inline_asm_elementwise("mov.b32 $0, $1;", "=r,r", [v], dtype=tl.int32, is_pure=True, pack=1)


@triton.jit
def _columns(v):
    """[L, 4] -> its 4 columns, [L] each (held by the thread that holds the row)."""
    a, b = tl.split(tl.reshape(v, [v.shape[0], 2, 2]))  # columns (0, 2), (1, 3)
    v0, v2 = tl.split(a)
    v1, v3 = tl.split(b)
    return v0, v1, v2, v3


@triton.jit
def _bf16_halves(w):
    """int32 words of two bf16 -> (low, high) as float32."""
    return (w << 16).to(tl.float32, bitcast=True), (w & -65536).to(tl.float32, bitcast=True)


@triton.jit
def _input_values_f32(x0, x1, x2, x3, WARPS: tl.constexpr):
    """Interpreter: a step's B words (x_i [L, 4]: weight word i's pairs j) -> the input values
    [L, 4, 8] (word, value) each lane's mma sums with, B's columns (lanes 4n..4n + 3: column n)
    added across lanes at the lane's position l % 4, as the mma adds them."""
    L: tl.constexpr = 32 * WARPS
    x = tl.join(tl.join(x0, x1), tl.join(x2, x3))  # [L, j, word % 2, word // 2]
    x = tl.reshape(tl.permute(x, (0, 3, 2, 1)), [L, 16])  # [L, word * 4 + j]
    lo, hi = _bf16_halves(x)  # values j, j + 4
    v = tl.reshape(tl.join(lo, hi), [WARPS, 8, 4, 32])
    v = tl.broadcast_to(tl.sum(v, axis=1)[:, None, :, :], [WARPS, 8, 4, 32])
    return tl.reshape(tl.permute(tl.reshape(v, [L, 4, 4, 2]), (0, 1, 3, 2)), [L, 4, 8])


@triton.jit
def _gemv_weight_loads(w_r, s_r, g, quad, KW, KB, r_ok, r8_ok):
    """Group g's weights of one lane (block 4g + lane % 4): the words [L, 4] and scale codes of
    rows r (w_r, s_r) and r + 8."""
    j4 = tl.arange(0, 4)[None, :]
    ok = 4 * g + quad < KB
    w = tl.load((w_r + 16 * g)[:, None] + j4, mask=(ok & r_ok)[:, None], other=0)
    w8 = tl.load((w_r + 8 * KW + 16 * g)[:, None] + j4, mask=(ok & r8_ok)[:, None], other=0)
    code = tl.load(s_r + 4 * g, mask=ok & r_ok, other=0)
    code8 = tl.load(s_r + 8 * KB + 4 * g, mask=ok & r8_ok, other=0)
    return w, w8, code, code8


@triton.jit
def _gemv_input_loads(x_l, g, quad, KB, x_ok):
    """Group g's input of one lane: its 16 B words (x_l), as [L, 4] for each weight word."""
    x = (x_l + 64 * g)[:, None] + tl.arange(0, 4)[None, :]
    x_ok = ((4 * g + quad < KB) & x_ok)[:, None]
    return (tl.load(x, mask=x_ok, other=0), tl.load(x + 4, mask=x_ok, other=0), tl.load(x + 8, mask=x_ok, other=0),
            tl.load(x + 12, mask=x_ok, other=0))


@triton.jit
def _gemv_step(w, w8, code, code8, x0, x1, x2, x3, c0, c1, c2, c3, WARPS: tl.constexpr, MMA: tl.constexpr):
    """The accumulators plus one group's products (see `moe_gemv_kernel`)."""
    if MMA:
        w0, w1, w2, w3 = _columns(w)
        v0, v1, v2, v3 = _columns(w8)
        f, f8 = bf16_block_factor(code), bf16_block_factor(code8)
        b0, b1, b2, b3 = _columns(x0)
        c0, c1, c2, c3 = e2m1_mma(w0, v0, f, f8, b0, b1, b2, b3, c0, c1, c2, c3)
        b0, b1, b2, b3 = _columns(x1)
        c0, c1, c2, c3 = e2m1_mma(w1, v1, f, f8, b0, b1, b2, b3, c0, c1, c2, c3)
        b0, b1, b2, b3 = _columns(x2)
        c0, c1, c2, c3 = e2m1_mma(w2, v2, f, f8, b0, b1, b2, b3, c0, c1, c2, c3)
        b0, b1, b2, b3 = _columns(x3)
        c0, c1, c2, c3 = e2m1_mma(w3, v3, f, f8, b0, b1, b2, b3, c0, c1, c2, c3)
    else:
        x = _input_values_f32(x0, x1, x2, x3, WARPS)  # times 2^GEMV_SHIFT, given back with the scale
        scale, scale8 = tl.exp2(code.to(tl.float32) - 127), tl.exp2(code8.to(tl.float32) - 127)
        c0 += tl.sum(tl.sum(e2m1_word_values(w) * x, axis=2), axis=1) * (scale * GEMV_WEIGHT_SCALE)
        c2 += tl.sum(tl.sum(e2m1_word_values(w8) * x, axis=2), axis=1) * (scale8 * GEMV_WEIGHT_SCALE)
    return c0, c1, c2, c3


@kernel
def moe_route_kernel(
    x_ptr, norm_ptr, w_ptr, b_ptr, part_ptr, count_ptr, ids_ptr, gates_ptr, h_ptr, E, K, eps,
    TOPK: tl.constexpr, BE: tl.constexpr, BTOPK: tl.constexpr, NORM: tl.constexpr, BLOCK_K: tl.constexpr,
    CHUNK: tl.constexpr, BC: tl.constexpr, PDL: tl.constexpr,
):
    """Decode's router and routing, grid (tokens, chunks of CHUNK inputs): program (t, c) writes
    chunk c of the expert input h = RMSNorm(x) (x itself without NORM; as the expert GEMV reads
    it, `store_gemv_input`) and its part of the
    router logits, W[:, chunk] @ h[chunk], into part[t, c]; then it counts itself in count[t],
    and the last of the token's programs to arrive adds the parts (all loaded at once, BC >=
    chunks, summed in a fixed order, so the sum does not depend on who came last) and the
    bias, picks the top TOPK experts and their softmax weights, and sets the count back to 0
    for the next call."""
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
    parts = part_ptr + t * tl.num_programs(1) * BE + e
    tl.store(parts + c * BE, tl.sum(w.to(tl.float32) * h[None, :], axis=1))
    if last_to_arrive(count_ptr + t, tl.num_programs(1)):
        j = tl.arange(0, BC)[:, None]
        part = tl.load(parts + j * BE, mask=j < tl.num_programs(1), other=0.0, cache_modifier=".cg")  # [BC, BE]
        logits = tl.load(b_ptr + e, mask=e < E, other=0.0).to(tl.float32) + tl.sum(part, axis=0)
        top_i, gate = _topk_softmax(logits[None, :], e, E, TOPK, BTOPK)
        kk = tl.arange(0, BTOPK)[None, :]
        tl.store(ids_ptr + t * TOPK + kk, top_i, mask=kk < TOPK)
        tl.store(gates_ptr + t * TOPK + kk, gate, mask=kk < TOPK)
        tl.store(count_ptr + t, 0)


@kernel
def moe_gemv_kernel(
    x_ptr, ids_ptr, gates_ptr, words_ptr, scales_ptr, bias_ptr, out_ptr, part_ptr, arrivals_ptr,
    N, K, TOPK, limit,
    SWIGLU: tl.constexpr, TILES: tl.constexpr, WARPS_K: tl.constexpr, BTOPK: tl.constexpr, MMA: tl.constexpr,
    PDL: tl.constexpr,
):
    """Expert matrix-vector products over N weight rows of K values on the tensor cores; grid
    (row blocks of 16 TILES rows, pairs).

    SWIGLU (mlp1): out[pair] = SwiGLU(W[e] @ x[pair // TOPK] + b[e]) (rows 2j, 2j+1 -> output j),
    stored as mlp2's input (`store_gemv_input`). Else (mlp2): part[pair] = gate * (W[e] @ x[pair]
    + b[e]); then the program counts itself in `arrivals` (one count per token and row block),
    and the last of the token's TOPK programs to arrive adds their parts (loaded at once, BTOPK
    >= TOPK, summed in a fixed order, so the sum does not depend on who came last) into out[t],
    the residual stream, and sets the count back to 0 for the next call.

    Each warp is one m16 tile (TILES per program) and one of WARPS_K shares of K. Per step a
    lane loads 16 bytes of each of its two rows (l // 4 and that + 8): a whole 32-value scale
    block, block 4g + l % 4 of the warp's group g, so a quad reads 64 contiguous bytes per row.
    The mma sums over k, so any k order both operands share will do: lane l % 4's values are
    its own block's, each decoded with its block's scale folded in (`e2m1_mma`), and the input
    (`store_gemv_input`: hi, lo, lo2 planes, the nibble pairs' order) is B, plane n in column n
    for lanes 4n..4n + 3 and zero in columns 3..7; so a row's dot product is the sum over its
    quad of the accumulator's (c0 + c1) (rows l // 4) and (c2 + c3) (rows l // 4 + 8). The next
    step's loads are issued before this step's products. MMA=False (the interpreter) computes
    the same per-lane sums in float32, B's columns summed across lanes as the mma sums them.

    words_ptr is the packed weight seen as int32: 8 FP4 values per word, value 2b in byte b's
    low nibble and 2b+1 in its high nibble. PDL (see `wait_for_inputs`): mlp1's expert ids come
    from the kernel just before, so it waits first; mlp2's come from moe_route, which completed
    before mlp1 got past its own wait, so mlp2 loads them and its first weights before waiting
    for mlp1's output (H100: decode 521.9 -> 528.6 tok/s; an L2 prefetch of the weights before
    the wait in qkv_rope_decode or linear_gemv lost 1%).
    """
    if SWIGLU:  # mlp1's expert ids come from the kernel just before
        wait_for_inputs(PDL)
    BN: tl.constexpr = 16 * TILES
    LANES: tl.constexpr = 32 * TILES * WARPS_K
    pid_n, pair = tl.program_id(0), tl.program_id(1)
    lane = tl.arange(0, LANES)
    if MMA:
        lane = _opaque(lane)
    quad, n = lane % 4, lane % 32 // 4  # mma's thread-in-group and group: rows n and n + 8, B column n
    warp = lane // 32
    share = warp // TILES  # this warp's share of K: groups share, share + WARPS_K, ...
    row = pid_n * BN + (warp % TILES) * 16 + n  # and row + 8
    KW = tl.multiple_of(K // 8, 4)  # words per row (K is a multiple of 32)
    KB = K // 32  # scale blocks per row
    KH = K // 2  # input words per plane
    e = tl.load(ids_ptr + pair).to(tl.int64)
    w_r = words_ptr + e * N * KW + row.to(tl.int64) * KW + 4 * quad
    s_r = scales_ptr + e * N * KB + row.to(tl.int64) * KB + quad
    x_l = x_ptr + (pair // TOPK if SWIGLU else pair).to(tl.int64) * 3 * KH + n * KH + 16 * quad
    x_ok = n < 3  # lane l holds B's column l // 4: input plane l // 4, none past the third
    c0 = tl.zeros([LANES], dtype=tl.float32)
    c1, c2, c3 = c0, c0, c0
    r_ok, r8_ok = row < N, row + 8 < N
    g = share
    w, w8, code, code8 = _gemv_weight_loads(w_r, s_r, g, quad, KW, KB, r_ok, r8_ok)
    if not SWIGLU:  # mlp2 waits for mlp1's output only now: its first weights stream under mlp1's tail
        wait_for_inputs(PDL)
    x0, x1, x2, x3 = _gemv_input_loads(x_l, g, quad, KB, x_ok)
    for _ in range(0, tl.cdiv(tl.cdiv(KB, 4), WARPS_K)):
        g += WARPS_K  # the next step's loads, issued before this step's products
        nw, nw8, ncode, ncode8 = _gemv_weight_loads(w_r, s_r, g, quad, KW, KB, r_ok, r8_ok)
        nx0, nx1, nx2, nx3 = _gemv_input_loads(x_l, g, quad, KB, x_ok)
        c0, c1, c2, c3 = _gemv_step(w, w8, code, code8, x0, x1, x2, x3, c0, c1, c2, c3, TILES * WARPS_K, MMA)
        w, w8, code, code8, x0, x1, x2, x3 = nw, nw8, ncode, ncode8, nx0, nx1, nx2, nx3
    out = _rows_of_quads(c0 + c1, c2 + c3, TILES, WARPS_K)
    rows = pid_n * BN + tl.arange(0, BN)
    r_ok = rows < N
    out += tl.load(bias_ptr + e * N + rows, mask=r_ok, other=0.0).to(tl.float32)
    if SWIGLU:
        cols = pid_n * (BN // 2) + tl.arange(0, BN // 2)
        store_gemv_input(out_ptr + pair * 3 * (N // 2), cols, _swiglu(out, limit, BN), cols < N // 2, N // 2)
    else:
        tl.store(part_ptr + pair * N + rows, out * tl.load(gates_ptr + pair), mask=r_ok)
        t = pair // TOPK
        count = arrivals_ptr + t * tl.num_programs(0) + pid_n
        if last_to_arrive(count, TOPK):
            j = tl.arange(0, BTOPK)[:, None]
            parts = tl.load(part_ptr + (t * TOPK + j) * N + rows[None, :], mask=(j < TOPK) & r_ok[None, :], other=0.0,
                            cache_modifier=".cg")  # [BTOPK, BN]
            total = tl.load(out_ptr + t * N + rows, mask=r_ok, other=0.0) + tl.sum(parts, axis=0)
            tl.store(out_ptr + t * N + rows, total, mask=r_ok)
            tl.store(count, 0)


@triton.jit
def _rows_of_quads(a, a8, TILES: tl.constexpr, WARPS_K: tl.constexpr):
    """Per-lane sums of rows l // 4 (a) and l // 4 + 8 (a8) -> the program's 16 TILES row sums:
    each row's quad and its warps' shares of K added."""
    a = tl.sum(tl.sum(tl.reshape(a, [WARPS_K, TILES, 8, 4]), axis=3), axis=0)
    a8 = tl.sum(tl.sum(tl.reshape(a8, [WARPS_K, TILES, 8, 4]), axis=3), axis=0)
    return tl.reshape(tl.permute(tl.join(a, a8), (0, 2, 1)), [16 * TILES])


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
        ids, gates, h = moe_route(x, router, k, norm, arrivals)
        return moe_gemv_combine(moe_gemv_swiglu(h, ids, w1, limit), ids, gates, w2, residual, arrivals)
    parts = rmsnorm(x, norm) if norm else split_bf16(x)  # the router's and the experts' input, normed once
    ids, gates = topk_softmax(linear(parts, *router), k)
    groups = moe_align(ids, E, tile_plan(T * k, E))
    act = moe_mlp1(parts, groups, *w1, k, limit)
    return moe_combine(moe_mlp2(act, groups, gates, *w2), residual, k)


def moe_route(x, router, k: int, norm: Norm | None,
              arrivals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decode's router and routing in one launch: x [T, H], router (weight [E, H] bf16, bias [E])
    -> (expert ids [T, k] int32, softmax weights [T, k], the expert input h = norm(x), or x
    itself without a norm, in the GEMV's layout: `gemv_input`). `arrivals`: from `moe_arrivals`."""
    T, H = x.shape
    weight, bias = router
    E = weight.shape[0]
    check(x.is_contiguous() and weight.is_contiguous(), "moe_route: x and the router weight must be contiguous")
    check(T <= GEMV_MAX_PAIRS and arrivals.numel() >= GEMV_MAX_PAIRS * (H + 1),
          f"moe_route: at most {GEMV_MAX_PAIRS} tokens, arrivals from moe_arrivals({H}, device)")
    ids = torch.empty(T, k, dtype=torch.int32, device=x.device)
    gates = torch.empty(T, k, dtype=torch.float32, device=x.device)
    h = torch.empty(T, 3 * H, dtype=torch.bfloat16, device=x.device)
    BLOCK_K, BE = next_pow2(H), next_pow2(E)
    chunk = min(BLOCK_K, 256 if on_gpu(x) else 32)  # the interpreter: small chunks, so tests cover several
    chunks = cdiv(H, chunk)
    parts = torch.empty(T, chunks, BE, dtype=torch.float32, device=x.device)
    moe_route_kernel[(T, chunks)](
        x, x if norm is None else norm.scale, weight, bias, parts, arrivals[GEMV_MAX_PAIRS * H:], ids, gates, h, E, H,
        0.0 if norm is None else norm.eps,
        TOPK=k, BE=BE, BTOPK=next_pow2(k), NORM=norm is not None, BLOCK_K=BLOCK_K, CHUNK=chunk, BC=next_pow2(chunks),
        num_warps=4, **dependent_launch_args(arch_of(x)),
    )
    return ids, gates, h


def _as_words(blocks: torch.Tensor) -> torch.Tensor:
    check(blocks.is_contiguous() and blocks.data_ptr() % 4 == 0,
          "moe_gemv: expert blocks must be contiguous and 4-byte aligned")
    return blocks.view(torch.int32)


def gemv_input(x: torch.Tensor) -> torch.Tensor:
    """float32 x [T, K] -> the expert GEMV's input, as `store_gemv_input` lays it out: bf16
    [T, 3K], planes hi, lo, lo2 of x * 2^GEMV_SHIFT, values in nibble-pair order."""
    check(x.dim() == 2 and x.shape[1] % 8 == 0 and x.dtype == torch.float32, "gemv_input: x must be float32 [T, 8n]")
    T, K = x.shape
    xs = x * GEMV_INPUT_SCALE.value
    hi = xs.bfloat16()
    rest = xs - hi.float()
    lo = rest.bfloat16()
    planes = torch.stack([hi, lo, (rest - lo.float()).bfloat16()], dim=1)  # [T, 3, K]
    return planes.view(T, 3, K // 8, 2, 4).transpose(3, 4).reshape(T, 3 * K)  # value 4h + j of a word -> 2j + h


def _gemv_input_as_words(x: torch.Tensor, rows: int, K: int, what: str) -> torch.Tensor:
    check(x.shape == (rows, 3 * K) and x.dtype == torch.bfloat16 and x.is_contiguous(),
          f"moe_gemv: {what} must be bf16 [{rows}, {3 * K}] (gemv_input), got {x.dtype} {list(x.shape)}")
    return x.view(torch.int32)


def _gemv_tile(name: str, arch: int, N: int, tile: dict | None) -> dict:
    """The kernel's tile arguments: m16 tiles per program x warps splitting K. The interpreter
    pays per program, so it takes up to 256 rows at once, and 2 warps on K so the tests cover
    both reductions and, at K of 9+ blocks, the step loop."""
    tile = tile or (tuning.config(name, arch) if arch != CPU else {"TILES": min(16, next_pow2(cdiv(N, 16))),
                                                                      "WARPS_K": 2})
    return {"TILES": tile["TILES"], "WARPS_K": tile["WARPS_K"], "num_warps": tile["TILES"] * tile["WARPS_K"],
            "MMA": arch != CPU}


def moe_gemv_swiglu(x, ids, w1, limit: float, tile: dict | None = None) -> torch.Tensor:
    """mlp1 for a few pairs: x [T, 3K] (one row per token, `gemv_input` layout), ids [T, k] ->
    SwiGLU activations [T*k, 3N/2], one row per pair, in the same layout (mlp2's input)."""
    blocks, scales, bias = w1
    E, N, kblocks, _ = blocks.shape
    K = kblocks * 32
    words = _gemv_input_as_words(x, ids.shape[0], K, "x")
    R = ids.numel()
    out = torch.empty(R, 3 * (N // 2), dtype=torch.bfloat16, device=x.device)
    arch = arch_of(x)
    tile = _gemv_tile("moe_gemv", arch, N, tile)
    moe_gemv_kernel[(cdiv(N, 16 * tile["TILES"]), R)](
        words, ids, ids, _as_words(blocks), scales, bias, out, out, ids, N, K, ids.shape[1], limit, SWIGLU=True,
        BTOPK=next_pow2(ids.shape[1]), **tile, **dependent_launch_args(arch),
    )
    return out


def moe_arrivals(hidden_size: int, device) -> torch.Tensor:
    """The arrival counts the decode path needs, zero, for up to GEMV_MAX_PAIRS tokens of any
    tile: `moe_gemv_combine`'s (one per token and row block) first, then `moe_route`'s (one per
    token). Every call leaves them zero again, so a decode loop (or CUDA graph) allocates them
    once and passes them in."""
    return torch.zeros(GEMV_MAX_PAIRS * (hidden_size + 1), dtype=torch.int32, device=device)


def moe_gemv_combine(act, ids, gates, w2, residual: torch.Tensor, arrivals: torch.Tensor | None = None,
                     tile: dict | None = None) -> torch.Tensor:
    """mlp2 for a few pairs, combined: act [T*k, 3K] (one row per pair, `gemv_input` layout),
    ids/gates [T, k]; residual [T, N] float32 += each token's gate-weighted outputs, in place.
    `arrivals`: from `moe_arrivals` (allocated here if not given)."""
    blocks, scales, bias = w2
    E, N, kblocks, _ = blocks.shape
    K = kblocks * 32
    T, k = ids.shape
    words = _gemv_input_as_words(act, T * k, K, "act")
    check(residual.shape == (T, N) and residual.dtype == torch.float32, "moe_gemv: residual must be float32 [T, N]")
    check(T <= GEMV_MAX_PAIRS, f"moe_gemv: {T} tokens, at most {GEMV_MAX_PAIRS}")
    if arrivals is None:
        arrivals = moe_arrivals(N, act.device)
    check(arrivals.dtype == torch.int32 and arrivals.numel() >= GEMV_MAX_PAIRS * N,
          f"moe_gemv: arrivals must be moe_arrivals({N}, device)")
    arch = arch_of(act)
    tile = _gemv_tile("moe_gemv_combine", arch, N, tile)
    parts = torch.empty(T * k, N, dtype=torch.float32, device=act.device)
    moe_gemv_kernel[(cdiv(N, 16 * tile["TILES"]), T * k)](
        words, ids, gates, _as_words(blocks), scales, bias, residual, parts, arrivals, N, K, k, 0.0, SWIGLU=False,
        BTOPK=next_pow2(k), **tile, **dependent_launch_args(arch),
    )
    return residual


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
