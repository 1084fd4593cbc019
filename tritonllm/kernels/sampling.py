"""Next-token sampling on the device: greedy, temperature, top-p, seedable.

The vocabulary (201k logits) is split over programs of BLOCK logits each, so every pass
streams it at bandwidth instead of walking it in one program. Each program reduces its block
to its best score and id; the last to arrive (`last_to_arrive`) reduces those, lowest id
among equal maxima:
- temperature 0: the score is the logit (argmax).
- temperature T: the Gumbel-max trick: argmax of log p + Gumbel noise draws an exact sample
  from p = softmax(logits / T), and log p may be off by a constant, so the score is
  logit / T * log2(e) + Gumbel noise (base 2) and no normalization is needed.
- top_p < 1 (nucleus): keep the set {p >= tau} for the largest tau whose set still holds
  top_p of the mass, then Gumbel-max over it (an exact sample from the renormalized kept
  distribution, without sorting). tau is found digit by digit on the bits of p as a float32
  (for p in (0, 1] they order like p): the first pass finds the largest logit, and each
  `top_p_level_kernel` pass sums, in every program, the mass above each of 32 candidate
  values of the next 5 bits; the last to arrive keeps the largest candidate that still holds
  enough and writes the prefix the next pass refines. Six passes fix all 30 bits below the
  sign and the exponent's top bit (both 0 for p <= 1), so tau is exact up to the float32 sums
  of the masses (~1e-7 of the total); `top_p_pick_kernel` then samples. A pass is a launch,
  as each needs every program's sums of the one before (H100: ~47 us for the eight launches,
  against ~700 us for the exact bisection in one program that they replaced).
The random stream is Philox keyed by (seed, step); `rng` = [seed, step] lives on the device
and the sampler advances step itself, so replays (CUDA graphs) draw fresh numbers. The
sampling parameters are device values too (`SamplerParams`), and the sampler can advance the
decode position, so the engine's CUDA graph holds the whole step from token to next token.
Only whether the top-p passes run is decided on the host (`SamplerParams.nucleus`).
"""

import torch
import triton
import triton.language as tl

from tritonllm.kernels.common import LOG2E, cdiv, check, last_to_arrive, next_pow2, on_gpu
from tritonllm.runtime.kernel import kernel

DIGIT_BITS = tl.constexpr(5)  # bits of tau fixed per top-p pass,
DIGITS = tl.constexpr(1 << DIGIT_BITS.value)  # so 32 candidates summed per logit
TOP_P_SHIFTS = tuple(range(30 - DIGIT_BITS.value, -1, -DIGIT_BITS.value))  # each pass's lowest bit: 29..0 in 6


@triton.jit
def _gumbel(key, offs):
    """Gumbel noise in base 2 (the argmax it decides is the same up to the factor log2(e))."""
    return -tl.log2(-tl.log2(tl.rand(key, offs)))


@triton.jit
def _rng_key(rng_ptr):
    return tl.load(rng_ptr) + (tl.load(rng_ptr + 1) << 32)


@triton.jit
def _log_p(x, top, scale):
    """Unnormalized log2 p (<= 0), p, and p's bits as an int32 (ordered like p). Every pass
    computes p this one way, so they all see the same bits."""
    lp = (x - top) * scale
    p = tl.exp2(lp)
    return lp, p, p.to(tl.int32, bitcast=True)


@triton.jit
def _store_block_best(score, offs, V, best_v_ptr, best_i_ptr):
    best = tl.max(score, axis=0)
    tl.store(best_v_ptr + tl.program_id(0), best)
    tl.store(best_i_ptr + tl.program_id(0), tl.min(tl.where(score == best, offs, V), axis=0))


@triton.jit
def _best_of_programs(best_v_ptr, best_i_ptr, V, BP: tl.constexpr):
    """The last program's reduction of every program's best: (best score, lowest id with it)."""
    p = tl.arange(0, BP)
    programs = tl.num_programs(0)
    scores = tl.load(best_v_ptr + p, mask=p < programs, other=float("-inf"), cache_modifier=".cg")
    ids = tl.load(best_i_ptr + p, mask=p < programs, other=V, cache_modifier=".cg")
    top = tl.max(scores, axis=0)
    return top, tl.min(tl.where(scores == top, ids, V), axis=0)


@triton.jit
def _emit(token, drew, out_ptr, rng_ptr, pos_ptr, ADVANCE_POS: tl.constexpr):
    """Write the token; a random draw moves the stream on; the position advances if asked."""
    tl.store(out_ptr, token)
    if drew:
        tl.store(rng_ptr + 1, tl.load(rng_ptr + 1) + 1)
    if ADVANCE_POS:
        tl.store(pos_ptr, tl.load(pos_ptr) + 1)


