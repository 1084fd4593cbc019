"""Decode's expert matrix-vector products: a few (token, expert) pairs, on the tensor cores.

`moe_route` (kernels.moe) writes the expert input with `store_gemv_input`: x * 2^GEMV_SHIFT as three
bf16 planes (hi + lo + lo2: float32's precision) in the order the FP4 weight words' nibble pairs
take, and the router logits in parts (`RouterParts`), from which every GEMV program picks its
pair's expert itself. `moe_gemv_swiglu` (mlp1) and `moe_gemv_combine` (mlp2, whose last program
per token and row block adds the k gate-weighted parts into the residual) run `moe_gemv_kernel`,
which decodes each lane's whole 32-value scale block of FP4 words straight into mma.m16n8k16 A
fragments, the block scale folded in (kernels.mxfp4.e2m1_mma; design in the kernel's docstring). H100, one 20b layer's
four experts: mlp1 19.3 us and mlp2 10.1-11.3 us added to the decode step, against 16.1 and 9.6 us
for a kernel that only reads the same weights in one launch, and 20.4 + 13.1 us for the float32-FMA
GEMV this replaced (docs/performance.md, notes 38 and 39).
"""

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from tritonllm.kernels import tuning
from tritonllm.kernels.common import cdiv, check, dependent_launch_args, last_to_arrive, next_pow2, wait_for_inputs
from tritonllm.kernels.mxfp4 import (
    GEMV_INPUT_SCALE, GEMV_WEIGHT_SCALE, bf16_block_factor, e2m1_mma, e2m1_word_values,
)
from tritonllm.runtime.kernel import kernel
from tritonllm.runtime.target import CPU, arch_of

GEMV_MAX_PAIRS = 8  # up to this many (token, expert) pairs, experts run as matrix-vector products
SWIGLU_ALPHA = tl.constexpr(1.702)


