"""Launch configurations of the tuned kernels, per GPU architecture.

Measured winners live in tuning.json beside this file, written by `python -m build_kernels
--tune` on a GPU of that architecture (sm90: the H100). Architectures nobody measured get
DEFAULTS, by this rule: the tuned kernels (the batch-1 GEMVs) use no shared memory and
stream their weight through registers, so their tile is sized by the bytes each program
keeps in flight, which does not depend on the architecture; SM count only changes how many
waves the grid takes. The launchers and the cubin build both read `config`, so cubins are
built with exactly the configuration the runtime launches.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

TUNING_FILE = Path(__file__).with_name("tuning.json")

DEFAULTS = {
    "linear_gemv": {"BN": 8, "BK": 512, "num_warps": 4},  # weight rows x K chunk
    "qkv_rope_decode": {"BN": 8, "BK": 512, "num_warps": 4},  # the same, BN <= head_dim
    # expert GEMVs, per program: warps on m16 row tiles x warps splitting K
    "moe_gemv": {"TILES": 1, "WARPS_K": 4},  # mlp1
    "moe_gemv_combine": {"TILES": 1, "WARPS_K": 4},  # mlp2 of a token's experts, combined
}


@functools.cache
def _measured() -> dict:
    return json.loads(TUNING_FILE.read_text()) if TUNING_FILE.is_file() else {}


def config(kernel: str, arch: int) -> dict:
    """The launch configuration of `kernel` on `arch`: measured if tuned there, else DEFAULTS."""
    measured = _measured().get(str(arch), {}).get(kernel, {})
    return {**DEFAULTS[kernel], **{k: v for k, v in measured.items() if k in DEFAULTS[kernel]}}
