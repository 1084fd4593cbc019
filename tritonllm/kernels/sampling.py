"""Next-token sampling on the device: greedy, temperature, top-p, seedable.

One program walks the vocabulary (a few hundred KB, L2-resident after the unembedding):
- temperature 0: argmax (lowest id among equal maxima).
- otherwise p = softmax(logits / temperature); with top_p < 1 a bisection finds the
  largest threshold tau whose kept set {p >= tau} still holds top_p of the mass; then the
  Gumbel-max trick (argmax of log p + Gumbel noise over the kept set) draws an exact sample
  from the renormalized kept distribution, in one pass and without sorting.
The random stream is Philox keyed by (seed, step); `rng` = [seed, step] lives on the device
and the kernel advances step itself, so replays (CUDA graphs) draw fresh numbers. The sampling
parameters are device values too (`sampling_params`), and the kernel can advance the decode
position, so the engine's CUDA graph holds the whole step from token to next token.
"""

import torch
import triton
import triton.language as tl

from tritonllm.kernels.common import LOG2E, check, on_gpu
from tritonllm.runtime.kernel import kernel

BISECT_STEPS = tl.constexpr(32)


@kernel
def sample_kernel(logits_ptr, rng_ptr, params_ptr, out_ptr, pos_ptr, V, ADVANCE_POS: tl.constexpr, BLOCK: tl.constexpr):
    inv_temperature = tl.load(params_ptr)  # 0: greedy
    top_p = tl.load(params_ptr + 1)
    offs = tl.arange(0, BLOCK)
    best_v = tl.full([BLOCK], float("-inf"), tl.float32)
    best_i = tl.zeros([BLOCK], dtype=tl.int32)
    for v0 in range(0, V, BLOCK):  # argmax, kept per lane then reduced
        x = tl.load(logits_ptr + v0 + offs, mask=v0 + offs < V, other=float("-inf"))
        better = x > best_v
        best_i = tl.where(better, v0 + offs, best_i)
        best_v = tl.where(better, x, best_v)
    top = tl.max(best_v, axis=0)
    token = tl.min(tl.where(best_v == top, best_i, V), axis=0)
    if inv_temperature > 0:
        # base-2 log-probabilities up to a constant: lp = (x - top) / T * log2(e)
        scale = inv_temperature * LOG2E
        z = tl.zeros([BLOCK], dtype=tl.float32)
        for v0 in range(0, V, BLOCK):
            x = tl.load(logits_ptr + v0 + offs, mask=v0 + offs < V, other=float("-inf"))
            z += tl.exp2((x - top) * scale)
        total = tl.sum(z, axis=0)
        lo = 0.0  # threshold on unnormalized p = exp2(lp) in (0, 1]: mass(lo) >= top_p
        hi = 1.0 + 1e-6  # mass(hi) = 0 < top_p
        if top_p < 1.0:
            for _ in range(BISECT_STEPS):
                mid = 0.5 * (lo + hi)
                kept = tl.zeros([BLOCK], dtype=tl.float32)
                for v0 in range(0, V, BLOCK):
                    x = tl.load(logits_ptr + v0 + offs, mask=v0 + offs < V, other=float("-inf"))
                    p = tl.exp2((x - top) * scale)
                    kept += tl.where(p >= mid, p, 0.0)
                enough = tl.sum(kept, axis=0) >= top_p * total
                lo = tl.where(enough, mid, lo)
                hi = tl.where(enough, hi, mid)
        seed = tl.load(rng_ptr)
        step = tl.load(rng_ptr + 1)
        key = seed + (step << 32)
        best_v = tl.full([BLOCK], float("-inf"), tl.float32)
        for v0 in range(0, V, BLOCK):
            x = tl.load(logits_ptr + v0 + offs, mask=v0 + offs < V, other=float("-inf"))
            lp = (x - top) * scale
            u = tl.rand(key, v0 + offs)
            score = lp - tl.log2(-tl.log2(u))  # Gumbel noise in base 2 (same argmax up to log2 e)
            score = tl.where(tl.exp2(lp) >= lo, score, float("-inf"))
            better = score > best_v
            best_i = tl.where(better, v0 + offs, best_i)
            best_v = tl.where(better, score, best_v)
        top_score = tl.max(best_v, axis=0)
        token = tl.min(tl.where(best_v == top_score, best_i, V), axis=0)
        tl.store(rng_ptr + 1, step + 1)
    tl.store(out_ptr, token)
    if ADVANCE_POS:
        tl.store(pos_ptr, tl.load(pos_ptr) + 1)


def sampling_params(temperature: float, top_p: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """The sampler's parameters as the device reads them: float32 [1 / temperature (0: greedy), top_p]."""
    check(temperature >= 0 and 0 < top_p <= 1, f"sample: temperature {temperature} / top_p {top_p} out of range")
    return torch.tensor([0.0 if temperature == 0 else 1.0 / temperature, top_p], dtype=torch.float32, device=device)


def sample(
    logits: torch.Tensor, rng: torch.Tensor, params: torch.Tensor, out: torch.Tensor | None = None,
    pos: torch.Tensor | None = None,
) -> torch.Tensor:
    """logits [V] float32 -> token id [1] int32 on the device. rng [2] int64 = (seed, step);
    params from `sampling_params`; `pos` (int32 [1]), if given, is advanced by one."""
    check(logits.dim() == 1 and logits.is_contiguous(), "sample: logits must be a contiguous [V] tensor")
    check(rng.shape == (2,) and rng.dtype == torch.int64, "sample: rng must be int64 [seed, step]")
    check(params.shape == (2,) and params.dtype == torch.float32, "sample: params must come from sampling_params")
    check(pos is None or (pos.shape == (1,) and pos.dtype == torch.int32), "sample: pos must be int32 [1]")
    if out is None:
        out = torch.empty(1, dtype=torch.int32, device=logits.device)
    BLOCK = 4096 if on_gpu(logits) else 1 << 16
    sample_kernel[(1,)](
        logits, rng, params, out, out if pos is None else pos, logits.numel(),  # out: a pointer never used
        ADVANCE_POS=pos is not None, BLOCK=min(BLOCK, triton.next_power_of_2(logits.numel())), num_warps=8,
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
