"""bench_chat.py: prefill and decode speed of TritonLLM, against the memory-bandwidth bound.

    python bench_chat.py --synthetic 20b --prompt-tokens 128 --decode-tokens 256 --runs 5
    python bench_chat.py /path/to/gpt-oss-20b --prompt "Explain MXFP4 in one paragraph."
    python bench_chat.py --synthetic tiny --device cpu --prompt-tokens 8 --decode-tokens 2 --runs 1

Batch-1 decode reads every attention weight, the chosen experts of every layer, the
unembedding and the KV cache once per token, so bytes-per-token over the measured copy
bandwidth bounds tokens per second; the report gives the fraction of that bound reached.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from tritonllm.model.config import ModelConfig

log = logging.getLogger("bench_chat")


def weight_bytes_per_token(cfg: ModelConfig) -> dict[str, int]:
    """Weight bytes batch-1 decode reads per token, by part (embedding row and norms ignored)."""
    H, L = cfg.hidden_size, cfg.num_hidden_layers
    attention = (cfg.qkv_size * H + cfg.qkv_size + H * cfg.q_size + H) * 2  # bf16 weights and biases
    router = (cfg.num_experts * H + cfg.num_experts) * 2

    def mxfp4(n, k):  # packed values, one scale byte per 32, bf16 bias
        return n * k // 2 + n * k // 32 + n * 2

    expert = mxfp4(2 * cfg.intermediate_size, H) + mxfp4(H, cfg.intermediate_size)
    return {
        "attention": attention * L,
        "router": router * L,
        "experts": expert * cfg.experts_per_token * L,
        "unembedding": cfg.vocab_size * H * 2,
    }


def kv_bytes_per_token(cfg: ModelConfig, context: int, bytes_per_value: int = 4) -> int:
    """KV-cache bytes one decode step reads at `context` tokens (sliding layers read <= window)."""
    per_position = 2 * cfg.kv_size * bytes_per_value
    return sum(min(context, cfg.sliding_window) if s else context for s in cfg.sliding_layers) * per_position


def decode_bound_tok_s(cfg: ModelConfig, bandwidth_bytes_s: float, context: int = 0) -> float:
    total = sum(weight_bytes_per_token(cfg).values()) + kv_bytes_per_token(cfg, context)
    return bandwidth_bytes_s / total


def copy_bandwidth(device: torch.device, nbytes: int = 1 << 30, repeats: int = 20) -> float:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read plus written."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).random_()
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    del src, dst
    return 2 * nbytes / statistics.median(times)


@dataclass
class Run:
    prompt_tokens: int
    generated: int
    ttft_s: float
    prefill_tok_s: float
    decode_tok_s: float | None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_once(llm, prompt: list[int], decode_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
             seed: int = 0) -> Run:
    """One timed prefill + decode (greedy unless a temperature is given), from an empty cache."""
    device = llm.engine.device
    llm.engine.reset()
    _sync(device)
    t0 = time.perf_counter()
    stream = llm.generate(prompt, decode_tokens, temperature=temperature, top_p=top_p, seed=seed)
    next(stream)  # the first token: prefill + one sample + host sync
    t1 = time.perf_counter()
    generated = 1 + sum(1 for _ in stream)
    _sync(device)
    t2 = time.perf_counter()
    decode = (generated - 1) / (t2 - t1) if generated > 1 else None
    return Run(len(prompt), generated, t1 - t0, len(prompt) / (t1 - t0), decode)


def prompt_tokens(args, vocab_size: int) -> list[int]:
    if args.prompt is not None:
        from tritonllm.harmony import load_encoding, render_user_prompt

        return render_user_prompt(load_encoding(), args.prompt, reasoning=args.reasoning)
    gen = torch.Generator().manual_seed(args.seed)
    return torch.randint(0, min(vocab_size, 199998), (args.prompt_tokens,), generator=gen).tolist()


def summarize(values: list[float]) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def benchmark(args) -> dict:
    from tritonllm import LLM
    from tritonllm.llm import resolve_device
    from tritonllm.runtime.kernel import REGISTRY

    device = resolve_device(args.device)
    bandwidth = copy_bandwidth(device) if device.type == "cuda" else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()  # after the bandwidth test's 2 GiB of buffers
    context = args.context or (args.prompt_tokens + args.decode_tokens + 64)
    if args.synthetic:
        llm = LLM.synthetic(args.synthetic, seed=args.seed, device=device, context_length=context)
    else:
        llm = LLM(args.checkpoint, device=device, context_length=context)
    cfg = llm.config
    prompt = prompt_tokens(args, cfg.vocab_size)
    runs = timed_runs(llm, prompt, args)
    decode = summarize([r.decode_tok_s for r in runs])
    mid_context = len(prompt) + args.decode_tokens // 2
    bound = decode_bound_tok_s(cfg, bandwidth, mid_context) if bandwidth else None
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (Triton interpreter)",
        "model": args.synthetic or str(args.checkpoint),
        "layers": cfg.num_hidden_layers,
        "experts": cfg.num_experts,
        "prompt_tokens": len(prompt),
        "decode_tokens": args.decode_tokens,
        "sampling": {"temperature": args.temperature, "top_p": args.top_p},
        "runs": [asdict(r) for r in runs],
        "prefill_tok_s": summarize([r.prefill_tok_s for r in runs]),
        "ttft_s": summarize([r.ttft_s for r in runs]),
        "decode_tok_s": decode,
        "peak_gpu_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "copy_bandwidth_tb_s": bandwidth / 1e12 if bandwidth else None,
        "weight_gb_per_token": sum(weight_bytes_per_token(cfg).values()) / 1e9,
        "kv_gb_per_token": kv_bytes_per_token(cfg, mid_context) / 1e9,
        "decode_bound_tok_s": bound,
        "fraction_of_bound": decode["median"] / bound if bound and decode else None,
        "kernels": (llm.kernel_plan.summary() if llm.kernel_plan else
                    f"{len(REGISTRY)} kernels under Triton's interpreter"),
        "cuda_graph": llm.engine.use_graph,
        "jit_comparison": compare_with_jit(llm, prompt, args) if args.compare else None,
    }


def timed_runs(llm, prompt: list[int], args) -> list[Run]:
    log.info("warm-up (compiles or loads kernels, captures the decode graph)")
    sampling = (args.temperature, args.top_p, args.seed)
    run_once(llm, prompt, min(args.decode_tokens, 4), *sampling)
    runs = []
    for i in range(args.runs):
        runs.append(run_once(llm, prompt, args.decode_tokens, *sampling))
        log.info("run %d/%d: prefill %.0f tok/s, decode %s tok/s", i + 1, args.runs, runs[-1].prefill_tok_s,
                 f"{runs[-1].decode_tok_s:.1f}" if runs[-1].decode_tok_s else "-")
    return runs


def compare_with_jit(llm, prompt: list[int], args) -> dict:
    """The same runs with every kernel JIT-compiled (cubins set aside), in this process."""
    from tritonllm.runtime import settings

    device = llm.engine.device
    library = settings.cubin_libraries.get(device.index)
    settings.cubin_libraries[device.index] = None
    llm.engine.graphs.clear()  # recapture the decode step with JIT launches
    t0 = time.perf_counter()
    try:
        runs = timed_runs(llm, prompt, args)
    finally:
        settings.cubin_libraries[device.index] = library
        llm.engine.graphs.clear()
    return {"first_run_incl_compile_s": time.perf_counter() - t0,
            "prefill_tok_s": summarize([r.prefill_tok_s for r in runs]),
            "decode_tok_s": summarize([r.decode_tok_s for r in runs])}


def print_table(r: dict) -> None:
    def fmt(s, unit=""):
        return "-" if s is None else f"{s['median']:.1f}{unit} (min {s['min']:.1f}, max {s['max']:.1f})"

    rows = [
        ("device", r["device"]),
        ("model", f"{r['model']} ({r['layers']} layers, {r['experts']} experts)"),
        ("prompt / decoded", f"{r['prompt_tokens']} / {r['decode_tokens']} tokens, {len(r['runs'])} runs"),
        ("prefill tok/s", fmt(r["prefill_tok_s"])),
        ("time to first token", "-" if r["ttft_s"] is None else f"{r['ttft_s']['median'] * 1e3:.1f} ms"),
        ("decode tok/s", fmt(r["decode_tok_s"])),
        ("sampling", "greedy" if r["sampling"]["temperature"] == 0 else
         f"temperature {r['sampling']['temperature']}, top_p {r['sampling']['top_p']}"),
        ("bandwidth bound", "-" if r["decode_bound_tok_s"] is None else
         f"{r['decode_bound_tok_s']:.0f} tok/s ({r['weight_gb_per_token']:.2f} GB weights + "
         f"{r['kv_gb_per_token']:.3f} GB KV per token at {r['copy_bandwidth_tb_s']:.2f} TB/s)"),
        ("fraction of bound", "-" if r["fraction_of_bound"] is None else f"{r['fraction_of_bound']:.1%}"),
        ("peak GPU memory", "-" if r["peak_gpu_gib"] is None else f"{r['peak_gpu_gib']:.2f} GiB"),
        ("kernels", f"{r['kernels']}; CUDA graph: {r['cuda_graph']}"),
    ]
    if r["jit_comparison"]:
        rows.append(("JIT: prefill tok/s", fmt(r["jit_comparison"]["prefill_tok_s"])))
        rows.append(("JIT: decode tok/s", fmt(r["jit_comparison"]["decode_tok_s"])))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", nargs="?", help="checkpoint folder (either published layout)")
    p.add_argument("--synthetic", choices=["tiny", "20b", "120b"], help="random weights built on the device")
    p.add_argument("--prompt", help="chat text, rendered with harmony (instead of --prompt-tokens)")
    p.add_argument("--reasoning", default="low", choices=["low", "medium", "high"])
    p.add_argument("--prompt-tokens", type=int, default=128, help="random prompt of this many tokens")
    p.add_argument("--decode-tokens", type=int, default=256)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--context", type=int, help="KV cache size (default: prompt + decode + 64)")
    p.add_argument("--device", help="cuda (default) or cpu (Triton interpreter; tiny models only)")
    p.add_argument("--temperature", type=float, default=0.0, help="decode sampling (default 0: greedy)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1.0)")
    p.add_argument("--seed", type=int, default=0, help="of the random prompt, weights and sampling")
    p.add_argument("--json", type=Path, help="write the full report here")
    p.add_argument("--compare", action="store_true", help="also run every kernel by JIT, side by side")
    args = p.parse_args(argv)
    if bool(args.checkpoint) == bool(args.synthetic):
        p.error("give a checkpoint folder or --synthetic SIZE (one of them)")
    if args.runs < 1 or args.decode_tokens < 1 or args.prompt_tokens < 1:
        p.error("--runs, --decode-tokens and --prompt-tokens must be positive")
    if not (args.temperature >= 0 and 0 < args.top_p <= 1):
        p.error("--temperature must be >= 0 and --top-p in (0, 1]")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == "cpu":  # Triton reads this when first imported, which happens below
        os.environ["TRITON_INTERPRET"] = "1"
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        report = benchmark(args)
    except (ValueError, RuntimeError, OSError) as e:
        print(f"bench_chat: error: {e}", file=sys.stderr)
        return 1
    print_table(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
