"""Launchable kernels: every kernel the engine launches is declared with `@kernel`, which
JIT-compiles it through Triton and records it in `REGISTRY` (helpers it calls stay plain
`@triton.jit`).

CPU tensors run under Triton's interpreter. Triton decides at import time whether
`triton.jit` interprets (TRITON_INTERPRET=1), for its own library functions too, so a CPU
launch in a process started without it fails with a message saying so.
"""

from __future__ import annotations

from typing import Callable

import torch
import triton
from triton.runtime.interpreter import InterpretedFunction

REGISTRY: dict[str, "Kernel"] = {}


class InterpreterNotEnabled(RuntimeError):
    pass


def _probe():
    pass


def interpreter_enabled() -> bool:
    """Whether this process's Triton runs kernels under the CPU interpreter."""
    return isinstance(triton.jit(_probe), InterpretedFunction)


class Kernel:
    """A registered Triton kernel; `k[grid](*args, **constexprs)` launches it."""

    def __init__(self, fn: Callable):
        self.fn = fn
        self.name = fn.__name__
        self.jit = triton.jit(fn)
        if self.name in REGISTRY:
            raise ValueError(f"kernel {self.name!r} registered twice")
        REGISTRY[self.name] = self

    def __getitem__(self, grid):
        if isinstance(self.jit, InterpretedFunction):
            return self.jit[grid]

        def launch(*args, **kwargs):
            if any(isinstance(a, torch.Tensor) and a.device.type == "cpu" for a in args):
                raise InterpreterNotEnabled(
                    f"{self.name}: CPU tensors run under Triton's interpreter, which must be "
                    "enabled before triton is imported: set TRITON_INTERPRET=1 in the environment"
                )
            return self.jit[grid](*args, **kwargs)

        return launch

    def __repr__(self) -> str:
        return f"Kernel({self.name})"


def kernel(fn: Callable) -> Kernel:
    """Declare a launchable kernel (instead of `@triton.jit` on kernels the engine launches)."""
    return Kernel(getattr(fn, "fn", fn))
