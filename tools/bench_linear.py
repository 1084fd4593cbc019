"""Dense prefill matmuls (`linear_kernel`) at gpt-oss shapes: time of each tile per token count
(triton.testing.do_bench, L2 flushed, median) against the bound of that shape: weight bytes /
bandwidth or the two bf16 products / peak, whichever is larger. Checks each tile's result.

    PYTHONPATH=. python tools/bench_linear.py --out results.json [--tokens 16 90 512 2048] [--size 20b]
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json

import torch
from triton.testing import do_bench

from tools.kernel_checks import rel_err
from tritonllm.kernels.common import split_bf16
from tritonllm.kernels.linear import linear, linear_reference, prefill_tile
from tritonllm.model.config import preset
from tritonllm.runtime.target import arch_of

TILES = [{"BM": bm, "BN": bn, "BK": bk, "num_warps": w, "num_stages": s}
         for bm, bn, bk, w, s in itertools.product((16, 32, 64, 128), (32, 64, 128, 256), (64, 128), (4, 8), (3,))]


def shapes(cfg) -> dict[str, tuple[int, int]]:
    """(N, K) of the dense matmuls of a prefill layer."""
    return {"qkv": (cfg.qkv_size, cfg.hidden_size), "out": (cfg.hidden_size, cfg.q_size)}


def sweep(N: int, K: int, M: int, bandwidth: float, peak_tflops: float) -> dict:
    x = torch.randn(M, K, device="cuda")
    w = (torch.randn(N, K, device="cuda") / K**0.5).to(torch.bfloat16)
    bias = torch.randn(N, device="cuda").to(torch.bfloat16)
    parts = split_bf16(x)
    ref = linear_reference(x, w, bias)
    bound_ms = max(N * K * 2 / bandwidth, 2 * 2 * M * N * K / (peak_tflops * 1e12)) * 1e3
    default = prefill_tile(M, N, K, arch_of(x))
    rows = []
    for tile in [default] + [t for t in TILES if t["BM"] <= max(16, 2 * M)]:
        try:
            err = rel_err(linear(parts, w, bias, tile=tile), ref)
            ms = do_bench(lambda: linear(parts, w, bias, tile=tile), rep=50, return_mode="median")
        except Exception as exc:  # a tile the compiler or the GPU cannot run (shared memory)
            rows.append({"tile": tile, "error": str(exc)[:120]})
            continue
        rows.append({"tile": tile, "ms": ms, "rel_err": err, "of_bound": bound_ms / ms})
    timed = [r for r in rows if "ms" in r]
    best = min(timed, key=lambda r: r["ms"])
    return {"N": N, "K": K, "M": M, "bound_ms": bound_ms, "default": timed[0], "best": best,
            "max_rel_err": max(r["rel_err"] for r in timed), "tiles": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--tokens", type=int, nargs="+", default=[16, 64, 128, 512, 2048])
    p.add_argument("--size", default="20b", choices=("20b", "120b"))
    p.add_argument("--bandwidth", type=float, default=2.95e12, help="copy bandwidth, bytes/s")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 tensor-core peak")
    args = p.parse_args()
    results = []
    for name, (N, K) in shapes(preset(args.size)).items():
        for M in args.tokens:
            r = sweep(N, K, M, args.bandwidth, args.peak_tflops)
            results.append({"shape": name, **r})
            print(f"{name} M={M}: bound {r['bound_ms'] * 1e3:.1f} us, default {r['default']['tile']} "
                  f"{r['default']['ms'] * 1e3:.1f} us, best {r['best']['tile']} {r['best']['ms'] * 1e3:.1f} us, "
                  f"max rel err {r['max_rel_err']:.1e}", flush=True)
    with open(args.out, "w") as f:
        json.dump({"date": datetime.date.today().isoformat(), "device": torch.cuda.get_device_name(),
                   "size": args.size, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
