"""Which machine a launch targets: 0 for the CPU (Triton's interpreter), else the CUDA compute
capability as an int (80, 86, 89, 90, 120, ...). Launchers pick tile shapes from it.

Meta tensors (shapes without data) report the architecture being traced, so `build_kernels`
can run the model's launchers for any GPU on a CPU-only machine and record what they launch.
"""

from __future__ import annotations

import contextlib
import functools
from contextvars import ContextVar

import torch

CPU = 0
ARCHS = (80, 86, 89, 90, 120)  # the architectures cubins are built for
# Largest shared memory one block may use (bytes), per architecture.
MAX_SHARED = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024, 120: 99 * 1024}

_traced_arch: ContextVar[int | None] = ContextVar("traced_arch", default=None)


@functools.cache
def _capability(index: int) -> int:
    major, minor = torch.cuda.get_device_capability(index)
    return 10 * major + minor


def arch_of(t: torch.Tensor) -> int:
    if t.device.type == "cuda":
        return _capability(t.device.index if t.device.index is not None else torch.cuda.current_device())
    if t.device.type == "meta":
        arch = _traced_arch.get()
        if arch is None:
            raise RuntimeError("meta tensors launch kernels only while tracing an architecture")
        return arch
    return CPU


def small_shared_memory(arch: int) -> bool:
    """Consumer and workstation parts (sm86, sm89, sm120): about 100 KB per block."""
    return arch != CPU and MAX_SHARED.get(arch, 99 * 1024) < 128 * 1024


def dependent_launch(arch: int) -> bool:
    """Programmatic dependent launch (sm90 and later): a kernel launched so may start while the
    kernel before it in the stream finishes, and waits for it only where it reads its outputs."""
    return arch >= 90


@contextlib.contextmanager
def tracing(arch: int):
    """Within this block, meta tensors stand for tensors on a GPU of `arch`."""
    token = _traced_arch.set(arch)
    try:
        yield
    finally:
        _traced_arch.reset(token)
