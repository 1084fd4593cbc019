"""RoPE on q and k straight out of the QKV projection, writing k and v into the KV cache.

One program per token rotates all its q heads and kv heads. gpt-oss rotates the first half
of each head against the second half (not interleaved pairs).
"""

import torch
import triton
import triton.language as tl

from tritonllm.kernels.common import check, next_pow2
from tritonllm.runtime.kernel import kernel


@triton.jit
def _rotate(src_ptr, dst_ptr, n_heads, cos, sin, D: tl.constexpr, BH: tl.constexpr, BLOCK_HALF: tl.constexpr):
    """Rotate n_heads contiguous heads of size D from src to dst; cos/sin [BLOCK_HALF]."""
    h = tl.arange(0, BH)
    i = tl.arange(0, BLOCK_HALF)
    mask = (h < n_heads)[:, None] & (i < D // 2)[None, :]
    offs = (h * D)[:, None] + i[None, :]  # [BH, HALF]: first half of each head
    x1 = tl.load(src_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(src_ptr + offs + D // 2, mask=mask, other=0.0).to(tl.float32)
    ty = dst_ptr.dtype.element_ty
    tl.store(dst_ptr + offs, (x1 * cos[None, :] - x2 * sin[None, :]).to(ty), mask=mask)
    tl.store(dst_ptr + offs + D // 2, (x2 * cos[None, :] + x1 * sin[None, :]).to(ty), mask=mask)


@kernel
def rope_qkv_kernel(
    qkv_ptr, pos_ptr, inv_freq_ptr, q_ptr, k_cache_ptr, v_cache_ptr, concentration, NH, KVH,
    D: tl.constexpr, BQ: tl.constexpr, BKV: tl.constexpr, BLOCK_HALF: tl.constexpr,
):
    t = tl.program_id(0).to(tl.int64)
    i = tl.arange(0, BLOCK_HALF)
    pos = tl.load(pos_ptr + t).to(tl.int64)
    angle = pos.to(tl.float32) * tl.load(inv_freq_ptr + i, mask=i < D // 2, other=0.0)
    cos = tl.cos(angle) * concentration
    sin = tl.sin(angle) * concentration
    row = qkv_ptr + t * (NH + 2 * KVH) * D  # [q heads | k heads | v heads]
    _rotate(row, q_ptr + t * NH * D, NH, cos, sin, D, BQ, BLOCK_HALF)
    _rotate(row + NH * D, k_cache_ptr + pos * KVH * D, KVH, cos, sin, D, BKV, BLOCK_HALF)
    j = tl.arange(0, BKV * D)
    tl.store(v_cache_ptr + pos * KVH * D + j, tl.load(row + (NH + KVH) * D + j, mask=j < KVH * D), mask=j < KVH * D)


def rope_qkv(
    qkv: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor, concentration: float,
    k_cache: torch.Tensor, v_cache: torch.Tensor, num_heads: int, q: torch.Tensor | None = None,
) -> torch.Tensor:
    """qkv [T, (NH + 2 KVH) * D] bf16, positions [T] int32, inv_freq [D/2] float32,
    k_cache/v_cache [ctx, KVH, D]. Returns rotated q [T, NH, D]; rotated k and v land in the
    caches at `positions`."""
    T = qkv.shape[0]
    ctx, KVH, D = k_cache.shape
    check(qkv.shape[1] == (num_heads + 2 * KVH) * D and qkv.is_contiguous(), "rope_qkv: qkv width mismatch")
    check(positions.shape == (T,) and inv_freq.shape == (D // 2,), "rope_qkv: bad positions/inv_freq")
    check(v_cache.shape == k_cache.shape and k_cache.is_contiguous() and v_cache.is_contiguous(), "rope_qkv: bad caches")
    check(D & (D - 1) == 0, f"rope_qkv: head_dim {D} must be a power of two")
    if q is None:
        q = torch.empty(T, num_heads, D, dtype=qkv.dtype, device=qkv.device)
    rope_qkv_kernel[(T,)](
        qkv, positions, inv_freq, q, k_cache, v_cache, concentration, num_heads, KVH,
        D=D, BQ=next_pow2(num_heads), BKV=next_pow2(KVH), BLOCK_HALF=next_pow2(D // 2), num_warps=4,
    )
    return q


def rope_reference(x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor, concentration: float) -> torch.Tensor:
    """x [T, heads, D] -> rotated, float32."""
    angle = positions.float()[:, None] * inv_freq.float()[None, :]
    cos, sin = (angle.cos() * concentration)[:, None, :], (angle.sin() * concentration)[:, None, :]
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
