"""Next-token sampling on the device: greedy, temperature, top-p, seedable.

The vocabulary (201k logits) is split over programs of BLOCK logits each, so the sampler
streams it at bandwidth instead of walking it in one program (H100: 30 us per token, 1.5% of
a decode step). Each program reduces its block to its best score and index; the last to
arrive reduces those, lowest id among equal maxima:
- temperature 0: the score is the logit (argmax).
- temperature T, top_p 1: the Gumbel-max trick: argmax of log p + Gumbel noise draws an exact
  sample from p = softmax(logits / T), and log p may be off by a constant, so the score is
  logit / T * log2(e) + Gumbel noise (base 2) and no normalization is needed.
- top_p < 1: the block maxima give the largest logit; the last program then walks the whole
  vocabulary: p's mass, a bisection for the largest threshold tau whose kept set {p >= tau}
  still holds top_p of the mass, and Gumbel-max over the kept set (an exact sample from the
  renormalized kept distribution, without sorting).
The random stream is Philox keyed by (seed, step); `rng` = [seed, step] lives on the device
and the kernel advances step itself, so replays (CUDA graphs) draw fresh numbers. The sampling
parameters are device values too (`sampling_params`), and the kernel can advance the decode
position, so the engine's CUDA graph holds the whole step from token to next token.
"""

import torch
import triton
import triton.language as tl

from tritonllm.kernels.common import LOG2E, check, last_to_arrive, on_gpu
from tritonllm.runtime.kernel import kernel

BISECT_STEPS = tl.constexpr(32)


@triton.jit
def _gumbel(key, offs):
    """Gumbel noise in base 2 (the argmax it decides is the same up to the factor log2(e))."""
    return -tl.log2(-tl.log2(tl.rand(key, offs)))


@triton.jit
def _top_p_sample(logits_ptr, V, top, scale, top_p, key, BLOCK: tl.constexpr):
    """One program's exact top-p sample over all V logits, whose largest is `top`."""
    offs = tl.arange(0, BLOCK)
    z = tl.zeros([BLOCK], dtype=tl.float32)  # unnormalized p = exp2((x - top) * scale), in (0, 1]
    for v0 in range(0, V, BLOCK):
        x = tl.load(logits_ptr + v0 + offs, mask=v0 + offs < V, other=float("-inf"))
        z += tl.exp2((x - top) * scale)
    wanted = top_p * tl.sum(z, axis=0)
    lo = 0.0  # mass(lo) >= wanted
    hi = 1.0 + 1e-6  # mass(hi) = 0 < wanted
    for _ in range(BISECT_STEPS):
        mid = 0.5 * (lo + hi)
        kept = tl.zeros([BLOCK], dtype=tl.float32)
        for v0 in range(0, V, BLOCK):
            x = tl.load(logits_ptr + v0 + offs, mask=v0 + offs < V, other=float("-inf"))
            p = tl.exp2((x - top) * scale)
            kept += tl.where(p >= mid, p, 0.0)
        enough = tl.sum(kept, axis=0) >= wanted
        lo = tl.where(enough, mid, lo)
        hi = tl.where(enough, hi, mid)
    best_v = tl.full([BLOCK], float("-inf"), tl.float32)
    best_i = tl.zeros([BLOCK], dtype=tl.int32)
    for v0 in range(0, V, BLOCK):
        x = tl.load(logits_ptr + v0 + offs, mask=v0 + offs < V, other=float("-inf"))
        lp = (x - top) * scale
        score = tl.where(tl.exp2(lp) >= lo, lp + _gumbel(key, v0 + offs), float("-inf"))
        better = score > best_v
        best_i = tl.where(better, v0 + offs, best_i)
        best_v = tl.where(better, score, best_v)
    return tl.min(tl.where(best_v == tl.max(best_v, axis=0), best_i, V), axis=0)


