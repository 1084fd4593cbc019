"""Random gpt-oss weights with realistic magnitudes, on disk or straight into device memory.

No real gpt-oss weights can be had where we test, so every test and benchmark runs on
these. Values depend only on (seed, canonical tensor name): the `original` and `hf` files
written for one seed, and the weights built in device memory, hold the same model (up to
the device's random number generator: CPU and CUDA generators differ).
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import torch
from tqdm import tqdm

from tritonllm.model.config import ModelConfig
from tritonllm.model.safetensors_io import write_safetensors
from tritonllm.model.weights import Weights, assemble, canonical_shape, checkpoint_specs, device_dtype

SCALE_BIAS = 127
DEFAULT_SHARD_BYTES = 4 << 30


def random_tensor(target: str, cfg: ModelConfig, seed: int, device="cpu") -> torch.Tensor:
    """The canonical tensor `target`, as stored on disk (bf16, or uint8 for MXFP4 bytes)."""
    gen = torch.Generator(device=device).manual_seed(seed * 1_000_003 + zlib.crc32(target.encode()))
    shape = canonical_shape(cfg, target)
    if target.endswith(".blocks"):  # uniformly random FP4 nibbles
        return torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen, device=device)
    if target.endswith(".scales"):  # E8M0 exponents 2^-9 .. 2^-7, around 2^-8
        return torch.randint(SCALE_BIAS - 9, SCALE_BIAS - 6, shape, dtype=torch.uint8, generator=gen, device=device)
    t = torch.randn(shape, generator=gen, device=device)
    if target.endswith("norm.scale"):
        t.mul_(0.1).add_(1.0)  # in place: one float32 copy at a time (2.3 GB for the embedding)
    elif not target.endswith("sinks"):  # sinks ~ N(0, 1): comparable to attention scores
        t.mul_(0.02)
    return t.to(torch.bfloat16)


def synthetic_weights(cfg: ModelConfig, seed: int, device: torch.device) -> Weights:
    """Random weights built directly in `device` memory (no file: 120b is 65 GB on disk)."""
    targets = dict.fromkeys(s.target for s in checkpoint_specs(cfg, "original"))
    # Float tensors first, biggest first: the float32 draw of the 201088-row embedding then
    # happens while little else is on the device, so building does not raise the peak above
    # running the model. (Each target has its own generator: the order changes no value.)
    def float_draw(t: str) -> int:
        return 0 if t.endswith((".blocks", ".scales")) else math.prod(canonical_shape(cfg, t))

    order = sorted(targets, key=float_draw, reverse=True)
    tensors = {t: random_tensor(t, cfg, seed, device).to(device_dtype(t)) for t in order}
    return assemble(cfg, tensors)


def write_checkpoint(
    cfg: ModelConfig, layout: str, seed: int, out_dir: str | Path, shard_bytes: int = DEFAULT_SHARD_BYTES,
    progress: bool = False,
) -> Path:
    """Write a synthetic checkpoint folder in `layout` ("original" or "hf"), bit-exact to the
    published on-disk format: config.json plus safetensors (sharded with an index for "hf")."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specs = checkpoint_specs(cfg, layout)
    (out / "config.json").write_text(json.dumps(cfg.to_json(layout), indent=2) + "\n")

    cache: dict[str, torch.Tensor] = {}
    total = sum(s.dtype.itemsize * torch.Size(s.shape).numel() for s in specs)
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="writing weights", disable=not progress)

    def make(name: str) -> torch.Tensor:
        spec = by_name[name]
        bar.update(spec.dtype.itemsize * torch.Size(spec.shape).numel())
        if spec.target not in cache:  # parts of one target (hf q/k/v) are adjacent
            cache.clear()
            cache[spec.target] = random_tensor(spec.target, cfg, seed)
        return cache[spec.target][spec.offset : spec.offset + spec.shape[0]].to(spec.dtype)

    by_name = {s.name: s for s in specs}
    if layout == "original":
        write_safetensors(out / "model.safetensors", [(s.name, s.dtype, s.shape) for s in specs], make)
        bar.close()
        return out

    shards: list[list] = [[]]
    size = 0
    for s in specs:
        nbytes = s.dtype.itemsize * torch.Size(s.shape).numel()
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(s)
        size += nbytes
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i:05d}-of-{len(shards) - 1:05d}.safetensors"
        write_safetensors(out / fname, [(s.name, s.dtype, s.shape) for s in shard], make)
        weight_map.update({s.name: fname for s in shard})
    bar.close()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return out
