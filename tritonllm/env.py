"""The kernel runtime's environment variables, read in one place by the entry points.

- TRITONLLM_JIT_BACKEND: `triton` (default) or `triton_runner`, for kernels without a cubin.
- TRITONLLM_CUBIN: `1` (default) uses the precompiled cubins in cubins/; `0` JIT-compiles all.
The chat, server and UI entry points read their own few variables (API keys, URLs) at start;
nothing below the entry points reads the environment.
"""

from __future__ import annotations

import os

from tritonllm.runtime.settings import RuntimeConfig, RuntimeConfigError


def runtime_config() -> RuntimeConfig:
    """The kernel-runtime configuration the environment asks for; clear errors for bad values."""
    backend = os.environ.get("TRITONLLM_JIT_BACKEND", "triton").strip() or "triton"
    cubin = os.environ.get("TRITONLLM_CUBIN", "1").strip()
    if cubin not in ("0", "1"):
        raise RuntimeConfigError(f"TRITONLLM_CUBIN must be 0 or 1, got {cubin!r}")
    return RuntimeConfig(jit_backend=backend, use_cubins=cubin == "1")
