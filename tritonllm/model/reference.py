"""A float32 PyTorch gpt-oss forward pass, written from the model's math. Tests and tools only.

Everything is computed in float32 from the same `Weights` the engine runs, with MXFP4
experts dequantized on the fly (only the experts a layer's tokens pick), so the engine's
logits can be checked against it on the CPU (tiny model) and on the GPU (20b shapes).

`bf16_at` rounds chosen intermediates to bf16 where an engine might, to measure what each
rounding costs against the pure float32 model (tools/precision_study.py):
"norm" (normalized activations entering qkv, experts and unembedding), "router" (the
router's input), "qkv" (q, k, v after RoPE), "attn" (attention output), "act" (SwiGLU
output).
"""

from __future__ import annotations

import torch

from tritonllm.kernels.attention import attention_reference
from tritonllm.kernels.moe import swiglu_reference
from tritonllm.kernels.rmsnorm import rmsnorm_reference
from tritonllm.kernels.rope import rope_reference
from tritonllm.model.config import ModelConfig
from tritonllm.model.rope import yarn_frequencies
from tritonllm.model.weights import LayerWeights, Weights

FP4_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)


def dequantize_mxfp4(blocks: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """[..., N, K/32, 16] uint8 blocks + [..., N, K/32] E8M0 scales -> [..., N, K] float32."""
    lut = torch.tensor(FP4_VALUES, dtype=torch.float32, device=blocks.device)
    lo = lut[(blocks & 0x0F).long()]
    hi = lut[(blocks >> 4).long()]
    values = torch.stack([lo, hi], dim=-1).flatten(-2)  # [..., N, K/32, 32]: low nibble first
    values = torch.ldexp(values, scales.to(torch.int32).unsqueeze(-1) - 127)
    return values.flatten(-2)


class _Rounding:
    def __init__(self, points: frozenset[str]):
        unknown = set(points) - {"norm", "router", "qkv", "attn", "act"}
        if unknown:
            raise ValueError(f"unknown rounding points {sorted(unknown)}")
        self.points = points

    def __call__(self, point: str, t: torch.Tensor) -> torch.Tensor:
        return t.bfloat16().float() if point in self.points else t


def attention(layer: LayerWeights, cfg: ModelConfig, x: torch.Tensor, sliding: bool, rnd: _Rounding) -> torch.Tensor:
    T = x.shape[0]
    h = rnd("norm", rmsnorm_reference(x, layer.attn_norm, cfg.rms_norm_eps))
    qkv = h @ layer.qkv_weight.float().T + layer.qkv_bias.float()
    q = qkv[:, : cfg.q_size].view(T, cfg.num_attention_heads, cfg.head_dim)
    k = qkv[:, cfg.q_size : cfg.q_size + cfg.kv_size].view(T, cfg.num_key_value_heads, cfg.head_dim)
    v = qkv[:, cfg.q_size + cfg.kv_size :].view(T, cfg.num_key_value_heads, cfg.head_dim)
    concentration, inv_freq = yarn_frequencies(cfg)
    positions = torch.arange(T, device=x.device)
    inv_freq = inv_freq.to(x.device)
    q = rnd("qkv", rope_reference(q, positions, inv_freq, concentration))
    k = rnd("qkv", rope_reference(k, positions, inv_freq, concentration))
    v = rnd("qkv", v)
    window = cfg.sliding_window if sliding else 0
    out = rnd("attn", attention_reference(q, k, v, layer.sinks, 0, cfg.sm_scale, window).reshape(T, cfg.q_size))
    return x + out @ layer.out_weight.float().T + layer.out_bias.float()


def route(layer: LayerWeights, cfg: ModelConfig, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k experts per token and their softmax weights over the chosen k: [T, k] each."""
    logits = h @ layer.gate_weight.float().T + layer.gate_bias.float()
    top = torch.topk(logits, cfg.experts_per_token, dim=-1, sorted=True)
    return top.indices, torch.softmax(top.values, dim=-1)


def moe(layer: LayerWeights, cfg: ModelConfig, x: torch.Tensor, rnd: _Rounding) -> torch.Tensor:
    h = rmsnorm_reference(x, layer.mlp_norm, cfg.rms_norm_eps)
    experts, gates = route(layer, cfg, rnd("router", h))
    h = rnd("norm", h)
    out = torch.zeros_like(x)
    for e in experts.unique().tolist():
        rows, slot = (experts == e).nonzero(as_tuple=True)
        w1 = dequantize_mxfp4(layer.mlp1_blocks[e], layer.mlp1_scales[e])
        w2 = dequantize_mxfp4(layer.mlp2_blocks[e], layer.mlp2_scales[e])
        a = rnd("act", swiglu_reference(h[rows] @ w1.T + layer.mlp1_bias[e].float(), cfg.swiglu_limit))
        y = a @ w2.T + layer.mlp2_bias[e].float()
        out.index_add_(0, rows, y * gates[rows, slot, None])
    return x + out


def reference_logits(weights: Weights, tokens: torch.Tensor, bf16_at: frozenset[str] = frozenset()) -> torch.Tensor:
    """Teacher-forced logits [T, vocab], float32, for token ids `tokens` [T]."""
    cfg, rnd = weights.config, _Rounding(bf16_at)
    x = weights.embedding[tokens.to(weights.device)].float()
    for i, layer in enumerate(weights.layers):
        x = attention(layer, cfg, x, cfg.sliding_layers[i], rnd)
        x = moe(layer, cfg, x, rnd)
    h = rnd("norm", rmsnorm_reference(x, weights.norm, cfg.rms_norm_eps))
    return h @ weights.unembedding.float().T
