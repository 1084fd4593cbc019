"""Small @triton.jit helpers shared by several kernels, and launch-side utilities."""

import torch
import triton
import triton.language as tl

from tritonllm.runtime.target import CPU, arch_of, dependent_launch

LOG2E = tl.constexpr(1.4426950408889634)  # log2(e): softmaxes run on exp2 (launchers: LOG2E.value)


@triton.jit
def _split_bf16(x):
    """float32 x = hi + lo with hi, lo bf16: hi + lo carries 16 mantissa bits of x."""
    hi = x.to(tl.bfloat16)
    return hi, (x - hi.to(tl.float32)).to(tl.bfloat16)


@triton.jit
def last_to_arrive(count_ptr, programs):
    """Count this program in *count_ptr once every thread's stores are done; True in the last
    of `programs` to arrive, which then sees all their stores (acq_rel atomic, GPU scope; read
    them with .cg loads, as this SM's L1 may hold an older call's) and must reset the count."""
    tl.debug_barrier()
    return tl.atomic_add(count_ptr, 1) == programs - 1


@triton.jit
def prefetch_l2(ptrs, mask):
    """Ask L2 for the lines at ptrs (where mask); holds no register and does not wait. GPU only
    (PTX): dependent kernels call it under `if PDL:` for their first step's weights before
    `wait_for_inputs`, so those bytes arrive under the previous kernel's tail."""
    tl.inline_asm_elementwise(
        "{ .reg .pred p; setp.ne.s32 p, $2, 0; @p prefetch.global.L2 [$1]; mov.u32 $0, 0; }", "=r,l,r",
        [ptrs, mask.to(tl.int32)], dtype=tl.int32, is_pure=False, pack=1,
    )


@triton.jit
def dot(a, b, acc, F32: tl.constexpr):
    """acc + a @ b at float32 accuracy on bf16 tensor cores.

    A float32 operand is split into bf16 hi + lo parts and the partial products are
    summed (hi*hi + hi*lo + lo*hi; lo*lo is below float32 rounding of the sum); a bf16
    operand (a weight, exact) needs no split. Activations stay float32 end to end because
    rounding them to bf16 anywhere moves a 24-layer MoE measurably (routing flips; see
    docs/performance.md). F32 (CPU interpreter) does the dot in float32 directly: Triton
    3.6's interpreter returns garbage for bf16 operands.
    """
    if F32:
        acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc)
    elif a.dtype == tl.float32:
        a_hi, a_lo = _split_bf16(a)
        if b.dtype == tl.float32:
            b_hi, b_lo = _split_bf16(b)
            acc = tl.dot(a_lo, b_hi, acc)
            acc = tl.dot(a_hi, b_lo, acc)
            acc = tl.dot(a_hi, b_hi, acc)
        else:
            acc = tl.dot(a_lo, b, acc)
            acc = tl.dot(a_hi, b, acc)
    elif b.dtype == tl.float32:
        b_hi, b_lo = _split_bf16(b)
        acc = tl.dot(a, b_lo, acc)
        acc = tl.dot(a, b_hi, acc)
    else:
        acc = tl.dot(a, b, acc)
    return acc


@triton.jit
def wait_for_inputs(PDL: tl.constexpr):
    """PDL: this kernel was launched as a programmatic dependent (`target.dependent_launch`), so
    it may be running while the kernel before it finishes. Wait here for that kernel's outputs
    (everything earlier may read only weights), then let the next kernel start launching."""
    if PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()


@triton.jit
def store_split(ptr_hi, ptr_lo, offs, x, mask):
    """Store float32 x as its bf16 hi + lo parts: the inputs of matmuls that multiply them
    separately (so the split happens once, not in every program that reads x)."""
    hi, lo = _split_bf16(x)
    tl.store(ptr_hi + offs, hi, mask=mask)
    tl.store(ptr_lo + offs, lo, mask=mask)


def split_bf16(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 x -> (hi, lo) bf16 with hi + lo = x to 16 mantissa bits (see common.dot), rounded
    as `_split_bf16` does (to nearest even). The model's kernels store their outputs split where a
    matmul reads them (`store_split`), so this serves only launcher calls with a plain float32
    input (no norm), off the model's path."""
    check(x.dtype == torch.float32 and x.is_contiguous(), "split_bf16: x must be contiguous float32")
    hi = x.to(torch.bfloat16)
    return hi, (x - hi.float()).to(torch.bfloat16)


def dot_f32(t: torch.Tensor) -> bool:
    """The `F32` flag of `dot` for kernels running on `t`'s device."""
    return arch_of(t) == CPU


def dependent_launch_args(arch: int) -> dict:
    """Launch options of a kernel that calls `wait_for_inputs`: its PDL flag and, where the GPU
    has it, Triton's launch option for a programmatic dependent launch."""
    return {"PDL": True, "launch_pdl": True} if dependent_launch(arch) else {"PDL": False}


def on_gpu(t: torch.Tensor) -> bool:
    return arch_of(t) != CPU


def check(cond: bool, message: str) -> None:
    """Launcher argument check: a clear ValueError instead of a wrong result or a crash."""
    if not cond:
        raise ValueError(message)


# The launchers' integer helpers. triton.cdiv and triton.next_power_of_2 are constexpr
# functions, whose wrapper costs ~2-4 us per call from host code: ~1,000 calls per prefill.
def cdiv(a: int, b: int) -> int:
    return -(a // -b)


def next_pow2(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1)."""
    return 1 << max(n - 1, 0).bit_length()
