"""`python -m build_kernels --tune`: measure the tuned kernels' candidate tiles on this GPU and
record the winners for its architecture in tritonllm/kernels/tuning.json.

Each candidate runs at every gpt-oss-20b shape the kernel serves, with random inputs. These
are 3-400 us kernels, so they are timed the way decode runs them: captured in a CUDA graph
(no host launch cost), over SETS weight sets in turn (a set's weights are out of L2 when its
turn comes back), median of REPS replays. The winner has the least total time.
"""

from __future__ import annotations

import datetime
import itertools
import json
import statistics

import torch
import triton

from tritonllm.kernels.linear import linear_gemv_kernel
from tritonllm.kernels.moe_gemv import RouterParts, gemv_input, moe_arrivals, moe_gemv_combine, moe_gemv_swiglu
from tritonllm.kernels.rmsnorm import Norm
from tritonllm.kernels.rope import qkv_rope_decode
from tritonllm.kernels.tuning import TUNING_FILE
from tritonllm.model.config import preset
from tritonllm.runtime.target import arch_of

WARPS = (2, 4, 8)
SETS, REPS = 8, 30


def _time(launches) -> float | None:
    """Median milliseconds of one launch, `launches` (one per weight set) replayed in a graph."""
    try:
        for launch in launches:
            launch()
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for launch in launches:
                launch()
        graph.replay()
        times = []
        for _ in range(REPS):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            graph.replay()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / len(launches))
        return statistics.median(times)
    except Exception:  # a candidate the compiler or the GPU cannot run: not a winner
        torch.cuda.synchronize()
        return None


def _pick(rows: list, keys: tuple) -> dict:
    best = min((r for r in rows if r["total_ms"] is not None), key=lambda r: r["total_ms"])
    return {k: best[k] for k in keys}


def _sweep(candidates, cases, launch) -> list:
    rows = []
    for tile in candidates:
        total = 0.0
        for case in cases:
            ms = _time([launch(tile, case, s) for s in range(case["sets"])])
            total = None if ms is None or total is None else total + ms
        rows.append({**tile, "total_ms": total})
    return rows


def tune_linear(cfg) -> tuple[dict, list]:
    H = cfg.hidden_size
    cases = []
    for N, K in ((cfg.qkv_size, H), (H, cfg.q_size), (cfg.vocab_size, H)):
        sets = 2 if N * K * 2 > 2**30 else SETS  # the unembedding alone is bigger than L2
        cases.append({"N": N, "K": K, "sets": sets, "x": torch.randn(1, K, device="cuda"),
                      "w": [(torch.randn(N, K, device="cuda") * 0.02).bfloat16() for _ in range(sets)],
                      "out": torch.empty(1, N, device="cuda")})

    def launch(tile, c, s):
        grid = (triton.cdiv(c["N"], tile["BN"]),)
        run = linear_gemv_kernel.jit("triton")[grid]
        return lambda: run(c["x"], c["w"][s], c["x"], c["out"], c["x"], c["out"], c["N"], c["K"], 0.0,
                           HAS_BIAS=False, HAS_RES=False, NORM=False, PDL=False, **tile)

    candidates = [{"BN": bn, "BK": bk, "num_warps": w}
                  for bn, bk, w in itertools.product((4, 8, 16, 32), (256, 512, 1024), WARPS)]
    rows = _sweep(candidates, cases, launch)
    return _pick(rows, ("BN", "BK", "num_warps")), rows


