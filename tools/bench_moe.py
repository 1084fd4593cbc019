"""Expert kernels on the GPU at gpt-oss shapes: accuracy against a float32 reference and time
(triton.testing.do_bench, L2 flushed, median) for the grouped prefill matmuls under several tile
plans (and tiles) and for the decode GEMV, each against its own bound. (The GEMV's tile sweep is
`python -m build_kernels --tune`.)

    PYTHONPATH=. python tools/bench_moe.py --out results.json [--tokens 2048] [--size 120b] [--sweep-tiles]
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json

import torch
from triton.testing import do_bench

from tools.kernel_checks import moe_reference, random_experts, random_router, rel_err, routing_reference
from tritonllm.kernels.linear import linear_reference
from tritonllm.kernels.moe import (
    TilePlan, mm_config, moe_align, moe_combine, moe_experts, moe_mlp1, moe_mlp2, moe_route, split_bf16, tile_plan,
)
from tritonllm.kernels.moe_gemv import moe_gemv_combine, moe_gemv_swiglu
from tritonllm.model.config import preset
from tritonllm.runtime.target import arch_of


PLANS = ((128, 128, 0), (128, 32, 32), (128, 32, 64), (128, 32, 96), (128, 64, 64), (128, 16, 48),
         (32, 32, 0), (32, 16, 16), (16, 16, 0))
TILES = [{"BN": bn, "BK": bk, "num_warps": w, "num_stages": 3}
         for bn, bk, w in itertools.product((64, 128), (64, 128), (4, 8))]


def grouped(cfg, T: int, peak_tflops: float, plans=PLANS, tiles=()) -> dict:
    """The grouped matmuls under each tile plan (big rows, tail rows, most rows left to tails),
    with the default tile and the given `tiles`; the routing of random inputs through a random
    router, as the synthetic checkpoints give."""
    E, k, H, I = cfg.num_experts, cfg.experts_per_token, cfg.hidden_size, cfg.intermediate_size
    x = torch.randn(T, H, device="cuda")
    router = random_router("cuda", E, H)
    ids, gates = routing_reference(linear_reference(x, *router), k)
    w1, w2 = random_experts("cuda", E, 2 * I, H), random_experts("cuda", E, H, I)
    residual = torch.randn(T, H, device="cuda")
    ref = residual + moe_reference(x, ids, gates, w1, w2, cfg.swiglu_limit).view(T, k, H).sum(1)
    err = rel_err(moe_experts(x, router, k, w1, w2, cfg.swiglu_limit, residual.clone()), ref)
    flops = 2 * T * k * (2 * I * H + H * I)
    arch = arch_of(x)
    parts = split_bf16(x)
    rows = []
    for plan in [tile_plan(T * k, E)] + [TilePlan(*p) for p in plans]:
        groups = moe_align(ids, E, plan)
        act = moe_mlp1(parts, groups, *w1, k, cfg.swiglu_limit)
        plan_err = rel_err(moe_combine(moe_mlp2(act, groups, gates, *w2), residual.clone(), k), ref)
        for tile in [None, *tiles]:
            try:
                t1 = do_bench(lambda: moe_mlp1(parts, groups, *w1, k, cfg.swiglu_limit, tile), return_mode="median")
                t2 = do_bench(lambda: moe_mlp2(act, groups, gates, *w2, tile), return_mode="median")
            except Exception as exc:  # a tile the compiler or the GPU cannot run
                rows.append({"plan": plan.__dict__, "tile": tile, "error": str(exc)[:200]})
                continue
            rows.append({"plan": plan.__dict__, "tile": tile or {"default": mm_config(2 * I, H, arch)},
                         "tiles": {bm: int((t[:, 0] >= 0).sum()) for bm, t in groups.tiles},
                         "rel_err": plan_err, "mlp1_ms": t1, "mlp2_ms": t2,
                         "tflops": flops / ((t1 + t2) * 1e-3) / 1e12})
            print(rows[-1], flush=True)
    counts = torch.bincount(ids.flatten().long(), minlength=E)
    total = do_bench(lambda: moe_experts(x, router, k, w1, w2, cfg.swiglu_limit, residual), return_mode="median")
    return {"tokens": T, "pairs": T * k, "pairs_per_expert": {"min": int(counts.min()), "max": int(counts.max()),
                                                                "std": float(counts.float().std())},
            "rel_err": err, "moe_experts_ms": total, "useful_tflops": flops / (total * 1e-3) / 1e12,
            "bound_ms_at_peak_bf16_x2_products": 2 * flops / (peak_tflops * 1e12) * 1e3, "plans": rows}


def gemv(cfg, bandwidth: float) -> dict:
    E, k, H, I = cfg.num_experts, cfg.experts_per_token, cfg.hidden_size, cfg.intermediate_size
    x = torch.randn(1, H, device="cuda")
    router = random_router("cuda", E, H)
    ids, gates = routing_reference(linear_reference(x, *router), k)
    w1, w2 = random_experts("cuda", E, 2 * I, H), random_experts("cuda", E, H, I)
    residual = torch.randn(1, H, device="cuda")
    ref = residual + moe_reference(x, ids, gates, w1, w2, cfg.swiglu_limit).sum(0, keepdim=True)
    err = rel_err(moe_experts(x, router, k, w1, w2, cfg.swiglu_limit, residual.clone()), ref)
    route, h = moe_route(x, router, k, None)
    act = moe_gemv_swiglu(h, route, w1, cfg.swiglu_limit)
    t1 = do_bench(lambda: moe_gemv_swiglu(h, route, w1, cfg.swiglu_limit), return_mode="median")
    t2 = do_bench(lambda: moe_gemv_combine(act, route, w2, residual), return_mode="median")
    weight_bytes = k * (2 * I * H + H * I) * (0.5 + 1 / 32)  # packed FP4 + one scale byte per 32
    return {"rel_err": err, "mlp1_ms": t1, "mlp2_ms": t2, "bound_ms": weight_bytes / bandwidth * 1e3,
            "per_decode_step_ms_x_layers": (t1 + t2) * cfg.num_hidden_layers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--parts", default="gemv,grouped", help="comma-separated: gemv, grouped")
    parser.add_argument("--sweep-tiles", action="store_true", help="also time the TILES around the default tile")
    parser.add_argument("--plans", help="tile plans to time, 'big,tail,max_tail;...' (default: PLANS)")
    parser.add_argument("--tiles", help="tiles to time, 'BN,BK,num_warps,num_stages;...' (--sweep-tiles: TILES)")
    parser.add_argument("--size", default="20b", choices=("20b", "120b"))
    parser.add_argument("--bandwidth", type=float, default=2.95e12, help="copy bandwidth, bytes/s")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 tensor-core peak")
    args = parser.parse_args()
    cfg = preset(args.size)
    parts = args.parts.split(",")
    result = {"date": datetime.date.today().isoformat(), "device": torch.cuda.get_device_name()}
    if "gemv" in parts:
        result["gemv"] = gemv(cfg, args.bandwidth)
        print(json.dumps(result["gemv"], indent=1), flush=True)
    if "grouped" in parts:
        plans = [tuple(map(int, p.split(","))) for p in args.plans.split(";")] if args.plans else PLANS
        keys = ("BN", "BK", "num_warps", "num_stages")
        tiles = [dict(zip(keys, map(int, t.split(",")))) for t in args.tiles.split(";")] if args.tiles \
            else TILES if args.sweep_tiles else []
        result["grouped"] = grouped(cfg, args.tokens, args.peak_tflops, plans, tiles)
        print(json.dumps({k: v for k, v in result["grouped"].items() if k != "plans"}, indent=1))
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
