"""Per-kernel GPU time of one prefill and of one decode step, with each kernel's share.

    python tools/profile_step.py --size 20b --context 4096 --prefill 2048

Uses torch.profiler (CUPTI): prefill over eager launches, the decode step as the engine runs
it, replays of its CUDA graph. Decode kernels launch as programmatic dependents (sm90+): a
kernel starts while the one before it ends and waits inside, so its duration overlaps its
predecessor's. The decode table therefore also gives each kernel's "added" time, its end
minus the previous kernel's end: what it adds to the step (these sum to the step's time).
Decode kernels of the same name are told apart by their order within the layer, [0], [1]...
"""

import argparse
import collections
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tritonllm import LLM  # noqa: E402


def _kernel_events(fn, repeats: int) -> list:
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(repeats):
            fn()
        torch.cuda.synchronize()
    events = [e for e in prof.profiler.kineto_results.events() if e.device_type() == torch.autograd.DeviceType.CUDA]
    return sorted(events, key=lambda e: e.start_ns())


def kernel_times(fn, repeats: int) -> dict[str, tuple[float, int]]:
    """{kernel: (us per call of fn, launches per call)}."""
    totals: dict[str, list] = collections.defaultdict(lambda: [0.0, 0])
    for e in _kernel_events(fn, repeats):
        totals[e.name()][0] += e.duration_ns() / 1e3 / repeats
        totals[e.name()][1] += 1
    return {k: (v[0], v[1] // repeats) for k, v in totals.items()}


def step_times(fn, repeats: int, layer_start: str, layer_kinds: list[str]) -> tuple[dict, dict]:
    """Per kernel (by name and order within its layer; a layer begins at `layer_start`;
    attention kernels also by their layer's kind): (us of duration per step, launches per
    step) and (us added to the step, launches per step)."""
    duration: dict[str, list] = collections.defaultdict(lambda: [0.0, 0])
    added: dict[str, list] = collections.defaultdict(lambda: [0.0, 0])
    seen: collections.Counter = collections.Counter()
    last_end, layer = None, -1
    for e in _kernel_events(fn, repeats):
        if layer_start in e.name():
            seen.clear()
            layer = (layer + 1) % len(layer_kinds)
        key = f"{e.name()}[{seen[e.name()]}]"
        if "attention" in e.name():
            key += f" {layer_kinds[layer]}"
        seen[e.name()] += 1
        end = e.start_ns() + e.duration_ns()
        duration[key][0] += e.duration_ns() / 1e3 / repeats
        duration[key][1] += 1
        if last_end is not None and e.start_ns() < last_end + 100_000:  # same step (replays are back to back)
            added[key][0] += max(0, end - last_end) / 1e3 / repeats
        else:
            added[key][0] += e.duration_ns() / 1e3 / repeats
        added[key][1] += 1
        last_end = end if last_end is None else max(last_end, end)
    per_step = lambda d: {k: (v[0], v[1] // repeats) for k, v in d.items()}  # noqa: E731
    return per_step(duration), per_step(added)


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
    llm = LLM.synthetic(args.size, context_length=max(args.context, args.prefill) + 64)  # steps advance the position
    engine = llm.engine
    tokens = torch.randint(0, 199998, (args.prefill,)).tolist()
    def prefill():  # as generation runs it: the whole prompt (no cached prefix), last-token logits
        engine.reset()
        engine.prefill(tokens)

    show(f"prefill of {args.prefill} tokens", kernel_times(prefill, 2))
    engine.pos.fill_(args.context - 1)
    kinds = ["sliding" if s else "full" for s in llm.config.sliding_layers]
    duration, added = step_times(engine._step, 20, layer_start="qkv_rope_decode", layer_kinds=kinds)
    where = f"positions {args.context - 1}..{args.context + 19}"
    show(f"decode step at {where} (CUDA graph), kernel durations", duration)
    show(f"decode step at {where} (CUDA graph), time added to the step", added)


if __name__ == "__main__":
    main()