@kernel
def sample_kernel(
    logits_ptr, rng_ptr, params_ptr, out_ptr, pos_ptr, best_v_ptr, best_i_ptr, count_ptr, top_ptr, tau_ptr, V,
    ADVANCE_POS: tl.constexpr, NUCLEUS: tl.constexpr, BLOCK: tl.constexpr, BP: tl.constexpr,
):
    """Greedy or Gumbel-max sample; with NUCLEUS, only the largest logit (into *top_ptr, the
    top-p passes' start). best_v_ptr / best_i_ptr: each program's best score and its id;
    count_ptr: the arrival count, zero between calls."""
    inv_temperature = tl.load(params_ptr)  # 0: greedy
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    score = tl.load(logits_ptr + offs, mask=offs < V, other=float("-inf"))
    if not NUCLEUS and inv_temperature > 0:
        score = tl.where(offs < V, score * inv_temperature * LOG2E + _gumbel(_rng_key(rng_ptr), offs), float("-inf"))
    _store_block_best(score, offs, V, best_v_ptr, best_i_ptr)
    if last_to_arrive(count_ptr, tl.num_programs(0)):
        top, token = _best_of_programs(best_v_ptr, best_i_ptr, V, BP)
        if NUCLEUS:
            tl.store(top_ptr, top)
            tl.store(tau_ptr, 0)
        else:
            _emit(token, inv_temperature > 0, out_ptr, rng_ptr, pos_ptr, ADVANCE_POS)
        tl.store(count_ptr, 0)


@kernel(dynamic=("shift",))
def top_p_level_kernel(
    logits_ptr, params_ptr, mass_ptr, count_ptr, top_ptr, tau_ptr, V, shift,
    BLOCK: tl.constexpr, CHUNK: tl.constexpr, BP: tl.constexpr,
):
    """One digit of tau: bits shift..shift+4, below the prefix in *tau_ptr. top_ptr: [largest
    logit, mass wanted] (the first pass, shift 25, writes the second). mass_ptr [BP, 32]: each
    program's mass above each candidate."""
    scale = tl.load(params_ptr) * LOG2E
    top = tl.load(top_ptr)
    prefix = tl.load(tau_ptr)
    fixed = prefix >> (shift + DIGIT_BITS)  # the bits earlier passes fixed
    candidates = tl.arange(0, DIGITS)[:, None]
    # [candidates, logits], 2-D from the load on (no layout change to broadcast), summed at the end
    # along the logits (which the interpreter's numpy sums pairwise).
    mass = tl.zeros([DIGITS, CHUNK], dtype=tl.float32)
    for c in range(0, BLOCK, CHUNK):
        offs = tl.program_id(0) * BLOCK + c + tl.arange(0, CHUNK)[None, :]
        x = tl.load(logits_ptr + offs, mask=offs < V, other=float("-inf"))
        _, p, bits = _log_p(x, top, scale)
        high = bits >> (shift + DIGIT_BITS)
        # The logit's digit; above the prefix's range it counts for every candidate, below for none.
        digit = tl.where(high > fixed, DIGITS, tl.where(high == fixed, (bits >> shift) & (DIGITS - 1), -1))
        mass += tl.where(digit >= candidates, p, 0.0)
    digits = tl.arange(0, DIGITS)
    tl.store(mass_ptr + tl.program_id(0) * DIGITS + digits, tl.sum(mass, axis=1))
    if last_to_arrive(count_ptr, tl.num_programs(0)):
        rows = tl.arange(0, BP)
        parts = tl.load(mass_ptr + rows[None, :] * DIGITS + digits[:, None], mask=rows[None, :] < tl.num_programs(0),
                        other=0.0, cache_modifier=".cg")
        above = tl.sum(parts, axis=1)  # the mass above each candidate
        first = shift + DIGIT_BITS == 30  # the first pass: candidate 0 (p >= 0) holds all the mass
        total = tl.max(tl.where(digits == 0, above, 0.0), axis=0)
        wanted = tl.where(first, tl.load(params_ptr + 1) * total, tl.load(top_ptr + 1))
        if first:
            tl.store(top_ptr + 1, wanted)
        digit = tl.max(tl.where(above >= wanted, digits, 0), axis=0)
        tl.store(tau_ptr, prefix | (digit << shift))
        tl.store(count_ptr, 0)


