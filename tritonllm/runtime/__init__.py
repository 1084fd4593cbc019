"""The kernel runtime: target detection, cubin loading, JIT backends, one kernel registry.

`prepare(device, config)` is called once when a model is loaded: it records the runtime
configuration and, on a GPU, loads the cubins built for that GPU's architecture, returning
a one-line summary of which kernels run from cubins and which by JIT (and why).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from tritonllm.runtime import settings
from tritonllm.runtime.settings import RuntimeConfig

log = logging.getLogger(__name__)


@dataclass
class KernelPlan:
    """Where each registered kernel runs on one device, and why."""

    arch: int | None  # the cubin architecture in use, if any
    capability: int
    cubin: list[str]
    jit: dict[str, str]  # kernel -> reason
    backend: str  # the JIT backend

    def summary(self) -> str:
        backend = self.backend
        where = f"sm{self.arch} cubins" if self.arch else "no cubins"
        reasons = sorted(set(self.jit.values()))
        jit = f"{len(self.jit)} by JIT ({backend}{': ' + '; '.join(reasons) if reasons else ''})"
        return f"kernels on sm{self.capability}: {where}, {len(self.cubin)} from cubins, {jit}"


def _registry():
    import tritonllm.kernels.all  # noqa: F401  (registers every kernel)
    from tritonllm.runtime.kernel import REGISTRY

    return REGISTRY


def plan(device: torch.device, config: RuntimeConfig, load: bool) -> tuple[KernelPlan, object]:
    """Which kernels run from cubins on `device`, and why the others do not; with `load`,
    also the loaded cubin library for it."""
    from tritonllm.runtime.cubin import CubinLibrary, cubin_arch_for, load_library, read_manifest, usable_entries
    from tritonllm.runtime.target import arch_of

    registry = _registry()
    capability = arch_of(torch.empty(0, device=device))
    if not config.use_cubins:
        return KernelPlan(None, capability, [], {n: "TRITONLLM_CUBIN=0" for n in registry}, config.jit_backend), None
    manifest = read_manifest(config.cubin_dir)
    arch = cubin_arch_for(capability, tuple(int(a) for a in manifest["archs"])) if manifest else None
    if arch is None:
        why = "no cubins built" if manifest is None else f"no cubins for sm{capability}"
        return KernelPlan(None, capability, [], {n: why for n in registry}, config.jit_backend), None
    if load:
        library, reasons = load_library(config.cubin_dir, arch, registry, device.index or 0)
    else:
        library, reasons = CubinLibrary(arch, device.index or 0), usable_entries(manifest, arch, registry)[1]
    return KernelPlan(arch, capability, sorted(set(registry) - set(reasons)), reasons, config.jit_backend), library


def prepare(device: torch.device, config: RuntimeConfig | None = None) -> KernelPlan | None:
    """Configure the runtime for `device` (once per process and device); logs one line."""
    settings.current = config or settings.current
    if device.type != "cuda":
        return None
    device = torch.device("cuda", device.index if device.index is not None else torch.cuda.current_device())
    kernel_plan, library = plan(device, settings.current, load=True)
    settings.cubin_libraries[device.index] = library
    log.info(kernel_plan.summary())
    return kernel_plan
