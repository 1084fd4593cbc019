"""The gpt-oss forward pass, composed from our kernels. No state but the weights: the KV
cache and scratch buffers belong to the engine and are passed in.

Per layer: x += out_proj(attention(rope(qkv(norm(x))))); x += moe(norm(x)). Weights are bf16
and MXFP4 as published; every activation, the KV cache included, is float32, and matmuls
keep float32 accuracy on bf16 tensor cores (kernels.common.dot).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tritonllm.kernels.attention import attention_decode, attention_prefill, decode_scratch
from tritonllm.kernels.embedding import embedding
from tritonllm.kernels.linear import linear
from tritonllm.kernels.moe import moe_combine, moe_experts, topk_softmax
from tritonllm.kernels.rmsnorm import rmsnorm
from tritonllm.kernels.rope import rope_qkv
from tritonllm.model.config import ModelConfig
from tritonllm.model.rope import yarn_frequencies
from tritonllm.model.weights import LayerWeights, Weights


@dataclass
class KVCache:
    """Keys and values of every layer for positions 0..context_length-1: [L, ctx, KVH, D] float32."""

    k: torch.Tensor
    v: torch.Tensor

    @staticmethod
    def allocate(cfg: ModelConfig, context_length: int, device: torch.device) -> "KVCache":
        shape = (cfg.num_hidden_layers, context_length, cfg.num_key_value_heads, cfg.head_dim)
        return KVCache(torch.zeros(shape, device=device), torch.zeros(shape, device=device))

    @property
    def context_length(self) -> int:
        return self.k.shape[1]


class Transformer:
    def __init__(self, weights: Weights):
        self.weights = weights
        self.config = weights.config
        concentration, inv_freq = yarn_frequencies(self.config)
        self.concentration = concentration
        self.inv_freq = inv_freq.to(weights.device)

    def prefill(self, tokens: torch.Tensor, pos0: int, cache: KVCache, all_logits: bool = False) -> torch.Tensor:
        """tokens [T] int32 (on the device) at positions pos0..pos0+T-1; keys and values
        0..pos0-1 must already be in `cache`. Returns float32 logits [T, V] if all_logits,
        else [1, V] for the last position."""
        T = tokens.shape[0]
        positions = torch.arange(pos0, pos0 + T, dtype=torch.int32, device=tokens.device)

        def attend(i: int, q: torch.Tensor) -> torch.Tensor:
            layer = self.weights.layers[i]
            return attention_prefill(q, cache.k[i], cache.v[i], layer.sinks, pos0, self.config.sm_scale, self._window(i))

        x = self._layers(tokens, positions, cache, attend)
        return self._logits(x if all_logits else x[-1:])

    def decode(self, token: torch.Tensor, pos: torch.Tensor, cache: KVCache, scratch) -> torch.Tensor:
        """One token [1] int32 at the position held in `pos` [1] int32, both on the device
        (so the step can be captured in a CUDA graph). Returns logits [1, V] float32."""

        def attend(i: int, q: torch.Tensor) -> torch.Tensor:
            layer = self.weights.layers[i]
            return attention_decode(
                q, cache.k[i], cache.v[i], layer.sinks, pos, self.config.sm_scale, self._window(i), scratch=scratch
            )

        return self._logits(self._layers(token, pos, cache, attend))

    def decode_scratch(self, context_length: int):
        cfg = self.config
        return decode_scratch(context_length, cfg.num_attention_heads, cfg.head_dim, self.weights.device)

    def _window(self, i: int) -> int:
        return self.config.sliding_window if self.config.sliding_layers[i] else 0

    def _layers(self, tokens, positions, cache: KVCache, attend) -> torch.Tensor:
        cfg, w = self.config, self.weights
        x = embedding(tokens, w.embedding)  # [T, H] float32 residual stream
        for i, layer in enumerate(w.layers):
            h = rmsnorm(x, layer.attn_norm, cfg.rms_norm_eps)
            qkv = linear(h, layer.qkv_weight, layer.qkv_bias)
            q = rope_qkv(qkv, positions, self.inv_freq, self.concentration, cache.k[i], cache.v[i], cfg.num_attention_heads)
            a = attend(i, q).view(q.shape[0], cfg.q_size)
            linear(a, layer.out_weight, layer.out_bias, residual=x, out=x)
            self._moe(layer, x)
        return x

    def _moe(self, layer: LayerWeights, x: torch.Tensor) -> None:
        cfg = self.config
        h = rmsnorm(x, layer.mlp_norm, cfg.rms_norm_eps)
        gate_logits = linear(h, layer.gate_weight, layer.gate_bias)
        ids, gates = topk_softmax(gate_logits, cfg.experts_per_token)
        w1 = (layer.mlp1_blocks, layer.mlp1_scales, layer.mlp1_bias)
        w2 = (layer.mlp2_blocks, layer.mlp2_scales, layer.mlp2_bias)
        y = moe_experts(h, ids, gates, w1, w2, cfg.swiglu_limit)
        moe_combine(y, x, cfg.experts_per_token)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        h = rmsnorm(x.contiguous(), self.weights.norm, self.config.rms_norm_eps)
        return linear(h, self.weights.unembedding)
