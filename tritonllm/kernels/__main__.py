"""python -m tritonllm.kernels: every kernel, its source, and the path it takes on this machine.

On a GPU the path is its cubin architecture or JIT with the reason; without a GPU the list
shows which architectures have cubins for each kernel (kernels run under the interpreter).
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path


def main() -> int:
    import torch

    from tritonllm.env import runtime_config
    from tritonllm.runtime import _registry, plan
    from tritonllm.runtime.cubin import read_manifest
    from tritonllm.runtime.settings import RuntimeConfigError

    try:
        config = runtime_config()
    except RuntimeConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    registry = _registry()
    manifest = read_manifest(config.cubin_dir) or {"archs": {}}
    built = {arch: Counter(e["kernel"] for e in entries) for arch, entries in manifest["archs"].items()}
    root = Path(__file__).resolve().parents[2]
    kernel_plan = None
    if torch.cuda.is_available():
        kernel_plan, _ = plan(torch.device("cuda"), config, load=False)
        print(kernel_plan.summary())
    else:
        print("no GPU: kernels run under Triton's interpreter on the CPU (TRITON_INTERPRET=1)")
    width = max(len(n) for n in registry)
    for name, kernel in sorted(registry.items()):
        source = os.path.relpath(kernel.source_file, root)
        cubins = " ".join(f"sm{a}:{c[name]}" for a, c in built.items() if c[name]) or "none"
        if kernel_plan is None:
            path = "interpreter"
        elif name in kernel_plan.jit:
            path = f"JIT ({kernel_plan.jit[name]})"
        else:
            path = f"sm{kernel_plan.arch} cubin"
        print(f"{name:<{width}}  {source:<32}  cubins {cubins:<40}  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
