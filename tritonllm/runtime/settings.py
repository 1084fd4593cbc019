"""Process-wide kernel-runtime state: the JIT backend, whether cubins are used, the cubin
libraries loaded per GPU, and the recorder `build_kernels` installs while tracing.

Set once at start-up by `tritonllm.runtime.prepare` from a `RuntimeConfig`; entry points
build that config (tritonllm.env reads the environment variables).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

JIT_BACKENDS = ("triton", "triton_runner")
DEFAULT_CUBIN_DIR = Path(__file__).resolve().parents[2] / "cubins"


class RuntimeConfigError(ValueError):
    pass


@dataclass(frozen=True)
class RuntimeConfig:
    jit_backend: str = "triton"
    use_cubins: bool = True
    cubin_dir: Path = DEFAULT_CUBIN_DIR

    def __post_init__(self):
        if self.jit_backend not in JIT_BACKENDS:
            raise RuntimeConfigError(
                f"unknown JIT backend {self.jit_backend!r}: set TRITONLLM_JIT_BACKEND to one of {', '.join(JIT_BACKENDS)}"
            )
        if self.jit_backend == "triton_runner":
            try:
                import triton_runner  # noqa: F401
            except ImportError:
                raise RuntimeConfigError(
                    "TRITONLLM_JIT_BACKEND=triton_runner needs the triton_runner package: "
                    "pip install 'tritonllm[runner]'"
                ) from None


current = RuntimeConfig()
cubin_libraries: dict[int | None, Any] = {}  # CUDA device index -> cubin.CubinLibrary
recorder: Callable | None = None  # set by build_kernels while tracing
