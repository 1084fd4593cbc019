"""Launchable kernels. Every kernel the engine launches is declared with `@kernel` (its
`@triton.jit` helpers stay plain), which puts it in `REGISTRY`, the one list of kernels
shared by the runtime and `build_kernels`.

A launch `k[grid](*args, **constexprs)` goes, in order, to:
1. the active recorder, when `build_kernels` traces the model (nothing runs);
2. Triton's interpreter for CPU tensors (TRITON_INTERPRET=1 must be set before triton is
   imported: Triton decides at import time, for its own library functions too);
3. a precompiled cubin for this GPU whose specialization matches the arguments exactly;
4. the JIT backend chosen in `tritonllm.runtime.settings` (triton or triton_runner).

`dynamic` names integer arguments that change from call to call (token counts, lengths):
neither JIT nor the cubin build specializes them, so one binary serves every value.
"""

from __future__ import annotations

import hashlib
import inspect
from typing import Callable, Iterable

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction
from triton.runtime.jit import JITFunction

from tritonllm.runtime import settings

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

    def __init__(self, fn: Callable, dynamic: Iterable[str] = ()):
        self.fn = fn
        self.name = fn.__name__
        self.dynamic = tuple(dynamic)
        self.source_file = fn.__code__.co_filename
        self.triton = triton.jit(fn, do_not_specialize=self.dynamic)  # JIT, or the interpreter
        # Triton's view of the kernel for specialization keys and AOT builds; the same object
        # unless this process interprets (the interpreter has no compiler-side view).
        self.compiled = self.triton if isinstance(self.triton, JITFunction) else JITFunction(fn, do_not_specialize=self.dynamic)
        self._jit: dict[str, Callable] = {}
        if self.name in REGISTRY:
            raise ValueError(f"kernel {self.name!r} registered twice")
        REGISTRY[self.name] = self

    def jit(self, backend: str):
        """This kernel compiled just in time by `backend` ("triton" or "triton_runner")."""
        if backend not in self._jit:
            if backend == "triton":
                self._jit[backend] = self.triton
            else:
                import triton_runner  # its presence is checked when the RuntimeConfig is made

                self._jit[backend] = triton_runner.jit(self.fn, do_not_specialize=self.dynamic)
        return self._jit[backend]

    @property
    def source_hash(self) -> str:
        """Hash of the kernel's source, every @triton.jit function it calls (transitively), the
        global constexprs they read, and the Triton version: what a cubin was built from."""
        h = hashlib.sha256(triton.__version__.encode())
        for text in _sources(self.fn, set()):
            h.update(text.encode())
        return h.hexdigest()

    def __getitem__(self, grid):
        interpreted = isinstance(self.triton, InterpretedFunction)

        def launch(*args, **kwargs):
            if settings.recorder is not None:
                return settings.recorder(self, grid, args, kwargs)
            if interpreted:
                return self.triton[grid](*args, **kwargs)
            for a in args:
                if isinstance(a, torch.Tensor):
                    device = a.device
                    break
            if device.type == "cpu":
                raise InterpreterNotEnabled(
                    f"{self.name}: CPU tensors run under Triton's interpreter, which must be "
                    "enabled before triton is imported: set TRITON_INTERPRET=1 in the environment"
                )
            library = settings.cubin_libraries.get(device.index)
            if library is not None and library.launch(self, grid, args, kwargs):
                return None
            return self.jit(settings.current.jit_backend)[grid](*args, **kwargs)

        return launch

    def __repr__(self) -> str:
        return f"Kernel({self.name})"


def _sources(fn: Callable, seen: set):
    if fn in seen:
        return
    seen.add(fn)
    yield inspect.getsource(fn)
    for name in fn.__code__.co_names:
        value = fn.__globals__.get(name)
        if isinstance(value, (JITFunction, InterpretedFunction)):
            yield from _sources(value.fn, seen)
        elif isinstance(value, tl.constexpr):
            yield f"{name}={value.value!r}"


def kernel(fn: Callable | None = None, *, dynamic: Iterable[str] = ()):
    """Declare a launchable kernel (instead of `@triton.jit`): `@kernel` or `@kernel(dynamic=("M",))`."""
    if fn is None:
        return lambda f: Kernel(getattr(f, "fn", f), dynamic)
    return Kernel(getattr(fn, "fn", fn), dynamic)