@kernel
def sample_kernel(
    logits_ptr, rng_ptr, params_ptr, out_ptr, pos_ptr, best_v_ptr, best_i_ptr, count_ptr, V,
    ADVANCE_POS: tl.constexpr, BLOCK: tl.constexpr, BP: tl.constexpr,
):
    """best_v_ptr / best_i_ptr: each program's best score and its id; count_ptr: the arrival
    count, zero between calls."""
    inv_temperature = tl.load(params_ptr)  # 0: greedy
    top_p = tl.load(params_ptr + 1)
    scale = inv_temperature * LOG2E
    key = tl.load(rng_ptr) + (tl.load(rng_ptr + 1) << 32)
    gumbel = (inv_temperature > 0) & (top_p >= 1.0)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    score = tl.load(logits_ptr + offs, mask=offs < V, other=float("-inf"))
    if gumbel:
        score = tl.where(offs < V, score * scale + _gumbel(key, offs), float("-inf"))
    best = tl.max(score, axis=0)
    tl.store(best_v_ptr + tl.program_id(0), best)
    tl.store(best_i_ptr + tl.program_id(0), tl.min(tl.where(score == best, offs, V), axis=0))
    programs = tl.num_programs(0)
    if last_to_arrive(count_ptr, programs):
        p = tl.arange(0, BP)
        scores = tl.load(best_v_ptr + p, mask=p < programs, other=float("-inf"), cache_modifier=".cg")
        ids = tl.load(best_i_ptr + p, mask=p < programs, other=V, cache_modifier=".cg")
        top = tl.max(scores, axis=0)
        token = tl.min(tl.where(scores == top, ids, V), axis=0)
        if inv_temperature > 0:
            if top_p < 1.0:
                token = _top_p_sample(logits_ptr, V, top, scale, top_p, key, BLOCK)
            tl.store(rng_ptr + 1, tl.load(rng_ptr + 1) + 1)
        tl.store(out_ptr, token)
        if ADVANCE_POS:
            tl.store(pos_ptr, tl.load(pos_ptr) + 1)
        tl.store(count_ptr, 0)


def sampling_params(temperature: float, top_p: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """The sampler's parameters as the device reads them: float32 [1 / temperature (0: greedy), top_p]."""
    check(temperature >= 0 and 0 < top_p <= 1, f"sample: temperature {temperature} / top_p {top_p} out of range")
    return torch.tensor([0.0 if temperature == 0 else 1.0 / temperature, top_p], dtype=torch.float32, device=device)


class SampleScratch:
    """What the sampler's programs share: each one's best score and id, and the arrival count
    (zero between calls). The engine keeps one, so its CUDA graph reuses it. `block`: logits
    per program (default: 4,096 on GPUs; the interpreter pays per program, so 65,536)."""

    def __init__(self, vocab_size: int, device, block: int | None = None):
        self.block = block or min(4096 if on_gpu(torch.empty(0, device=device)) else 1 << 16,
                                  triton.next_power_of_2(vocab_size))
        self.programs = triton.cdiv(vocab_size, self.block)
        slots = triton.next_power_of_2(self.programs)
        self.best_v = torch.empty(slots, dtype=torch.float32, device=device)
        self.best_i = torch.empty(slots, dtype=torch.int32, device=device)
        self.count = torch.zeros(1, dtype=torch.int32, device=device)


def sample(
    logits: torch.Tensor, rng: torch.Tensor, params: torch.Tensor, out: torch.Tensor | None = None,
    pos: torch.Tensor | None = None, scratch: SampleScratch | None = None,
) -> torch.Tensor:
    """logits [V] float32 -> token id [1] int32 on the device. rng [2] int64 = (seed, step);
    params from `sampling_params`; `pos` (int32 [1]), if given, is advanced by one."""
    check(logits.dim() == 1 and logits.is_contiguous(), "sample: logits must be a contiguous [V] tensor")
    check(rng.shape == (2,) and rng.dtype == torch.int64, "sample: rng must be int64 [seed, step]")
    check(params.shape == (2,) and params.dtype == torch.float32, "sample: params must come from sampling_params")
    check(pos is None or (pos.shape == (1,) and pos.dtype == torch.int32), "sample: pos must be int32 [1]")
    V = logits.numel()
    scratch = scratch or SampleScratch(V, logits.device)
    check(scratch.programs == triton.cdiv(V, scratch.block), f"sample: scratch made for another vocabulary than {V}")
    if out is None:
        out = torch.empty(1, dtype=torch.int32, device=logits.device)
    pos_arg = out if pos is None else pos  # any pointer: the kernel touches it only with ADVANCE_POS
    sample_kernel[(scratch.programs,)](
        logits, rng, params, out, pos_arg, scratch.best_v, scratch.best_i, scratch.count, V,
        ADVANCE_POS=pos is not None, BLOCK=scratch.block, BP=scratch.best_v.numel(), num_warps=8,
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
