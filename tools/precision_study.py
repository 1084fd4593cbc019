"""How far does each bf16 rounding point move the 20b-shaped synthetic model from float32?

Runs the float32 reference with bf16 rounding at chosen intermediates (see
tritonllm.model.reference) and reports, against the pure float32 reference, the relative
error of the logits and the top-1 agreement where the top-2 margin exceeds 0.05.

    python tools/precision_study.py --size 20b --tokens 512 --out study.json
"""

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tritonllm.model.config import preset  # noqa: E402
from tritonllm.model.reference import reference_logits  # noqa: E402
from tritonllm.model.synthetic import synthetic_weights  # noqa: E402

VARIANTS = {
    "router only": {"router"},
    "norm": {"norm"},
    "qkv": {"qkv"},
    "attn": {"attn"},
    "act": {"act"},
    "all but router": {"norm", "qkv", "attn", "act"},
    "all": {"norm", "router", "qkv", "attn", "act"},
}


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--size", default="20b")
    p.add_argument("--tokens", type=int, default=512)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    weights = synthetic_weights(preset(args.size), 0, torch.device("cuda"))
    tokens = torch.randint(0, weights.config.vocab_size, (args.tokens,), generator=torch.Generator().manual_seed(0))
    ref = reference_logits(weights, tokens)
    top2 = ref.topk(2, dim=-1).values
    confident = (top2[:, 0] - top2[:, 1]) > 0.05
    rows = {}
    for name, points in VARIANTS.items():
        out = reference_logits(weights, tokens, frozenset(points))
        rows[name] = {
            "rel_err": ((out - ref).norm() / ref.norm()).item(),
            "top1_confident": (out.argmax(-1) == ref.argmax(-1))[confident].float().mean().item(),
        }
        print(f"{name:16s} rel_err {rows[name]['rel_err']:.4f}  top1 {rows[name]['top1_confident']:.4f}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
