"""Per-kernel GPU time of one decode step and of one prefill, with each kernel's share.

    python tools/profile_step.py --size 20b --context 4096 --prefill 2048

Uses torch.profiler (CUPTI) over eager launches; prints a table per phase, slowest first.
"""

import argparse
import collections
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tritonllm import LLM  # noqa: E402


def kernel_times(fn, repeats: int) -> dict[str, tuple[float, int]]:
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(repeats):
            fn()
        torch.cuda.synchronize()
    totals: dict[str, list] = collections.defaultdict(lambda: [0.0, 0])
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            totals[e.name][0] += e.device_time / repeats
            totals[e.name][1] += 1
    return {k: (v[0], v[1] // repeats) for k, v in totals.items()}


def show(title: str, times: dict) -> None:
    total = sum(t for t, _ in times.values())
    print(f"\n{title}: {total / 1e3:.3f} ms of GPU time")
    for name, (t, n) in sorted(times.items(), key=lambda kv: -kv[1][0]):
        print(f"  {t / 1e3:8.3f} ms  {t / total:6.1%}  x{n:<4d} {name[:80]}")


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--size", default="20b")
    p.add_argument("--context", type=int, default=4096)
    p.add_argument("--prefill", type=int, default=2048)
    args = p.parse_args()
    llm = LLM.synthetic(args.size, context_length=max(args.context, args.prefill) + 16, cuda_graph=False)
    engine = llm.engine
    tokens = torch.randint(0, 199998, (args.prefill,)).tolist()
    show(f"prefill of {args.prefill} tokens", kernel_times(lambda: engine.logits(tokens), 2))
    engine.pos.fill_(args.context - 1)
    show(f"decode step at position {args.context - 1}", kernel_times(engine._decode, 5))


if __name__ == "__main__":
    main()
