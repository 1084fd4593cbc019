"""RoPE on q and k straight out of the QKV projection, and the KV cache writes.

gpt-oss rotates the first half of each head against the second half (not interleaved
pairs). Prefill: `rope_qkv`, one program per token, rotates all its q and k heads. Decode:
`qkv_rope_decode` is the QKV matrix-vector product itself, rotating in its epilogue.

The KV cache of a layer is [rows, KVH, D]: position p sits at row p % rows. A full layer has
rows = context length (so row p); a sliding layer keeps only its window, a ring of
rows = min(window, context length). Writing position p into a ring overwrites p - rows, which
the query at p no longer sees; but a prefill chunk's later positions would overwrite keys
that its own earlier queries still read. Hence:
- decode (one token): qkv_rope_decode writes the token's k and v into the cache before attention;
- prefill: rope_qkv only returns the chunk's k and v, attention reads them from there, and
  kv_store writes the chunk into the cache after attention.
"""

import torch
import triton
import triton.language as tl

from tritonllm.kernels import tuning
from tritonllm.kernels.common import check, dependent_launch_args, next_pow2, wait_for_inputs
from tritonllm.kernels.linear import gemv_rows, gemv_tile, prefetch_first_chunks
from tritonllm.kernels.rmsnorm import Norm
from tritonllm.runtime.kernel import kernel
from tritonllm.runtime.target import CPU, arch_of


@triton.jit
def _cos_sin(pos_ptr, inv_freq_ptr, i, mask, concentration):
    """cos and sin (times the YaRN concentration) of the rotation angles pos * inv_freq[i]."""
    angle = tl.load(pos_ptr).to(tl.float32) * tl.load(inv_freq_ptr + i, mask=mask, other=0.0)
    return tl.cos(angle) * concentration, tl.sin(angle) * concentration


@triton.jit
def _rotate_pair(x1, x2, cos, sin):
    """RoPE of the (first half, second half) values of a head."""
    return x1 * cos - x2 * sin, x2 * cos + x1 * sin


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
    y1, y2 = _rotate_pair(x1, x2, cos[None, :], sin[None, :])
    return y1, y2, offs, mask