@triton.jit
def swiglu(h, limit, N: tl.constexpr):
    """gpt-oss's clamped SwiGLU over [.., N] interleaved columns (even = gate, odd = linear)
    -> [.., N/2]: gate * sigmoid(1.702 gate) * (linear + 1), gate clamped above at limit,
    linear to +-limit."""
    gate, lin = tl.split(tl.reshape(h, h.shape[:-1] + [N // 2, 2]))
    gate = tl.minimum(gate, limit)
    lin = tl.minimum(tl.maximum(lin, -limit), limit)
    return gate * tl.sigmoid(SWIGLU_ALPHA * gate) * (lin + 1.0)


@triton.jit
def topk_softmax_rows(v, e, E, K: tl.constexpr, BK: tl.constexpr):
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


@triton.jit
def pick_expert(parts_ptr, bias_ptr, t, j, chunks, E, TOPK: tl.constexpr, BE: tl.constexpr, BTOPK: tl.constexpr,
                BC: tl.constexpr):
    """Token t's j-th expert and its softmax weight, from the router logit parts [chunks, BE] at
    parts_ptr (`RouterParts`): the bias plus the parts in a fixed order (one load each, issued
    together), then the top TOPK. Every program that routes the token computes the same sums, so
    all pick the same experts, and none waits for another to pick them."""
    e = tl.arange(0, BE)
    logits = tl.load(bias_ptr + e, mask=e < E, other=0.0).to(tl.float32)
    for c in tl.static_range(BC):
        logits += tl.load(parts_ptr + (t * chunks + c) * BE + e, mask=c < chunks, other=0.0)
    top_i, gate = topk_softmax_rows(logits[None, :], e, E, TOPK, BTOPK)
    kk = tl.arange(0, BTOPK)[None, :]
    return tl.sum(tl.where(kk == j, top_i, 0)), tl.sum(tl.where(kk == j, gate, 0.0))


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
    """Group g's input of one lane: its 16 words of the mma's B operand (from x_l), [L, 4] per
    weight word."""
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
def moe_gemv_kernel(
    x_ptr, route_ptr, route_bias_ptr, words_ptr, scales_ptr, bias_ptr, out_ptr, part_ptr, arrivals_ptr,
    N, K, chunks, E, limit,
    SWIGLU: tl.constexpr, TILES: tl.constexpr, WARPS_K: tl.constexpr, TOPK: tl.constexpr, BTOPK: tl.constexpr,
    BE: tl.constexpr, BC: tl.constexpr, MMA: tl.constexpr,
    PDL: tl.constexpr,
):
    """Expert matrix-vector products over N weight rows of K values on the tensor cores; grid
    (row blocks of 16 TILES rows, pairs). Pair p is token p // TOPK's (p % TOPK)-th expert e, which
    the program picks itself from the router logit parts (`pick_expert`; route_ptr: [tokens, chunks,
    BE], route_bias_ptr: the router's bias), with its softmax weight, the gate.

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
    low nibble and 2b+1 in its high nibble. PDL (see `wait_for_inputs`): mlp1's router parts come
    from the kernel just before, so it waits first; mlp2's come from moe_route, which completed
    before mlp1 got past its own wait, so mlp2 picks its expert and loads its first weights before
    waiting for mlp1's output (H100: decode 521.9 -> 528.6 tok/s; note 39).
    """
    if SWIGLU:  # mlp1's router parts come from the kernel just before
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
    e, gate = pick_expert(route_ptr, route_bias_ptr, pair // TOPK, pair % TOPK, chunks, E, TOPK, BE, BTOPK, BC)
    e = e.to(tl.int64)
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
        store_gemv_input(out_ptr + pair * 3 * (N // 2), cols, swiglu(out, limit, BN), cols < N // 2, N // 2)
    else:
        tl.store(part_ptr + pair * N + rows, out * gate, mask=r_ok)
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


@dataclass
class RouterParts:
    """Decode's routing as `moe_route` leaves it, for the expert GEMVs to finish: parts [T, chunks,
    BE] float32 of the router logits (summed over chunks, plus `bias` [E], the router's, they are
    the logits; experts past E are padding), k experts per token. Each GEMV program picks its own
    pair's expert and gate from them (`pick_expert`), so no program waits for a top-k by another."""

    parts: torch.Tensor
    bias: torch.Tensor
    k: int

    @property
    def tokens(self) -> int:
        return self.parts.shape[0]

    @property
    def chunks(self) -> int:
        return self.parts.shape[1]

    def constexprs(self) -> dict:
        """`moe_gemv_kernel`'s compile-time routing arguments."""
        return {"TOPK": self.k, "BTOPK": next_pow2(self.k), "BE": self.parts.shape[2], "BC": next_pow2(self.chunks)}

    @staticmethod
    def choosing(ids: torch.Tensor, num_experts: int) -> "RouterParts":
        """Parts that pick the experts of each row of ids [T, k], with equal gates 1/k (pairs take
        them in increasing id order): for tools and checks that fix the routing."""
        T, k = ids.shape
        parts = torch.zeros(T, 1, next_pow2(num_experts), dtype=torch.float32, device=ids.device)
        parts[:, 0].scatter_(1, ids.long(), 1.0)
        return RouterParts(parts, torch.zeros(num_experts, dtype=torch.bfloat16, device=ids.device), k)


def _check_route(route: RouterParts, num_experts: int, tokens: int) -> None:
    check(route.parts.dim() == 3 and route.parts.dtype == torch.float32 and route.parts.is_contiguous()
          and route.parts.shape[0] == tokens and route.parts.shape[2] >= num_experts
          and route.bias.shape == (num_experts,) and 0 < route.k <= num_experts,
          f"moe_gemv: routing parts for {tokens} tokens of {num_experts} experts expected")


def moe_gemv_swiglu(x, route: RouterParts, w1, limit: float, tile: dict | None = None) -> torch.Tensor:
    """mlp1 for a few pairs: x [T, 3K] (one row per token, `gemv_input` layout), the routing ->
    SwiGLU activations [T*k, 3N/2], one row per pair, in the same layout (mlp2's input)."""
    blocks, scales, bias = w1
    E, N, kblocks, _ = blocks.shape
    K = kblocks * 32
    T = route.tokens
    _check_route(route, E, T)
    words = _gemv_input_as_words(x, T, K, "x")
    R = T * route.k
    out = torch.empty(R, 3 * (N // 2), dtype=torch.bfloat16, device=x.device)
    arch = arch_of(x)
    tile = _gemv_tile("moe_gemv", arch, N, tile)
    moe_gemv_kernel[(cdiv(N, 16 * tile["TILES"]), R)](
        words, route.parts, route.bias, _as_words(blocks), scales, bias, out, out, words, N, K, route.chunks, E, limit,
        SWIGLU=True, **route.constexprs(), **tile, **dependent_launch_args(arch),
    )
    return out


def moe_arrivals(hidden_size: int, device) -> torch.Tensor:
    """The arrival counts of `moe_gemv_combine` (one per token and row block of any tile), zero, for
    up to GEMV_MAX_PAIRS tokens. Every call leaves them zero again, so a decode loop (or CUDA
    graph) allocates them once and passes them in."""
    return torch.zeros(GEMV_MAX_PAIRS * hidden_size, dtype=torch.int32, device=device)


def moe_gemv_combine(act, route: RouterParts, w2, residual: torch.Tensor, arrivals: torch.Tensor | None = None,
                     tile: dict | None = None) -> torch.Tensor:
    """mlp2 for a few pairs, combined: act [T*k, 3K] (one row per pair, `gemv_input` layout), the
    routing; residual [T, N] float32 += each token's gate-weighted outputs, in place. `arrivals`:
    from `moe_arrivals` (allocated here if not given)."""
    blocks, scales, bias = w2
    E, N, kblocks, _ = blocks.shape
    K = kblocks * 32
    T, k = route.tokens, route.k
    _check_route(route, E, T)
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
        words, route.parts, route.bias, _as_words(blocks), scales, bias, residual, parts, arrivals, N, K, route.chunks,
        E, 0.0, SWIGLU=False, **route.constexprs(), **tile, **dependent_launch_args(arch),
    )
    return residual
