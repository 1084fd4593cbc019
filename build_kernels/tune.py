"""`python -m build_kernels --tune`: measure the tuned kernels' candidate tiles on this GPU and
record the winners for its architecture in tritonllm/kernels/tuning.json.

Each candidate runs at every gpt-oss-20b shape the kernel serves (random inputs, L2 flushed
between runs by triton.testing.do_bench, median time); the winner has the least total time.
"""

from __future__ import annotations

import datetime
import itertools
import json

import torch
import triton
from triton.testing import do_bench

from tritonllm.kernels.linear import linear_gemv_kernel
from tritonllm.kernels.moe import moe_gemv_kernel
from tritonllm.kernels.tuning import TUNING_FILE
from tritonllm.model.config import preset
from tritonllm.runtime.target import arch_of

WARPS = (2, 4, 8)


def _time(fn) -> float | None:
    try:
        return do_bench(fn, warmup=20, rep=100, return_mode="median")
    except Exception:  # a candidate the compiler or the GPU cannot run: not a winner
        return None


def _linear_cases(cfg):
    H = cfg.hidden_size
    for N, K in ((cfg.qkv_size, H), (H, cfg.q_size), (cfg.vocab_size, H)):
        x = torch.randn(1, K, device="cuda")
        w = (torch.randn(N, K, device="cuda") * 0.02).bfloat16()
        out = torch.empty(1, N, device="cuda")
        yield N, K, x, w, out


def tune_linear(cfg) -> tuple[dict, list]:
    cases = list(_linear_cases(cfg))
    rows = []
    for BN, BK, warps in itertools.product((4, 8, 16, 32), (128, 256, 512), WARPS):
        total = 0.0
        for N, K, x, w, out in cases:
            run = linear_gemv_kernel.jit("triton")[(triton.cdiv(N, BN),)]
            ms = _time(lambda: run(x, w, x, out, out, N, K, HAS_BIAS=False, HAS_RES=False, BN=BN, BK=BK, num_warps=warps))
            total = None if ms is None or total is None else total + ms
        rows.append({"BN": BN, "BK": BK, "num_warps": warps, "total_ms": total})
    best = min((r for r in rows if r["total_ms"] is not None), key=lambda r: r["total_ms"])
    return {k: best[k] for k in ("BN", "BK", "num_warps")}, rows


def tune_moe(cfg) -> tuple[dict, list]:
    E, pairs, H, I = cfg.num_experts, cfg.experts_per_token, cfg.hidden_size, cfg.intermediate_size
    ids = torch.randperm(E, device="cuda")[:pairs].int()
    gates = torch.rand(pairs, device="cuda")
    cases = []
    for N, K, swiglu in ((2 * I, H, True), (H, I, False)):
        x = torch.randn(1 if swiglu else pairs, K, device="cuda")
        blocks = torch.randint(0, 256, (E, N, K // 32, 16), dtype=torch.uint8, device="cuda")
        scales = torch.randint(118, 121, (E, N, K // 32), dtype=torch.uint8, device="cuda")
        bias = torch.randn(E, N, device="cuda").bfloat16()
        out = torch.empty(pairs, N // 2 if swiglu else N, device="cuda")
        cases.append((N, K, swiglu, x, blocks, scales, bias, out))
    rows = []
    for BN, BKB, warps in itertools.product((8, 16, 32, 64), (64, 128, 256, 512), WARPS):
        total = 0.0
        for N, K, swiglu, x, blocks, scales, bias, out in cases:
            run = moe_gemv_kernel.jit("triton")[(triton.cdiv(N, BN), pairs)]
            ms = _time(lambda: run(x, ids, gates, blocks, scales, bias, out, N, K, pairs if swiglu else 1, 7.0,
                                   SWIGLU=swiglu, BN=BN, BKB=BKB, num_warps=warps))
            total = None if ms is None or total is None else total + ms
        rows.append({"BN": BN, "BKB": BKB, "num_warps": warps, "total_ms": total})
    best = min((r for r in rows if r["total_ms"] is not None), key=lambda r: r["total_ms"])
    return {k: best[k] for k in ("BN", "BKB", "num_warps")}, rows


def tune() -> dict:
    """Measure, write the winners for this GPU's architecture, return every measurement."""
    if not torch.cuda.is_available():
        raise SystemExit("--tune measures on a GPU: none found")
    arch = arch_of(torch.empty(0, device="cuda"))
    cfg = preset("20b")
    results = {}
    winners = {}
    for name, fn in (("linear_gemv", tune_linear), ("moe_gemv", tune_moe)):
        winners[name], results[name] = fn(cfg)
        print(f"sm{arch} {name}: {winners[name]}", flush=True)
    table = json.loads(TUNING_FILE.read_text()) if TUNING_FILE.is_file() else {}
    table[str(arch)] = {**winners, "measured_on": f"{torch.cuda.get_device_name()}, {datetime.date.today()}"}
    TUNING_FILE.write_text(json.dumps(dict(sorted(table.items())), indent=1) + "\n")
    return {"arch": arch, "winners": winners, "candidates": results}
