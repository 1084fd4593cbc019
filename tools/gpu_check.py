"""GPU check of the forward pass: every kernel against its reference at gpt-oss shapes, then
the whole 20b-shaped (or 120b-shaped) synthetic model against the float32 reference.

    python tools/gpu_check.py --size 20b --tokens 512 --generate 128 --out results.json

Reports the relative error of the logits, top-1 agreement where the reference's top-2
margin exceeds 0.05, and 128 greedy tokens (checked against the teacher-forced argmax
chain, which exercises the KV-cached decode path at full size); then 64 top-p tokens (same
seed, same tokens; each in the nucleus of the teacher-forced logits) and greedy again.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tritonllm import LLM  # noqa: E402
from tritonllm.kernels.sampling import top_p_support  # noqa: E402
from tritonllm.model.reference import reference_logits  # noqa: E402
from tools.kernel_checks import run_kernel_checks  # noqa: E402


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def model_check(size: str, n_tokens: int, n_generate: int, seed: int) -> dict:
    torch.manual_seed(seed)
    t0 = time.time()
    llm = LLM.synthetic(size, seed=seed, context_length=max(4096, n_tokens + n_generate + 1))
    torch.cuda.synchronize()
    build_s = time.time() - t0
    cfg = llm.config
    tokens = torch.randint(0, cfg.vocab_size, (n_tokens,)).tolist()

    llm.logits(tokens)  # warm-up: compile every kernel for these shapes
    torch.cuda.synchronize()
    t0 = time.time()
    logits = llm.logits(tokens)
    torch.cuda.synchronize()
    prefill_s = time.time() - t0
    ref = reference_logits(llm.weights, torch.tensor(tokens, device="cuda"))
    top2 = ref.topk(2, dim=-1).values
    confident = (top2[:, 0] - top2[:, 1]) > 0.05
    agree = logits.argmax(-1) == ref.argmax(-1)
    result = {
        "size": size,
        "tokens": n_tokens,
        "weights_gb": llm.weights.nbytes() / 1e9,
        "build_s": round(build_s, 1),
        "logits_rel_err": rel_err(logits, ref),
        "top1_agreement_all": agree.float().mean().item(),
        "top1_agreement_confident": agree[confident].float().mean().item(),
        "confident_positions": int(confident.sum()),
        "prefill_s_unoptimized": round(prefill_s, 3),
    }
    del ref, logits

    prompt = tokens[:128]
    list(llm.generate(prompt, 4, temperature=0))  # warm-up of the decode kernels
    torch.cuda.synchronize()
    t0 = time.time()
    generated = list(llm.generate(prompt, n_generate, temperature=0))
    torch.cuda.synchronize()
    decode_s = time.time() - t0
    chain = llm.logits(prompt + generated)[len(prompt) - 1 : -1].argmax(-1).tolist()
    first_diff = next((i for i, (a, b) in enumerate(zip(generated, chain)) if a != b), None)
    result.update(
        {
            "generated": len(generated),
            "greedy_equals_argmax_chain": first_diff is None,
            "first_divergence": first_diff,
            "decode_tok_s_unoptimized": round(len(generated) / decode_s, 1),
        }
    )
    result.update(_top_p_generation(llm, prompt))
    result["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def _top_p_generation(llm, prompt: list[int], n: int = 64, top_p: float = 0.9) -> dict:
    """Top-p decoding through its own CUDA graph: the same seed draws the same tokens, each token
    lies in the nucleus of the teacher-forced logits at its position (a token at the boundary may
    fall either side of it: prefill and decode sum in different orders), and a greedy generation
    after it (the other graph) still equals the argmax chain."""
    sampled = list(llm.generate(prompt, n, temperature=1.0, top_p=top_p, seed=3))
    again = list(llm.generate(prompt, n, temperature=1.0, top_p=top_p, seed=3))
    logits = llm.logits(prompt + sampled)[len(prompt) - 1 : -1]
    inside = [bool(top_p_support(row, 1.0, top_p)[t]) for row, t in zip(logits, sampled)]
    greedy = list(llm.generate(prompt, 16, temperature=0))
    chain = llm.logits(prompt + greedy)[len(prompt) - 1 : -1].argmax(-1).tolist()
    return {"top_p_same_seed_same_tokens": sampled == again, "top_p_tokens_in_nucleus": sum(inside) / len(inside),
            "top_p_distinct_tokens": len(set(sampled)), "greedy_after_top_p_equals_argmax_chain": greedy == chain}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="20b", choices=["tiny", "20b", "120b"])
    p.add_argument("--tokens", type=int, default=512)
    p.add_argument("--generate", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-kernels", action="store_true")
    p.add_argument("--out", type=Path)
    p.add_argument("--commit", help="the commit checked (default: git's HEAD; a copy without .git has none)")
    args = p.parse_args()
    commit = args.commit or subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                                           capture_output=True, text=True).stdout.strip()
    report = {
        "date": datetime.date.today().isoformat(),
        "device": torch.cuda.get_device_name(),
        "commit": commit or "unknown",
        "torch": torch.__version__,
        "triton": __import__("triton").__version__,
    }
    if not args.skip_kernels:
        report["kernels"] = run_kernel_checks(torch.device("cuda"), large=True)
        print(json.dumps(report["kernels"], indent=1))
    report["model"] = model_check(args.size, args.tokens, args.generate, args.seed)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
