"""RMSNorm in float32 over the float32 residual stream.

A norm always feeds a matmul, so it never runs alone in decode: the matrix-vector kernels
take the raw residual and a `Norm`, sum x^2 while they stream x, and scale by `rstd` at the
end (out = rstd * W @ (x * scale)). For prefill, `rmsnorm` writes the normed rows as the
bf16 hi + lo parts that the tensor-core matmuls multiply (see kernels.common.dot). The
residual adds themselves are fused into the epilogues of the matmuls that produce them.
"""

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from tritonllm.kernels.common import check, next_pow2, store_split
from tritonllm.runtime.kernel import kernel


@dataclass(frozen=True)
class Norm:
    """The RMSNorm applied to a matmul's input: x * rsqrt(mean(x^2) + eps) * scale."""

    scale: torch.Tensor  # [H]
    eps: float


@triton.jit
def rstd(sum_sq, n, eps):
    """1 / rms of a row of n values whose squares sum to sum_sq."""
    return tl.rsqrt(sum_sq / n + eps)


@triton.jit
def normed_row(x_row_ptr, scale_ptr, H, eps, BLOCK_H: tl.constexpr):
    """One whole row of H values, RMSNorm'd in float32 [BLOCK_H] (zero past H)."""
    cols = tl.arange(0, BLOCK_H)
    x = tl.load(x_row_ptr + cols, mask=cols < H, other=0.0).to(tl.float32)
    scale = tl.load(scale_ptr + cols, mask=cols < H, other=0.0).to(tl.float32)
    return x * rstd(tl.sum(x * x, axis=0), H, eps) * scale


@kernel
def rmsnorm_kernel(x_ptr, scale_ptr, hi_ptr, lo_ptr, H, eps, BLOCK_H: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_H)
    store_split(hi_ptr, lo_ptr, row * H + cols, normed_row(x_ptr + row * H, scale_ptr, H, eps, BLOCK_H), cols < H)


def rmsnorm(x: torch.Tensor, norm: Norm) -> tuple[torch.Tensor, torch.Tensor]:
    """x [T, H] float32 -> the normed rows as bf16 (hi, lo) [T, H], hi + lo = the float32 result."""
    check(x.dim() == 2 and x.is_contiguous() and x.dtype == torch.float32, "rmsnorm: x must be contiguous float32 [T, H]")
    check(norm.scale.shape == (x.shape[1],), f"rmsnorm: scale must be [{x.shape[1]}]")
    T, H = x.shape
    hi, lo = torch.empty_like(x, dtype=torch.bfloat16), torch.empty_like(x, dtype=torch.bfloat16)
    rmsnorm_kernel[(T,)](x, norm.scale, hi, lo, H, norm.eps, BLOCK_H=next_pow2(H), num_warps=4)
    return hi, lo


def rmsnorm_reference(x: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    x = x.float()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * scale.float()
