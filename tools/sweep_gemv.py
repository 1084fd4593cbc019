"""Sweep tile shapes of the batch-1 GEMV kernels at gpt-oss shapes on this GPU (JIT).

    python tools/sweep_gemv.py --out sweep.json

Prints, per shape, each configuration's median time (triton.testing.do_bench) and the bytes
it streams per second, best first. Inputs are random; weights are read once per call.
"""

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch
import triton
from triton.testing import do_bench

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tritonllm.kernels.linear import linear_gemv_kernel  # noqa: E402
from tritonllm.kernels.moe import moe_gemv_kernel  # noqa: E402


def sweep_linear(N, K):
    x = torch.randn(1, K, device="cuda")
    w = (torch.randn(N, K, device="cuda") * 0.02).bfloat16()
    out = torch.empty(1, N, device="cuda")
    rows = []
    for BN, BK, warps in itertools.product((4, 8, 16, 32), (128, 256, 512), (2, 4, 8)):
        run = linear_gemv_kernel.jit("triton")[(triton.cdiv(N, BN),)]
        fn = lambda: run(x, w, x, out, out, N, K, HAS_BIAS=False, HAS_RES=False, BN=BN, BK=BK, num_warps=warps)  # noqa: E731
        try:
            ms = do_bench(fn, warmup=20, rep=100, return_mode="median")
        except Exception as e:  # out of resources: skip the configuration
            rows.append({"BN": BN, "BK": BK, "warps": warps, "error": type(e).__name__})
            continue
        rows.append({"BN": BN, "BK": BK, "warps": warps, "ms": ms, "GB_s": N * K * 2 / ms / 1e6})
    return rows


def sweep_moe(N, K, swiglu):
    E, pairs = 32, 4
    x = torch.randn(1 if swiglu else pairs, K, device="cuda")
    ids = torch.randperm(E, device="cuda")[:pairs].int()
    gates = torch.rand(pairs, device="cuda")
    blocks = torch.randint(0, 256, (E, N, K // 32, 16), dtype=torch.uint8, device="cuda")
    scales = torch.randint(118, 121, (E, N, K // 32), dtype=torch.uint8, device="cuda")
    bias = torch.randn(E, N, device="cuda").bfloat16()
    out = torch.empty(pairs, N // 2 if swiglu else N, device="cuda")
    rows = []
    for BN, BKB, warps in itertools.product((8, 16, 32, 64), (64, 128, 256, 512), (2, 4, 8)):
        run = moe_gemv_kernel.jit("triton")[(triton.cdiv(N, BN), pairs)]
        fn = lambda: run(x, ids, gates, blocks, scales, bias, out, N, K, pairs if swiglu else 1, 7.0,  # noqa: E731
                         SWIGLU=swiglu, BN=BN, BKB=BKB, num_warps=warps)
        try:
            ms = do_bench(fn, warmup=20, rep=100, return_mode="median")
        except Exception as e:
            rows.append({"BN": BN, "BKB": BKB, "warps": warps, "error": type(e).__name__})
            continue
        nbytes = pairs * N * (K // 2 + K // 32)
        rows.append({"BN": BN, "BKB": BKB, "warps": warps, "ms": ms, "GB_s": nbytes / ms / 1e6})
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    results = {
        "linear N=5120 K=2880 (qkv)": sweep_linear(5120, 2880),
        "linear N=2880 K=4096 (out)": sweep_linear(2880, 4096),
        "linear N=201088 K=2880 (unembedding)": sweep_linear(201088, 2880),
        "moe mlp1 N=5760 K=2880": sweep_moe(5760, 2880, True),
        "moe mlp2 N=2880 K=2880": sweep_moe(2880, 2880, False),
    }
    for shape, rows in results.items():
        ok = sorted((r for r in rows if "ms" in r), key=lambda r: r["ms"])
        print(f"\n{shape}")
        for r in ok[:5]:
            print("  ", {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()})
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
