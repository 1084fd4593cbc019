"""Dense matmul of activations with bf16 weights, fused RMSNorm, bias and residual:
out = norm(x) @ w.T + bias (+ residual). Float32 activations keep float32 accuracy (see `dot`).

Used for the QKV and output projections, the router gate and the unembedding. The weight
is stored as on disk, [N, K] row-major, so a tile of it is read along K contiguously.
With a residual, `out` may alias it: each element is read and then written by one program.
"""

import torch
import triton
import triton.language as tl

from tritonllm.kernels import tuning
from tritonllm.kernels.common import (
    cdiv, check, dependent_launch_args, dot, dot_f32, next_pow2, prefetch_l2, split_bf16, wait_for_inputs,
)
from tritonllm.kernels.rmsnorm import Norm, rmsnorm, rmsnorm_reference, rstd
from tritonllm.runtime.target import CPU, arch_of, small_shared_memory
from tritonllm.runtime.kernel import kernel


@kernel(dynamic=("M",))
def linear_kernel(
    x_ptr, x_lo_ptr, w_ptr, bias_ptr, res_ptr, out_ptr, M, N, K,
    HAS_LO: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, F32: tl.constexpr,
):
    """HAS_LO: x is float32 given as bf16 hi (x_ptr) + lo (x_lo_ptr) parts."""
    pid_m, pid_n = tl.program_id(0), tl.program_id(1)
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    m_ok, n_ok = rm < M, rn < N
    x_offs = rm[:, None].to(tl.int64) * K + rk[None, :]  # [BM, BK]
    w_ptrs = w_ptr + rn[:, None].to(tl.int64) * K + rk[None, :]  # [BN, BK]
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k in range(0, K, BK):
        k_ok = k + rk < K
        a = tl.load(x_ptr + x_offs, mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(w_ptrs, mask=n_ok[:, None] & k_ok[None, :], other=0.0)
        if HAS_LO:
            a_lo = tl.load(x_lo_ptr + x_offs, mask=m_ok[:, None] & k_ok[None, :], other=0.0)
            acc = dot(a_lo, tl.trans(b), acc, F32)
        acc = dot(a, tl.trans(b), acc, F32)
        x_offs += BK
        w_ptrs += BK
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    offs = rm[:, None].to(tl.int64) * N + rn[None, :]
    mask = m_ok[:, None] & n_ok[None, :]
    if HAS_RES:
        acc += tl.load(res_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def gemv_rows(x_ptr, w_ptr, norm_ptr, rows, r_ok, K, eps, NORM: tl.constexpr, BK: tl.constexpr):
    """W[rows] @ x for one activation row x [K] float32 and weight rows [BN] of w [*, K] bf16:
    float32 FMAs, K in chunks of BK. NORM: x is the raw residual and the RMSNorm (scale at
    norm_ptr) is applied on the way (see kernels.rmsnorm). Returns [BN] float32."""
    rk = tl.arange(0, BK)
    w_ptrs = w_ptr + rows[:, None].to(tl.int64) * K + rk[None, :]
    acc = tl.zeros((rows.shape[0], BK), dtype=tl.float32)
    sum_sq = tl.zeros((BK,), dtype=tl.float32)
    for k in range(0, K, BK):
        k_ok = k + rk < K
        x = tl.load(x_ptr + k + rk, mask=k_ok, other=0.0).to(tl.float32)
        if NORM:
            sum_sq += x * x
            x *= tl.load(norm_ptr + k + rk, mask=k_ok, other=0.0).to(tl.float32)
        w = tl.load(w_ptrs, mask=r_ok[:, None] & k_ok[None, :], other=0.0)
        acc += w.to(tl.float32) * x[None, :]
        w_ptrs += BK
    out = tl.sum(acc, axis=1)
    if NORM:
        out *= rstd(tl.sum(sum_sq, axis=0), K, eps)
    return out


@triton.jit
def prefetch_first_chunks(w_ptr, rows, r_ok, K, BK: tl.constexpr):
    """L2 prefetch of the first two BK chunks of weight rows [BN] of w [*, K] bf16 (one per
    128-byte line): what `gemv_rows` loads first. H100, 20b decode at 128 tokens (note 39): none
    529 tok/s, one chunk 538, two 544, four 529, a program's whole rows 1% below none: more
    competes with the previous kernel's tail."""
    c = tl.arange(0, 2 * BK // 64) * 64
    prefetch_l2(w_ptr + rows[:, None].to(tl.int64) * K + c[None, :], r_ok[:, None] & (c < K)[None, :])


@kernel
def linear_gemv_kernel(
    x_ptr, w_ptr, bias_ptr, res_ptr, norm_ptr, out_ptr, N, K, eps,
    HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, NORM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
    PDL: tl.constexpr,
):
    """One activation row (decode), BN weight rows per program (see `gemv_rows`). PDL (see
    `wait_for_inputs`): the first chunks' weights are prefetched into L2 before the wait. (Loading
    that chunk into registers and the rest one step ahead was slower: 0.99 -> 1.05 ms per step.)"""
    rn = tl.program_id(0) * BN + tl.arange(0, BN)
    n_ok = rn < N
    if PDL:
        prefetch_first_chunks(w_ptr, rn, n_ok, K, BK)
    wait_for_inputs(PDL)
    out = gemv_rows(x_ptr, w_ptr, norm_ptr, rn, n_ok, K, eps, NORM, BK)
    if HAS_BIAS:
        out += tl.load(bias_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)
    if HAS_RES:
        out += tl.load(res_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)
    tl.store(out_ptr + rn, out.to(out_ptr.dtype.element_ty), mask=n_ok)


def gemv_tile(arch: int, N: int, K: int) -> dict:
    """BN, BK, num_warps of the decode GEMV: tuned on GPUs; the interpreter pays per program,
    so it gets whole matrices."""
    if arch == CPU:
        return {"BN": min(4096, next_pow2(N)), "BK": min(256, next_pow2(K)), "num_warps": 4}
    return tuning.config("linear_gemv", arch)


def prefill_tile(M: int, N: int, K: int, arch: int) -> dict:
    """BM, BN, BK, num_warps of `linear_kernel`. The interpreter pays per program, so it gets big
    tiles; GPUs with ~100 KB of shared memory per block get tiles whose 3 pipeline stages fit in
    it. The routers' 32 or 128 outputs get 16 x 64 tiles, many programs streaming the input (H100
    at 2,048 rows: 43 -> 22 us, 49 -> 26 us, note 20). Other shapes: the H100 sweep by rows of
    `tools/bench_linear.py` (note 31): a prefill of a few hundred rows has too few 128 x 256
    tiles to fill the GPU, and is bound by each program's chain of K steps."""
    if arch == CPU:
        BM, BN, BK, warps = min(64, max(16, next_pow2(M))), min(4096, next_pow2(N)), min(256, next_pow2(K)), 4
    elif N <= 128:
        BM, BN, BK, warps = 16, min(64, max(16, next_pow2(N))), 128, 4
    elif M <= 16:
        BM, BN, BK, warps = 16, 64, 128, 4
    elif small_shared_memory(arch):
        BM, BN, BK, warps = 64, 128, 64, 4
    elif M <= 64:
        BM, BN, BK, warps = 64, 64, 128, 4
    elif M <= 128:
        BM, BN, BK, warps = 128, 64, 64, 8
    elif M <= 256 or (M <= 512 and N < 4096):
        BM, BN, BK, warps = 64, 64, 64, 4
    else:  # 128 x 256 from 2,048 rows for wide outputs only (QKV 234 -> 210 us; out projection even)
        BM, BN, BK, warps = 128, 256 if M <= 1024 or N >= 4096 else 128, 64, 8
    return {"BM": BM, "BN": BN, "BK": BK, "num_warps": warps}


def linear(
    x: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
    w: torch.Tensor,
    bias: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.float32,
    norm: Norm | None = None,
    tile: dict | None = None,
) -> torch.Tensor:
    """x [M, K] float32 or bf16, or float32 given as its split_bf16 parts (hi, lo); w [N, K] bf16,
    bias [N], residual [M, N] -> out [M, N] (`out_dtype`, or the residual's dtype; pass
    out=residual to accumulate in place). With `norm`, the input is norm(x) (x float32).
    `tile` overrides `prefill_tile` for the tensor-core kernel (tile sweeps; a single float32
    row without split parts takes the tuned matrix-vector kernel instead)."""
    x, x_lo = x if isinstance(x, tuple) else (x, None)
    check(x.dim() == 2 and w.dim() == 2 and x.shape[1] == w.shape[1], f"linear: x {list(x.shape)} @ w {list(w.shape)}.T")
    check(x.is_contiguous() and w.is_contiguous(), "linear: x and w must be contiguous")
    check(x_lo is None or (x_lo.shape == x.shape and x_lo.is_contiguous() and x.dtype == x_lo.dtype == torch.bfloat16),
          "linear: split parts of x must be two contiguous bf16 [M, K]")
    M, K = x.shape
    N = w.shape[0]
    check(bias is None or bias.shape == (N,), "linear: bias must be [N]")
    check(residual is None or (residual.shape == (M, N) and residual.is_contiguous()), "linear: residual must be [M, N]")
    check(norm is None or (x.dtype == torch.float32 and norm.scale.shape == (K,)),
          f"linear: norm needs float32 x and a scale [{K}]")
    if out is None:
        out = torch.empty(M, N, dtype=residual.dtype if residual is not None else out_dtype, device=x.device)
    bias_arg, res_arg = bias if bias is not None else x, residual if residual is not None else out
    if M == 1 and x_lo is None:  # decode: a matrix-vector product, bound by streaming the weight
        arch = arch_of(x)
        gemv = gemv_tile(arch, N, K)
        linear_gemv_kernel[(cdiv(N, gemv["BN"]),)](
            x, w, bias_arg, res_arg, x if norm is None else norm.scale, out, N, K, 0.0 if norm is None else norm.eps,
            HAS_BIAS=bias is not None, HAS_RES=residual is not None, NORM=norm is not None,
            **gemv, **dependent_launch_args(arch),
        )
        return out
    tile = tile or prefill_tile(M, N, K, arch_of(x))
    grid = (cdiv(M, tile["BM"]), cdiv(N, tile["BN"]))
    # Split float32 x into bf16 hi + lo once, not in each of the N/BN programs that read it.
    if norm is not None:
        x, x_lo = rmsnorm(x, norm)
    elif x.dtype == torch.float32:
        x, x_lo = split_bf16(x)
    linear_kernel[grid](
        x, x if x_lo is None else x_lo, w, bias_arg, res_arg, out, M, N, K,
        HAS_LO=x_lo is not None, HAS_BIAS=bias is not None, HAS_RES=residual is not None, F32=dot_f32(x), **tile,
    )
    return out


def linear_reference(x, w, bias=None, residual=None, norm: Norm | None = None) -> torch.Tensor:
    if norm is not None:
        x = rmsnorm_reference(x, norm.scale, norm.eps)
    out = x.float() @ w.float().T
    if bias is not None:
        out = out + bias.float()
    if residual is not None:
        out = out + residual.float()
    return out