@kernel
def top_p_pick_kernel(
    logits_ptr, rng_ptr, params_ptr, out_ptr, pos_ptr, best_v_ptr, best_i_ptr, count_ptr, top_ptr, tau_ptr, V,
    ADVANCE_POS: tl.constexpr, BLOCK: tl.constexpr, BP: tl.constexpr,
):
    """Gumbel-max over the kept set {bits of p >= *tau_ptr}."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(logits_ptr + offs, mask=offs < V, other=float("-inf"))
    lp, _, bits = _log_p(x, tl.load(top_ptr), tl.load(params_ptr) * LOG2E)
    score = tl.where((offs < V) & (bits >= tl.load(tau_ptr)), lp + _gumbel(_rng_key(rng_ptr), offs), float("-inf"))
    _store_block_best(score, offs, V, best_v_ptr, best_i_ptr)
    if last_to_arrive(count_ptr, tl.num_programs(0)):
        token = _best_of_programs(best_v_ptr, best_i_ptr, V, BP)[1]
        _emit(token, True, out_ptr, rng_ptr, pos_ptr, ADVANCE_POS)
        tl.store(count_ptr, 0)


class SamplerParams:
    """The sampling parameters as the sampler reads them on the device, float32 [1 / temperature
    (0: greedy), top_p], so a CUDA graph replays with whatever was last `set`; and, on the
    host, whether they need the top-p passes (`nucleus`), which changes what is launched."""

    def __init__(self, temperature: float = 0.0, top_p: float = 1.0, device: torch.device | str = "cpu"):
        self.values = torch.empty(2, dtype=torch.float32, device=device)
        self.set(temperature, top_p)

    def set(self, temperature: float, top_p: float) -> None:
        check(temperature >= 0 and 0 < top_p <= 1, f"sample: temperature {temperature} / top_p {top_p} out of range")
        self.values.copy_(torch.tensor([0.0 if temperature == 0 else 1.0 / temperature, top_p]))
        self.nucleus = temperature > 0 and top_p < 1


class SampleScratch:
    """What the sampler's programs share: each one's best score and id (or top-p masses), the
    arrival count (zero between calls), the largest logit and mass wanted, and tau's bits. The
    engine keeps one, so its CUDA graph reuses it. `block`: logits per program (default: 4,096 on
    GPUs; 1,024 in 256-logit steps for the top-p passes, whose sums cost more per logit: the best
    of 30 configurations measured; the interpreter pays per program and per step, so 65,536
    and long steps)."""

    def __init__(self, vocab_size: int, device, block: int | None = None):
        gpu = on_gpu(torch.empty(0, device=device))
        whole = next_pow2(vocab_size)
        self.block = block or min(4096 if gpu else 1 << 16, whole)
        self.level_block = block or min(1024 if gpu else 1 << 16, whole)
        self.chunk = min(256 if gpu else 1 << 14, self.level_block)  # [chunk, 32] sums at a time
        self.programs = cdiv(vocab_size, self.block)
        self.level_programs = cdiv(vocab_size, self.level_block)
        slots = next_pow2(max(self.programs, self.level_programs))
        self.best_v = torch.empty(slots, dtype=torch.float32, device=device)
        self.best_i = torch.empty(slots, dtype=torch.int32, device=device)
        self.mass = torch.empty(slots, DIGITS.value, dtype=torch.float32, device=device)
        self.count = torch.zeros(1, dtype=torch.int32, device=device)
        self.top = torch.empty(2, dtype=torch.float32, device=device)  # [largest logit, mass wanted]
        self.tau = torch.empty(1, dtype=torch.int32, device=device)


def sample(
    logits: torch.Tensor, rng: torch.Tensor, params: SamplerParams, out: torch.Tensor | None = None,
    pos: torch.Tensor | None = None, scratch: SampleScratch | None = None,
) -> torch.Tensor:
    """logits [V] float32 -> token id [1] int32 on the device. rng [2] int64 = (seed, step);
    `pos` (int32 [1]), if given, is advanced by one."""
    check(logits.dim() == 1 and logits.is_contiguous(), "sample: logits must be a contiguous [V] tensor")
    check(rng.shape == (2,) and rng.dtype == torch.int64, "sample: rng must be int64 [seed, step]")
    check(isinstance(params, SamplerParams), "sample: params must be a SamplerParams")
    check(pos is None or (pos.shape == (1,) and pos.dtype == torch.int32), "sample: pos must be int32 [1]")
    V = logits.numel()
    s = scratch or SampleScratch(V, logits.device)
    check(s.programs == cdiv(V, s.block), f"sample: scratch made for another vocabulary than {V}")
    if out is None:
        out = torch.empty(1, dtype=torch.int32, device=logits.device)
    pos_arg = out if pos is None else pos  # any pointer: the kernels touch it only with ADVANCE_POS
    BP = s.best_v.numel()
    shared = (s.best_v, s.best_i, s.count, s.top, s.tau, V)
    sample_kernel[(s.programs,)](
        logits, rng, params.values, out, pos_arg, *shared,
        ADVANCE_POS=pos is not None, NUCLEUS=params.nucleus, BLOCK=s.block, BP=BP, num_warps=8,
    )
    if params.nucleus:
        for shift in TOP_P_SHIFTS:
            top_p_level_kernel[(s.level_programs,)](
                logits, params.values, s.mass, s.count, s.top, s.tau, V, shift,
                BLOCK=s.level_block, CHUNK=s.chunk, BP=BP, num_warps=4,
            )
        top_p_pick_kernel[(s.programs,)](
            logits, rng, params.values, out, pos_arg, *shared, ADVANCE_POS=pos is not None, BLOCK=s.block, BP=BP,
            num_warps=8,
        )
    return out


def top_p_support(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Reference: boolean mask [V] of the tokens top-p sampling may return."""
    p = torch.softmax(logits.double() / temperature, dim=-1)
    sorted_p, order = p.sort(descending=True)
    before = sorted_p.cumsum(0) - sorted_p  # mass strictly above each token
    keep = torch.zeros_like(p, dtype=torch.bool)
    keep[order[before < top_p]] = True
    return keep
