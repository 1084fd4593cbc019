"""Write a synthetic gpt-oss checkpoint: random weights, bit-exact to the published format.

    python tools/make_checkpoint.py --size tiny --layout original --seed 0 /tmp/tiny
    python tools/make_checkpoint.py --size 20b --layout hf --seed 0 /data/gpt-oss-20b-synthetic

bf16 weights ~ N(0, 0.02), MXFP4 scales around 2^-8, with config.json. The 20b checkpoint
is ~13.8 GB and 120b ~65 GB on disk; for benchmarks `LLM.synthetic(size)` builds the same
kind of weights directly in GPU memory instead.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tritonllm.model.config import preset  # noqa: E402
from tritonllm.model.synthetic import DEFAULT_SHARD_BYTES, write_checkpoint  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", required=True, choices=["tiny", "20b", "120b"])
    p.add_argument("--layout", default="original", choices=["original", "hf"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vocab-size", type=int, help="override the vocabulary size (default: the real 201088)")
    p.add_argument("--shard-gb", type=float, default=DEFAULT_SHARD_BYTES / 2**30, help="hf layout shard size")
    p.add_argument("out_dir", type=Path)
    args = p.parse_args(argv)
    cfg = preset(args.size, vocab_size=args.vocab_size)
    out = write_checkpoint(cfg, args.layout, args.seed, args.out_dir, shard_bytes=int(args.shard_gb * 2**30), progress=True)
    print(f"wrote {args.size} ({args.layout} layout, seed {args.seed}) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
