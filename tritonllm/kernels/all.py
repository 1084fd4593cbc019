"""Imports every kernel module, so that the registry lists every kernel the engine launches."""

from tritonllm.kernels import attention, embedding, linear, moe, moe_gemv, rmsnorm, rope, sampling  # noqa: F401
