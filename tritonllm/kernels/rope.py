"""RoPE on q and k straight out of the QKV projection, and the KV cache writes.

One program per token rotates all its q heads and kv heads. gpt-oss rotates the first half
of each head against the second half (not interleaved pairs).

The KV cache of a layer is [rows, KVH, D]: position p sits at row p % rows. A full layer has
rows = context length (so row p); a sliding layer keeps only its window, a ring of
rows = min(window, context length). Writing position p into a ring overwrites p - rows, which
the query at p no longer sees; but a prefill chunk's later positions would overwrite keys
that its own earlier queries still read. Hence:
- decode (one token): rope_qkv writes the token's k and v into the cache before attention;
- prefill: rope_qkv only returns the chunk's k and v, attention reads them from there, and
  kv_store writes the chunk into the cache after attention.
"""

import torch
import triton
import triton.language as tl

from tritonllm.kernels.common import check, next_pow2
from tritonllm.runtime.kernel import kernel


@triton.jit
def _rotate(src_ptr, n_heads, cos, sin, D: tl.constexpr, BH: tl.constexpr, BLOCK_HALF: tl.constexpr):
    """Rotate n_heads contiguous heads of size D at src; cos/sin [BLOCK_HALF]. Returns the
    rotated first and second halves [BH, BLOCK_HALF], their offsets in a head row and the mask."""
    h = tl.arange(0, BH)
    i = tl.arange(0, BLOCK_HALF)
    mask = (h < n_heads)[:, None] & (i < D // 2)[None, :]
    offs = (h * D)[:, None] + i[None, :]  # [BH, HALF]: first half of each head
    x1 = tl.load(src_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(src_ptr + offs + D // 2, mask=mask, other=0.0).to(tl.float32)
    return x1 * cos[None, :] - x2 * sin[None, :], x2 * cos[None, :] + x1 * sin[None, :], offs, mask


@triton.jit
def _store_halves(dst_ptr, y1, y2, offs, mask, D: tl.constexpr):
    ty = dst_ptr.dtype.element_ty
    tl.store(dst_ptr + offs, y1.to(ty), mask=mask)
    tl.store(dst_ptr + offs + D // 2, y2.to(ty), mask=mask)


@kernel(dynamic=("rows",))
def rope_qkv_kernel(
    qkv_ptr, pos_ptr, inv_freq_ptr, q_ptr, k_ptr, v_ptr, k_cache_ptr, v_cache_ptr, rows, concentration, NH, KVH,
    D: tl.constexpr, BQ: tl.constexpr, BKV: tl.constexpr, BLOCK_HALF: tl.constexpr, STORE: tl.constexpr,
):
    t = tl.program_id(0).to(tl.int64)
    i = tl.arange(0, BLOCK_HALF)
    pos = tl.load(pos_ptr + t).to(tl.int64)
    angle = pos.to(tl.float32) * tl.load(inv_freq_ptr + i, mask=i < D // 2, other=0.0)
    cos = tl.cos(angle) * concentration
    sin = tl.sin(angle) * concentration
    row = qkv_ptr + t * (NH + 2 * KVH) * D  # [q heads | k heads | v heads]
    q1, q2, offs, mask = _rotate(row, NH, cos, sin, D, BQ, BLOCK_HALF)
    _store_halves(q_ptr + t * NH * D, q1, q2, offs, mask, D)
    k1, k2, offs, mask = _rotate(row + NH * D, KVH, cos, sin, D, BKV, BLOCK_HALF)
    _store_halves(k_ptr + t * KVH * D, k1, k2, offs, mask, D)
    j = tl.arange(0, BKV * D)
    v = tl.load(row + (NH + KVH) * D + j, mask=j < KVH * D)
    tl.store(v_ptr + t * KVH * D + j, v, mask=j < KVH * D)
    if STORE:  # decode: the slot is computed here, from the position on the device (CUDA graphs)
        slot = pos % rows
        _store_halves(k_cache_ptr + slot * KVH * D, k1, k2, offs, mask, D)
        tl.store(v_cache_ptr + slot * KVH * D + j, v, mask=j < KVH * D)


def rope_qkv(
    qkv: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor, concentration: float, num_heads: int,
    k_cache: torch.Tensor | None = None, v_cache: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """qkv [T, (NH + 2 KVH) * D] float32 or bf16, positions [T] int32, inv_freq [D/2] float32.
    Returns rotated q [T, NH, D] in qkv's dtype and rotated k and v [T, KVH, D] float32. With
    caches [rows, KVH, D] float32 (decode: T = 1), k and v also land at row position % rows."""
    T = qkv.shape[0]
    D = inv_freq.shape[0] * 2
    KVH = (qkv.shape[1] // D - num_heads) // 2
    check(qkv.dim() == 2 and qkv.is_contiguous(), "rope_qkv: qkv must be a contiguous [T, (NH + 2 KVH) * D] tensor")
    check(KVH > 0 and qkv.shape[1] == (num_heads + 2 * KVH) * D, "rope_qkv: qkv width mismatch")
    check(positions.shape == (T,), "rope_qkv: positions must be [T]")
    check(D & (D - 1) == 0, f"rope_qkv: head_dim {D} must be a power of two")
    store = k_cache is not None
    if store:
        check(T == 1, "rope_qkv: the caches take one token (decode); "
                      "a prefill chunk is stored by kv_store after attention")
        _check_caches(k_cache, v_cache, KVH, D, "rope_qkv")
    q = torch.empty(T, num_heads, D, dtype=qkv.dtype, device=qkv.device)
    k = torch.empty(T, KVH, D, dtype=torch.float32, device=qkv.device)
    v = torch.empty(T, KVH, D, dtype=torch.float32, device=qkv.device)
    rows = k_cache.shape[0] if store else 1  # unused without caches
    rope_qkv_kernel[(T,)](
        qkv, positions, inv_freq, q, k, v, k_cache if store else k, v_cache if store else v, rows, concentration,
        num_heads, KVH, D=D, BQ=next_pow2(num_heads), BKV=next_pow2(KVH), BLOCK_HALF=next_pow2(D // 2),
        STORE=store, num_warps=4,
    )
    return q, k, v


@kernel(dynamic=("T", "rows"))
def kv_store_kernel(k_ptr, v_ptr, pos_ptr, k_cache_ptr, v_cache_ptr, T, rows, KVD, BLOCK: tl.constexpr):
    # Only the chunk's last `rows` tokens survive in the cache, so each row is written once.
    t = tl.program_id(0) + tl.maximum(T - rows, 0)
    slot = tl.load(pos_ptr + t) % rows
    j = tl.arange(0, BLOCK)
    ok = j < KVD
    tl.store(k_cache_ptr + slot * KVD + j, tl.load(k_ptr + t * KVD + j, mask=ok), mask=ok)
    tl.store(v_cache_ptr + slot * KVD + j, tl.load(v_ptr + t * KVD + j, mask=ok), mask=ok)


def kv_store(
    k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor
) -> None:
    """Write a chunk's k and v [T, KVH, D] at consecutive `positions` [T] int32 into the caches
    [rows, KVH, D] at row position % rows; where T > rows only the last rows positions stay."""
    T, KVH, D = k.shape
    check(v.shape == k.shape and k.is_contiguous() and v.is_contiguous(),
          "kv_store: k and v must be contiguous [T, KVH, D]")
    check(positions.shape == (T,), "kv_store: positions must be [T]")
    _check_caches(k_cache, v_cache, KVH, D, "kv_store")
    check(k.dtype == k_cache.dtype, "kv_store: k and the cache must share a dtype")
    rows = k_cache.shape[0]
    kv_store_kernel[(min(T, rows),)](
        k, v, positions, k_cache, v_cache, T, rows, KVH * D, BLOCK=next_pow2(KVH * D), num_warps=4,
    )


def _check_caches(k_cache: torch.Tensor, v_cache: torch.Tensor, KVH: int, D: int, name: str) -> None:
    check(k_cache.dim() == 3 and k_cache.shape[1:] == (KVH, D) and v_cache.shape == k_cache.shape,
          f"{name}: caches must be [rows, {KVH}, {D}]")
    check(k_cache.is_contiguous() and v_cache.is_contiguous(), f"{name}: caches must be contiguous")
    check(k_cache.dtype == torch.float32 and v_cache.dtype == torch.float32, f"{name}: caches must be float32")


def rope_reference(x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor, concentration: float) -> torch.Tensor:
    """x [T, heads, D] -> rotated, float32."""
    angle = positions.float()[:, None] * inv_freq.float()[None, :]
    cos, sin = (angle.cos() * concentration)[:, None, :], (angle.sin() * concentration)[:, None, :]
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
