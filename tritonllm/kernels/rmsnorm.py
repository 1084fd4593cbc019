"""RMSNorm in float32 over the float32 residual stream, writing the next matmul's input.

The residual adds themselves are fused into the epilogues of the matmuls that produce them
(attention output projection, MoE combine), so this kernel only reads x once.
"""

import torch
import triton.language as tl

from tritonllm.kernels.common import check, next_pow2
from tritonllm.runtime.kernel import kernel


@kernel
def rmsnorm_kernel(x_ptr, scale_ptr, out_ptr, H, eps, BLOCK_H: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_H)
    mask = cols < H
    x = tl.load(x_ptr + row * H + cols, mask=mask, other=0.0).to(tl.float32)  # [H]
    rstd = tl.rsqrt(tl.sum(x * x, axis=0) / H + eps)
    scale = tl.load(scale_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * H + cols, (x * rstd * scale).to(out_ptr.dtype.element_ty), mask=mask)


def rmsnorm(
    x: torch.Tensor, scale: torch.Tensor, eps: float, out: torch.Tensor | None = None, out_dtype=torch.float32
) -> torch.Tensor:
    """x [T, H] float32, scale [H] -> out [T, H] (float32 unless told otherwise)."""
    check(x.dim() == 2 and x.is_contiguous() and scale.shape == (x.shape[1],), "rmsnorm: bad shapes")
    T, H = x.shape
    if out is None:
        out = torch.empty(T, H, dtype=out_dtype, device=x.device)
    rmsnorm_kernel[(T,)](x, scale, out, H, eps, BLOCK_H=next_pow2(H), num_warps=4)
    return out


def rmsnorm_reference(x: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    x = x.float()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * scale.float()
