"""A float32 PyTorch gpt-oss forward pass, written from the model's math. Tests and tools only.

Everything is computed in float32 from the same `Weights` the engine runs, with MXFP4
experts dequantized on the fly (only the experts a layer's tokens pick), so the engine's
logits can be checked against it on the CPU (tiny model) and on the GPU (20b shapes).
"""

from __future__ import annotations

import math

import torch

from tritonllm.model.config import ModelConfig
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


def rms_norm(x: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * scale.float()


def rope_tables(cfg: ModelConfig, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """YaRN cos/sin, [T, head_dim/2] each, with the concentration factor folded in."""
    d_half = cfg.head_dim // 2
    freq = cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float32) / cfg.head_dim)
    if cfg.rope_scaling_factor > 1.0:
        concentration = 0.1 * math.log(cfg.rope_scaling_factor) + 1.0
        ctx, base = cfg.initial_context_length, cfg.rope_theta
        low = d_half * math.log(ctx / (cfg.rope_ntk_beta * 2 * math.pi)) / math.log(base)
        high = d_half * math.log(ctx / (cfg.rope_ntk_alpha * 2 * math.pi)) / math.log(base)
        ramp = ((torch.arange(d_half, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
        extrapolate = 1 - ramp  # 1 for the high-frequency dims, which keep their frequency
        inv_freq = (1.0 / (cfg.rope_scaling_factor * freq)) * ramp + (1.0 / freq) * extrapolate
    else:
        concentration, inv_freq = 1.0, 1.0 / freq
    angles = positions.float()[:, None].cpu() * inv_freq[None, :]
    return (angles.cos() * concentration).to(positions.device), (angles.sin() * concentration).to(positions.device)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [T, heads, head_dim]; rotates the first half against the second half."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos[:, None, :], sin[:, None, :]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def attention(layer: LayerWeights, cfg: ModelConfig, x: torch.Tensor, sliding: bool) -> torch.Tensor:
    T = x.shape[0]
    h = rms_norm(x, layer.attn_norm, cfg.rms_norm_eps)
    qkv = h @ layer.qkv_weight.float().T + layer.qkv_bias.float()
    q = qkv[:, : cfg.q_size].view(T, cfg.num_attention_heads, cfg.head_dim)
    k = qkv[:, cfg.q_size : cfg.q_size + cfg.kv_size].view(T, cfg.num_key_value_heads, cfg.head_dim)
    v = qkv[:, cfg.q_size + cfg.kv_size :].view(T, cfg.num_key_value_heads, cfg.head_dim)
    cos, sin = rope_tables(cfg, torch.arange(T, device=x.device))
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    group = cfg.num_attention_heads // cfg.num_key_value_heads
    k = k.repeat_interleave(group, dim=1)  # query head j reads kv head j // group
    v = v.repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q, k) * cfg.sm_scale  # [heads, T, T]
    i = torch.arange(T, device=x.device)
    masked = i[None, :] > i[:, None]
    if sliding:
        masked |= i[None, :] <= i[:, None] - cfg.sliding_window
    scores = scores.masked_fill(masked, float("-inf"))
    sinks = layer.sinks.float()[:, None, None].expand(-1, T, 1)
    probs = torch.softmax(torch.cat([scores, sinks], dim=-1), dim=-1)[..., :-1]
    out = torch.einsum("hqk,khd->qhd", probs, v).reshape(T, cfg.q_size)
    return x + out @ layer.out_weight.float().T + layer.out_bias.float()


def swiglu(h: torch.Tensor, limit: float, alpha: float = 1.702) -> torch.Tensor:
    """Clamped SwiGLU over interleaved columns: even = gate, odd = linear (+1)."""
    glu, lin = h[..., 0::2].clamp(max=limit), h[..., 1::2].clamp(-limit, limit)
    return glu * torch.sigmoid(alpha * glu) * (lin + 1)


def route(layer: LayerWeights, cfg: ModelConfig, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k experts per token and their softmax weights over the chosen k: [T, k] each."""
    logits = h @ layer.gate_weight.float().T + layer.gate_bias.float()
    top = torch.topk(logits, cfg.experts_per_token, dim=-1, sorted=True)
    return top.indices, torch.softmax(top.values, dim=-1)


def moe(layer: LayerWeights, cfg: ModelConfig, x: torch.Tensor) -> torch.Tensor:
    h = rms_norm(x, layer.mlp_norm, cfg.rms_norm_eps)
    experts, gates = route(layer, cfg, h)
    out = torch.zeros_like(x)
    for e in experts.unique().tolist():
        rows, slot = (experts == e).nonzero(as_tuple=True)
        w1 = dequantize_mxfp4(layer.mlp1_blocks[e], layer.mlp1_scales[e])
        w2 = dequantize_mxfp4(layer.mlp2_blocks[e], layer.mlp2_scales[e])
        a = swiglu(h[rows] @ w1.T + layer.mlp1_bias[e].float(), cfg.swiglu_limit)
        y = a @ w2.T + layer.mlp2_bias[e].float()
        out.index_add_(0, rows, y * gates[rows, slot, None])
    return x + out


def reference_logits(weights: Weights, tokens: torch.Tensor) -> torch.Tensor:
    """Teacher-forced logits [T, vocab], float32, for token ids `tokens` [T]."""
    cfg = weights.config
    x = weights.embedding[tokens.to(weights.device)].float()
    for i, layer in enumerate(weights.layers):
        x = attention(layer, cfg, x, cfg.sliding_layers[i])
        x = moe(layer, cfg, x)
    x = rms_norm(x, weights.norm, cfg.rms_norm_eps)
    return x @ weights.unembedding.float().T
