"""Small @triton.jit helpers shared by several kernels, and launch-side utilities."""

import torch
import triton
import triton.language as tl


@triton.jit
def dot(a, b, acc, F32: tl.constexpr):
    """acc + a @ b. F32 upcasts the operands first: Triton 3.6's CPU interpreter returns
    garbage for bf16 operands, so launchers set it for CPU tensors."""
    if F32:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc)


def dot_f32(t: torch.Tensor) -> bool:
    """The `F32` flag of `dot` for kernels running on `t`'s device."""
    return t.device.type == "cpu"


def check(cond: bool, message: str) -> None:
    """Launcher argument check: a clear ValueError instead of a wrong result or a crash."""
    if not cond:
        raise ValueError(message)


def next_pow2(n: int) -> int:
    return triton.next_power_of_2(n)
