"""Next-token sampling on the device: greedy, temperature, top-p, seedable.

One program walks the vocabulary (a few hundred KB, L2-resident after the unembedding):
- temperature 0: argmax (lowest id among equal maxima).
- otherwise p = softmax(logits / temperature); with top_p < 1 a bisection finds the
  largest threshold tau whose kept set {p >= tau} still holds top_p of the mass; then the
  Gumbel-max trick (argmax of log p + Gumbel noise over the kept set) draws an exact sample
  from the renormalized kept distribution, in one pass and without sorting.
The random stream is Philox keyed by (seed, step); `rng` = [seed, step] lives on the device
and the kernel advances step itself, so replays (CUDA graphs) draw fresh numbers.
"""

import torch
import triton
import triton.language as tl

from tritonllm.kernels.common import LOG2E, check, on_gpu
from tritonllm.runtime.kernel import kernel

BISECT_STEPS = tl.constexpr(32)


@kernel
def sample_kernel(
    logits_ptr, rng_ptr, out_ptr, V, inv_temperature, top_p,
    GREEDY: tl.constexpr, TOP_P: tl.constexpr, BLOCK: tl.constexpr,
):
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
    if not GREEDY:
        # base-2 log-probabilities up to a constant: lp = (x - top) / T * log2(e)
        scale = inv_temperature * LOG2E
        z = tl.zeros([BLOCK], dtype=tl.float32)
        for v0 in range(0, V, BLOCK):
            x = tl.load(logits_ptr + v0 + offs, mask=v0 + offs < V, other=float("-inf"))
            z += tl.exp2((x - top) * scale)
        total = tl.sum(z, axis=0)
        lo = 0.0  # threshold on unnormalized p = exp2(lp) in (0, 1]: mass(lo) >= top_p
        hi = 1.0 + 1e-6  # mass(hi) = 0 < top_p
        if TOP_P:
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


def sample(
    logits: torch.Tensor, rng: torch.Tensor, temperature: float, top_p: float, out: torch.Tensor | None = None
) -> torch.Tensor:
    """logits [V] float32 -> token id [1] int32 on the device. rng [2] int64 = (seed, step)."""
    check(logits.dim() == 1 and logits.is_contiguous(), "sample: logits must be a contiguous [V] tensor")
    check(rng.shape == (2,) and rng.dtype == torch.int64, "sample: rng must be int64 [seed, step]")
    check(temperature >= 0 and 0 < top_p <= 1, f"sample: temperature {temperature} / top_p {top_p} out of range")
    if out is None:
        out = torch.empty(1, dtype=torch.int32, device=logits.device)
    greedy = temperature == 0
    BLOCK = 4096 if on_gpu(logits) else 1 << 16
    sample_kernel[(1,)](
        logits, rng, out, logits.numel(), 0.0 if greedy else 1.0 / temperature, top_p,
        GREEDY=greedy, TOP_P=top_p < 1.0, BLOCK=min(BLOCK, triton.next_power_of_2(logits.numel())), num_warps=8,
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