@triton.jit
def _store_halves(dst_ptr, y1, y2, offs, mask, D: tl.constexpr):
    ty = dst_ptr.dtype.element_ty
    tl.store(dst_ptr + offs, y1.to(ty), mask=mask)
    tl.store(dst_ptr + offs + D // 2, y2.to(ty), mask=mask)


@kernel
def rope_qkv_kernel(
    qkv_ptr, pos_ptr, inv_freq_ptr, q_ptr, k_ptr, v_ptr, concentration, NH, KVH,
    D: tl.constexpr, BQ: tl.constexpr, BKV: tl.constexpr, BLOCK_HALF: tl.constexpr,
):
    t = tl.program_id(0).to(tl.int64)
    i = tl.arange(0, BLOCK_HALF)
    cos, sin = _cos_sin(pos_ptr + t, inv_freq_ptr, i, i < D // 2, concentration)
    row = qkv_ptr + t * (NH + 2 * KVH) * D  # [q heads | k heads | v heads]
    q1, q2, offs, mask = _rotate(row, NH, cos, sin, D, BQ, BLOCK_HALF)
    _store_halves(q_ptr + t * NH * D, q1, q2, offs, mask, D)
    k1, k2, offs, mask = _rotate(row + NH * D, KVH, cos, sin, D, BKV, BLOCK_HALF)
    _store_halves(k_ptr + t * KVH * D, k1, k2, offs, mask, D)
    j = tl.arange(0, BKV * D)
    v = tl.load(row + (NH + KVH) * D + j, mask=j < KVH * D)
    tl.store(v_ptr + t * KVH * D + j, v, mask=j < KVH * D)


def rope_qkv(
    qkv: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor, concentration: float, num_heads: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prefill: qkv [T, (NH + 2 KVH) * D] float32 or bf16, positions [T] int32, inv_freq [D/2]
    float32. Returns rotated q [T, NH, D] in qkv's dtype and rotated k and v [T, KVH, D] float32."""
    T = qkv.shape[0]
    D = inv_freq.shape[0] * 2
    KVH = (qkv.shape[1] // D - num_heads) // 2
    check(qkv.dim() == 2 and qkv.is_contiguous(), "rope_qkv: qkv must be a contiguous [T, (NH + 2 KVH) * D] tensor")
    check(KVH > 0 and qkv.shape[1] == (num_heads + 2 * KVH) * D, "rope_qkv: qkv width mismatch")
    check(positions.shape == (T,), "rope_qkv: positions must be [T]")
    check(D & (D - 1) == 0, f"rope_qkv: head_dim {D} must be a power of two")
    q = torch.empty(T, num_heads, D, dtype=qkv.dtype, device=qkv.device)
    k = torch.empty(T, KVH, D, dtype=torch.float32, device=qkv.device)
    v = torch.empty(T, KVH, D, dtype=torch.float32, device=qkv.device)
    rope_qkv_kernel[(T,)](
        qkv, positions, inv_freq, q, k, v, concentration, num_heads, KVH,
        D=D, BQ=next_pow2(num_heads), BKV=next_pow2(KVH), BLOCK_HALF=next_pow2(D // 2), num_warps=4,
    )
    return q, k, v


@kernel(dynamic=("cache_rows",))
def qkv_rope_decode_kernel(
    x_ptr, w_ptr, bias_ptr, norm_ptr, pos_ptr, inv_freq_ptr, q_ptr, k_cache_ptr, v_cache_ptr,
    K, eps, cache_rows, concentration, NH, KVH,
    D: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, PDL: tl.constexpr,
):
    """Decode's whole attention input in one launch: qkv = W @ norm(x) + b (see `gemv_rows`),
    q and k rotated, q stored, k and v written into the caches at row pos % rows.

    A program takes BN/2 rows of a head's first half and the BN/2 rows D/2 further (the
    pairs RoPE rotates together), so the rotation happens in registers."""
    HB: tl.constexpr = BN // 2
    pid = tl.program_id(0)
    head = pid // (D // 2 // HB)  # of all NH + 2 KVH heads: q, then k, then v
    i0 = pid % (D // 2 // HB) * HB
    i = i0 + tl.arange(0, HB)  # positions in the first half
    j = tl.arange(0, BN)
    rows = head * D + (j % 2) * (D // 2) + i0 + j // 2  # i and i + D/2, interleaved
    r_ok = rows < (NH + 2 * KVH) * D
    if PDL:  # the first chunks' weights into L2 while the previous kernel finishes
        prefetch_first_chunks(w_ptr, rows, r_ok, K, BK)
    wait_for_inputs(PDL)
    out = gemv_rows(x_ptr, w_ptr, norm_ptr, rows, r_ok, K, eps, True, BK)
    out += tl.load(bias_ptr + rows).to(tl.float32)
    x1, x2 = tl.split(tl.reshape(out, [HB, 2]))
    if head < NH + KVH:  # q and k are rotated, v is not
        cos, sin = _cos_sin(pos_ptr, inv_freq_ptr, i, i < D // 2, concentration)
        x1, x2 = _rotate_pair(x1, x2, cos, sin)
    y = tl.reshape(tl.join(x1, x2), [BN])
    slot = tl.load(pos_ptr).to(tl.int64) % cache_rows
    if head < NH:
        tl.store(q_ptr + rows, y)
    elif head < NH + KVH:
        tl.store(k_cache_ptr + slot * KVH * D + rows - NH * D, y)
    else:
        tl.store(v_cache_ptr + slot * KVH * D + rows - (NH + KVH) * D, y)


def qkv_rope_decode(
    x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, norm: Norm, pos: torch.Tensor, inv_freq: torch.Tensor,
    concentration: float, num_heads: int, k_cache: torch.Tensor, v_cache: torch.Tensor, tile: dict | None = None,
) -> torch.Tensor:
    """One token's residual x [1, K] float32 at the position held in `pos` [1] int32 (on the
    device): qkv = w @ norm(x) + bias (w [(NH + 2 KVH) * D, K] bf16), rotated q returned
    [1, NH, D] float32, k and v written into the caches [rows, KVH, D] at row pos % rows.
    `tile` (BN, BK, num_warps) defaults to the tuned one (build_kernels --tune)."""
    D = inv_freq.shape[0] * 2
    N, K = w.shape
    KVH = (N // D - num_heads) // 2
    check(x.shape == (1, K) and x.dtype == torch.float32 and x.is_contiguous(), f"qkv_rope_decode: x must be [1, {K}]")
    check(KVH > 0 and N == (num_heads + 2 * KVH) * D and w.is_contiguous(), "qkv_rope_decode: weight rows mismatch")
    check(bias.shape == (N,) and norm.scale.shape == (K,) and pos.numel() == 1, "qkv_rope_decode: bias, norm or pos")
    _check_caches(k_cache, v_cache, KVH, D, "qkv_rope_decode")
    arch = arch_of(x)
    tile = dict(tile or (gemv_tile(arch, N, K) if arch == CPU else tuning.config("qkv_rope_decode", arch)))
    tile["BN"] = max(2, min(tile["BN"], D))  # row pairs within one head
    q = torch.empty(1, num_heads, D, dtype=torch.float32, device=x.device)
    qkv_rope_decode_kernel[(N // tile["BN"],)](
        x, w, bias, norm.scale, pos, inv_freq, q, k_cache, v_cache, K, norm.eps, k_cache.shape[0], concentration,
        num_heads, KVH, D=D, **tile, **dependent_launch_args(arch),
    )
    return q


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
