"""Time to first token of a chat's next turn, on a synthetic checkpoint on the GPU.

Harmony drops a finished turn's reasoning, so the next turn's prompt is the last prompt, the
answer and the new message, without the reasoning tokens generated after the prompt. The
engine resumes such a prompt after the last prompt (the KV cache keeps the sliding layers'
rings as they were there); this times that prefill against a full one of the same tokens
(CUDA events, median of --runs) and checks that both give the same logits.

    PYTHONPATH=. python tools/bench_chat_turn.py --out turn.json [--size 20b] [--prompt-tokens 1000 4000]
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics

import torch

from tritonllm.llm import LLM


def timed_prefill(engine, tokens: list[int]) -> tuple[torch.Tensor, float]:
    """(last-position logits, milliseconds of the prefill)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    logits = engine.prefill(tokens).clone()
    end.record()
    end.synchronize()
    return logits, start.elapsed_time(end)


def next_turn(llm: LLM, prompt: list[int], generated: int, answer: int, message: list[int]) -> dict:
    """Generate `generated` tokens after `prompt`, keep the last `answer` of them as the answer,
    then time the next turn's prefill resumed and in full."""
    engine = llm.engine
    engine.reset()
    tokens = list(llm.generate(prompt, generated, temperature=0))
    follow_up = prompt + tokens[-answer:] + message
    resumed, resumed_ms = timed_prefill(engine, follow_up)
    engine.reset()
    full, full_ms = timed_prefill(engine, follow_up)
    return {"prompt": len(prompt), "follow_up": len(follow_up), "resumed_ms": resumed_ms, "full_ms": full_ms,
            "rel_err": ((resumed - full).norm() / full.norm()).item()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="20b", choices=("20b", "120b"))
    p.add_argument("--prompt-tokens", type=int, nargs="+", default=[1000, 4000])
    p.add_argument("--generated", type=int, default=300, help="tokens generated in the first turn")
    p.add_argument("--answer", type=int, default=30, help="of them, the answer the next prompt keeps")
    p.add_argument("--message", type=int, default=60, help="tokens of the next user message")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_chat_turn times on a GPU: none found")
    llm = LLM.synthetic(args.size, context_length=max(args.prompt_tokens) + args.generated + args.message + 8)
    rng = torch.Generator().manual_seed(0)
    rows = []
    for n in args.prompt_tokens:
        prompt = torch.randint(0, 199_000, (n,), generator=rng).tolist()
        message = torch.randint(0, 199_000, (args.message,), generator=rng).tolist()
        next_turn(llm, prompt, args.generated, args.answer, message)  # warm-up (JIT compiles what it needs)
        for _ in range(args.runs):
            rows.append(next_turn(llm, prompt, args.generated, args.answer, message))
            print(rows[-1], flush=True)
    median = {n: {k: statistics.median(r[k] for r in rows if r["prompt"] == n) for k in ("resumed_ms", "full_ms")}
              for n in args.prompt_tokens}
    report = {"device": torch.cuda.get_device_name(), "date": str(datetime.date.today()), "size": args.size,
              "median": median, "max_rel_err": max(r["rel_err"] for r in rows), "runs": rows}
    print(json.dumps(median, indent=1))
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
