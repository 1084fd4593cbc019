"""The model's weights on the device, and the tensor layout of both published checkpoints.

`checkpoint_specs(cfg, layout)` is the single description of what a gpt-oss checkpoint
holds (names, shapes, dtypes) in OpenAI's `original/` layout or the Hugging Face layout;
the loader checks files against it and the synthetic generator writes files from it.

On the device, MXFP4 expert weights stay packed exactly as on disk:
`blocks[e, n, k // 32, (k % 32) // 2]` holds value k of row n in its low nibble when k is
even and its high nibble when odd (FP4 E2M1), and `scales[e, n, k // 32]` is its E8M0
exponent (value 2 ** (scale - 127)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tritonllm.kernels.mxfp4 import GEMV_MAX_SCALE_CODE
from tritonllm.model.config import ModelConfig
from tritonllm.model.safetensors_io import CheckpointError

BF16, U8 = torch.bfloat16, torch.uint8


@dataclass(frozen=True)
class Spec:
    """One tensor in a checkpoint file, and where it goes in `Weights`."""

    name: str  # name in the file
    shape: tuple[int, ...]
    dtype: torch.dtype
    target: str  # canonical name (OpenAI layout); several specs may share one target
    offset: int = 0  # first row in the target when several file tensors stack along dim 0


@dataclass
class LayerWeights:
    attn_norm: torch.Tensor  # [H] fp32
    qkv_weight: torch.Tensor  # [Q + 2 KV, H] bf16
    qkv_bias: torch.Tensor  # [Q + 2 KV] bf16
    sinks: torch.Tensor  # [heads] fp32
    out_weight: torch.Tensor  # [H, Q] bf16
    out_bias: torch.Tensor  # [H] bf16
    mlp_norm: torch.Tensor  # [H] fp32
    gate_weight: torch.Tensor  # [E, H] bf16
    gate_bias: torch.Tensor  # [E] bf16
    mlp1_blocks: torch.Tensor  # [E, 2I, H/32, 16] uint8
    mlp1_scales: torch.Tensor  # [E, 2I, H/32] uint8
    mlp1_bias: torch.Tensor  # [E, 2I] bf16
    mlp2_blocks: torch.Tensor  # [E, H, I/32, 16] uint8
    mlp2_scales: torch.Tensor  # [E, H, I/32] uint8
    mlp2_bias: torch.Tensor  # [E, H] bf16


@dataclass
class Weights:
    config: ModelConfig
    embedding: torch.Tensor  # [V, H] bf16
    layers: list[LayerWeights]
    norm: torch.Tensor  # [H] fp32
    unembedding: torch.Tensor  # [V, H] bf16

    @property
    def device(self) -> torch.device:
        return self.embedding.device

    def nbytes(self) -> int:
        tensors = [self.embedding, self.norm, self.unembedding]
        for layer in self.layers:
            tensors += list(vars(layer).values())
        return sum(t.numel() * t.element_size() for t in tensors)


# Canonical (OpenAI layout) name suffix -> LayerWeights field, and the dtype kept on device.
_LAYER_FIELDS = {
    "attn.norm.scale": ("attn_norm", torch.float32),
    "attn.qkv.weight": ("qkv_weight", BF16),
    "attn.qkv.bias": ("qkv_bias", BF16),
    "attn.sinks": ("sinks", torch.float32),
    "attn.out.weight": ("out_weight", BF16),
    "attn.out.bias": ("out_bias", BF16),
    "mlp.norm.scale": ("mlp_norm", torch.float32),
    "mlp.gate.weight": ("gate_weight", BF16),
    "mlp.gate.bias": ("gate_bias", BF16),
    "mlp.mlp1_weight.blocks": ("mlp1_blocks", U8),
    "mlp.mlp1_weight.scales": ("mlp1_scales", U8),
    "mlp.mlp1_bias": ("mlp1_bias", BF16),
    "mlp.mlp2_weight.blocks": ("mlp2_blocks", U8),
    "mlp.mlp2_weight.scales": ("mlp2_scales", U8),
    "mlp.mlp2_bias": ("mlp2_bias", BF16),
}
_GLOBAL_FIELDS = {
    "embedding.weight": ("embedding", BF16),
    "norm.scale": ("norm", torch.float32),
    "unembedding.weight": ("unembedding", BF16),
}

# Hugging Face name -> (canonical suffix, part index). The HF layout splits qkv in three.
_HF_LAYER_NAMES = {
    "input_layernorm.weight": ("attn.norm.scale", 0),
    "self_attn.q_proj.weight": ("attn.qkv.weight", 0),
    "self_attn.k_proj.weight": ("attn.qkv.weight", 1),
    "self_attn.v_proj.weight": ("attn.qkv.weight", 2),
    "self_attn.q_proj.bias": ("attn.qkv.bias", 0),
    "self_attn.k_proj.bias": ("attn.qkv.bias", 1),
    "self_attn.v_proj.bias": ("attn.qkv.bias", 2),
    "self_attn.sinks": ("attn.sinks", 0),
    "self_attn.o_proj.weight": ("attn.out.weight", 0),
    "self_attn.o_proj.bias": ("attn.out.bias", 0),
    "post_attention_layernorm.weight": ("mlp.norm.scale", 0),
    "mlp.router.weight": ("mlp.gate.weight", 0),
    "mlp.router.bias": ("mlp.gate.bias", 0),
    "mlp.experts.gate_up_proj_blocks": ("mlp.mlp1_weight.blocks", 0),
    "mlp.experts.gate_up_proj_scales": ("mlp.mlp1_weight.scales", 0),
    "mlp.experts.gate_up_proj_bias": ("mlp.mlp1_bias", 0),
    "mlp.experts.down_proj_blocks": ("mlp.mlp2_weight.blocks", 0),
    "mlp.experts.down_proj_scales": ("mlp.mlp2_weight.scales", 0),
    "mlp.experts.down_proj_bias": ("mlp.mlp2_bias", 0),
}
_HF_GLOBAL_NAMES = {
    "model.embed_tokens.weight": "embedding.weight",
    "model.norm.weight": "norm.scale",
    "lm_head.weight": "unembedding.weight",
}


def _layer_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    H, I, E = cfg.hidden_size, cfg.intermediate_size, cfg.num_experts
    return {
        "attn.norm.scale": (H,),
        "attn.qkv.weight": (cfg.qkv_size, H),
        "attn.qkv.bias": (cfg.qkv_size,),
        "attn.sinks": (cfg.num_attention_heads,),
        "attn.out.weight": (H, cfg.q_size),
        "attn.out.bias": (H,),
        "mlp.norm.scale": (H,),
        "mlp.gate.weight": (E, H),
        "mlp.gate.bias": (E,),
        "mlp.mlp1_weight.blocks": (E, 2 * I, H // 32, 16),
        "mlp.mlp1_weight.scales": (E, 2 * I, H // 32),
        "mlp.mlp1_bias": (E, 2 * I),
        "mlp.mlp2_weight.blocks": (E, H, I // 32, 16),
        "mlp.mlp2_weight.scales": (E, H, I // 32),
        "mlp.mlp2_bias": (E, H),
    }


def _file_dtype(suffix: str) -> torch.dtype:
    # On disk everything is bf16 except the packed MXFP4 bytes.
    return U8 if suffix.endswith(("blocks", "scales")) else BF16


def checkpoint_specs(cfg: ModelConfig, layout: str) -> list[Spec]:
    """Every tensor of a checkpoint in `layout` ("original" or "hf"), in file order."""
    H, V = cfg.hidden_size, cfg.vocab_size
    shapes = _layer_shapes(cfg)
    if layout == "original":
        specs = [Spec("embedding.weight", (V, H), BF16, "embedding.weight")]
        for i in range(cfg.num_hidden_layers):
            for suffix, shape in shapes.items():
                name = f"block.{i}.{suffix}"
                specs.append(Spec(name, shape, _file_dtype(suffix), name))
        specs += [
            Spec("norm.scale", (H,), BF16, "norm.scale"),
            Spec("unembedding.weight", (V, H), BF16, "unembedding.weight"),
        ]
        return specs
    if layout != "hf":
        raise ValueError(f"unknown checkpoint layout {layout!r}: expected 'original' or 'hf'")
    part_rows = {0: cfg.q_size, 1: cfg.kv_size, 2: cfg.kv_size}
    part_offsets = {0: 0, 1: cfg.q_size, 2: cfg.q_size + cfg.kv_size}
    specs = [Spec("model.embed_tokens.weight", (V, H), BF16, "embedding.weight")]
    for i in range(cfg.num_hidden_layers):
        for hf_suffix, (suffix, part) in _HF_LAYER_NAMES.items():
            shape = shapes[suffix]
            if suffix.startswith("attn.qkv"):
                shape = (part_rows[part],) + shape[1:]
            name = f"model.layers.{i}.{hf_suffix}"
            specs.append(Spec(name, shape, _file_dtype(suffix), f"block.{i}.{suffix}", part_offsets[part]))
    specs += [
        Spec("model.norm.weight", (H,), BF16, "norm.scale"),
        Spec("lm_head.weight", (V, H), BF16, "unembedding.weight"),
    ]
    return specs


def canonical_shape(cfg: ModelConfig, target: str) -> tuple[int, ...]:
    if target.startswith("block."):
        return _layer_shapes(cfg)[target.split(".", 2)[2]]
    return {"embedding.weight": (cfg.vocab_size, cfg.hidden_size),
            "unembedding.weight": (cfg.vocab_size, cfg.hidden_size),
            "norm.scale": (cfg.hidden_size,)}[target]


def device_dtype(target: str) -> torch.dtype:
    key = target.split(".", 2)[2] if target.startswith("block.") else target
    return (_LAYER_FIELDS.get(key) or _GLOBAL_FIELDS[key])[1]


MAX_SCALE_CODE = GEMV_MAX_SCALE_CODE  # E8M0 2^33: the decode GEMV's bf16 block factor


def _check_scales(scales: torch.Tensor, name: str) -> None:
    """MXFP4 scales past 2^33 (weights of 2^35) are no real weight, and would overflow the
    kernels' folded scale factors."""
    if scales.device.type != "meta" and scales.numel() and int(scales.max()) > MAX_SCALE_CODE:
        raise CheckpointError(
            f"{name}: MXFP4 scale exponent {int(scales.max()) - 127} is out of range (at most "
            f"{MAX_SCALE_CODE - 127}); the checkpoint is corrupt"
        )


def assemble(cfg: ModelConfig, tensors: dict[str, torch.Tensor]) -> Weights:
    """Build `Weights` from canonical-name tensors already on the device, in device dtypes."""
    layers = []
    for i in range(cfg.num_hidden_layers):
        fields = {f: tensors.pop(f"block.{i}.{suffix}") for suffix, (f, _) in _LAYER_FIELDS.items()}
        for name in ("mlp1_scales", "mlp2_scales"):
            _check_scales(fields[name], f"block.{i}.{name}")
        layers.append(LayerWeights(**fields))
    return Weights(
        config=cfg,
        embedding=tensors.pop("embedding.weight"),
        layers=layers,
        norm=tensors.pop("norm.scale"),
        unembedding=tensors.pop("unembedding.weight"),
    )