def tune_qkv_rope(cfg) -> tuple[dict, list]:
    """Decode's fused RMSNorm + QKV + RoPE + cache write, through its launcher. Its own tile:
    every program also reads the whole input row and norm scale, so it may want more rows per
    program than the plain GEMV."""
    H, D, NH, KVH = cfg.hidden_size, cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads
    case = {"sets": SETS, "x": torch.randn(1, H, device="cuda"), "bias": torch.randn(cfg.qkv_size, device="cuda"),
            "norm": Norm(torch.rand(H, device="cuda") + 0.5, cfg.rms_norm_eps),
            "pos": torch.tensor([4000], dtype=torch.int32, device="cuda"),
            "inv_freq": torch.rand(D // 2, device="cuda"), "cache": torch.zeros(8192, KVH, D, device="cuda"),
            "w": [(torch.randn(cfg.qkv_size, H, device="cuda") * 0.02).bfloat16() for _ in range(SETS)]}

    def launch(tile, c, s):
        return lambda: qkv_rope_decode(c["x"], c["w"][s], c["bias"], c["norm"], c["pos"], c["inv_freq"], 1.0, NH,
                                       c["cache"], c["cache"], tile=tile)

    candidates = [{"BN": bn, "BK": bk, "num_warps": w}
                  for bn, bk, w in itertools.product((2, 4, 8, 16, 32), (256, 512, 1024), WARPS)]
    rows = _sweep(candidates, [case], launch)
    return _pick(rows, ("BN", "BK", "num_warps")), rows


def tune_moe(cfg, swiglu: bool) -> tuple[dict, list]:
    """mlp1 (SwiGLU) or mlp2 (and its combine into the residual) for one token's k experts,
    through the launchers (a program per row block and pair)."""
    E, k, H, I = cfg.num_experts, cfg.experts_per_token, cfg.hidden_size, cfg.intermediate_size
    N, K = (2 * I, H) if swiglu else (H, I)
    case = {"sets": SETS, "x": gemv_input(torch.randn(1 if swiglu else k, K, device="cuda")),
            "route": [RouterParts.choosing(torch.randperm(E, device="cuda")[:k].int().view(1, k), E)
                      for _ in range(SETS)],
            "residual": torch.zeros(1, N, device="cuda"),
            "arrivals": moe_arrivals(N, "cuda"),
            "w": [(torch.randint(0, 256, (E, N, K // 32, 16), dtype=torch.uint8, device="cuda"),
                   torch.randint(118, 121, (E, N, K // 32), dtype=torch.uint8, device="cuda"),
                   torch.randn(E, N, device="cuda").bfloat16()) for _ in range(SETS)]}

    def launch(tile, c, s):
        if swiglu:
            return lambda: moe_gemv_swiglu(c["x"], c["route"][s], c["w"][s], 7.0, tile=tile)
        return lambda: moe_gemv_combine(c["x"], c["route"][s], c["w"][s], c["residual"], c["arrivals"], tile=tile)

    candidates = [{"TILES": t, "WARPS_K": w} for t, w in itertools.product((1, 2, 4), (1, 2, 4, 8)) if t * w <= 16]
    rows = _sweep(candidates, [case], launch)
    return _pick(rows, ("TILES", "WARPS_K")), rows


def tune(kernels: tuple[str, ...] = ()) -> dict:
    """Measure the tuned configurations of `kernels` (names of Triton kernels; all when empty),
    merge the winners into tuning.json for this GPU's architecture, return every measurement."""
    if not torch.cuda.is_available():
        raise SystemExit("--tune measures on a GPU: none found")
    arch = arch_of(torch.empty(0, device="cuda"))
    cfg = preset("20b")
    tuners = {  # tuned configuration -> (its kernel, its measurement)
        "linear_gemv": ("linear_gemv_kernel", tune_linear),
        "qkv_rope_decode": ("qkv_rope_decode_kernel", tune_qkv_rope),
        "moe_gemv": ("moe_gemv_kernel", lambda c: tune_moe(c, swiglu=True)),
        "moe_gemv_combine": ("moe_gemv_kernel", lambda c: tune_moe(c, swiglu=False)),
    }
    results, winners = {}, {}
    for name, (kernel_name, fn) in tuners.items():
        if kernels and kernel_name not in kernels:
            continue
        winners[name], results[name] = fn(cfg)
        print(f"sm{arch} {name}: {winners[name]}", flush=True)
    table = json.loads(TUNING_FILE.read_text()) if TUNING_FILE.is_file() else {}
    table[str(arch)] = {**table.get(str(arch), {}), **winners,
                        "measured_on": f"{torch.cuda.get_device_name()}, {datetime.date.today()}"}
    TUNING_FILE.write_text(json.dumps(dict(sorted(table.items())), indent=1) + "\n")
    return {"arch": arch, "winners": winners, "candidates": results}
