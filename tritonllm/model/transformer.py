"""The gpt-oss forward pass, composed from our kernels. No state but the weights: the KV
cache and scratch buffers belong to the engine and are passed in.

Per layer: x += out_proj(attention(rope(qkv(norm(x))))); x += moe(norm(x)), each norm fused
into the matmul after it (kernels.rmsnorm). Weights are bf16
and MXFP4 as published; every activation, the KV cache included, is float32, and matmuls
keep float32 accuracy on bf16 tensor cores (kernels.common.dot). Full-attention layers cache
the whole context; sliding-window layers only their window, in a ring.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tritonllm.kernels.attention import DecodeScratch, attention_decode, attention_prefill
from tritonllm.kernels.embedding import embedding
from tritonllm.kernels.linear import linear
from tritonllm.kernels.moe import moe_experts
from tritonllm.kernels.moe_gemv import moe_arrivals
from tritonllm.kernels.rmsnorm import Norm
from tritonllm.kernels.rope import kv_store, qkv_rope_decode, rope_qkv
from tritonllm.model.config import ModelConfig
from tritonllm.model.rope import yarn_frequencies
from tritonllm.model.weights import LayerWeights, Weights


def cache_rows(cfg: ModelConfig, context_length: int) -> list[int]:
    """KV cache rows of each layer: a sliding layer attends only its last `sliding_window`
    positions, so it keeps a ring of that many; a full layer keeps the whole context."""
    window = cfg.sliding_window
    return [min(window, context_length) if sliding and window > 0 else context_length for sliding in cfg.sliding_layers]


@dataclass
class KVCache:
    """Keys and values of each layer, k[i] and v[i] [rows_i, KVH, D] float32, position p at row
    p % rows_i (see cache_rows). With positions 0..n-1 written, a full layer holds them all, a
    sliding layer the last rows_i of them."""

    k: list[torch.Tensor]
    v: list[torch.Tensor]
    context_length: int
    window: int  # of the sliding layers; 0 if none
    saved: list[torch.Tensor] | None = None  # the rings' k and v as of position saved_at (save_rings)
    saved_at: int | None = None

    @staticmethod
    def allocate(cfg: ModelConfig, context_length: int, device: torch.device) -> "KVCache":
        shapes = [(rows, cfg.num_key_value_heads, cfg.head_dim) for rows in cache_rows(cfg, context_length)]
        k = [torch.zeros(shape, device=device) for shape in shapes]
        v = [torch.zeros(shape, device=device) for shape in shapes]
        return KVCache(k, v, context_length, cfg.sliding_window if any(cfg.sliding_layers) else 0)

    def can_resume(self, pos0: int, written: int) -> bool:
        """Whether a prefill can start at pos0 when positions 0..written-1 (written >= pos0) were
        written: positions pos0.. overwrote ring rows that held the window before pos0."""
        if self.window == 0:
            return True
        first = max(0, pos0 - self.window + 1)  # the earliest key a query at pos0 sees
        return first >= pos0 or first >= written - min(self.window, self.context_length)

    def save_rings(self, written: int) -> None:
        """Copy the rings as they stand with positions 0..written-1 written (the end of a prompt),
        so that a later prompt which keeps those positions but not what followed (harmony drops
        a finished turn's reasoning) can resume near `written` (`resume_point`) instead of
        prefilling the whole conversation again. 6 MB for gpt-oss-20b."""
        if self.saved is None:
            self.saved = [t.clone() for t in self._rings()]
        elif self.saved:
            torch._foreach_copy_(self.saved, self._rings())
        self.saved_at = written

    def resume_point(self, reuse: int, written: int) -> int:
        """Where a prefill of a prompt whose first `reuse` positions are already cached (of
        `written`) can start: `reuse` if the rings still hold its window, else the saved rings'
        position if they serve (copying them back), else 0."""
        if self.can_resume(reuse, written):
            return reuse
        # The copy holds the window of every position up to saved_at (rows past it get rewritten),
        # and serves a prompt that keeps at least the positions before saved_at - 1.
        if self.saved_at is None or self.saved_at > written or reuse < self.saved_at - 1:
            return 0
        if self.saved:
            torch._foreach_copy_(self._rings(), self.saved)
        return min(reuse, self.saved_at)

    def forget_saved_rings(self) -> None:
        self.saved_at = None

    def _rings(self) -> list[torch.Tensor]:
        """k and v of the layers whose cache is a ring that drops old positions."""
        return [t for k, v in zip(self.k, self.v) if k.shape[0] < self.context_length for t in (k, v)]


@dataclass
class StepScratch:
    """What a decode step reuses from call to call (the engine keeps one, so its CUDA graph
    sees fixed addresses): attention's split partials and the expert GEMV's arrival counts."""

    attention: DecodeScratch
    moe_arrivals: torch.Tensor


class Transformer:
    def __init__(self, weights: Weights):
        self.weights = weights
        self.config = weights.config
        concentration, inv_freq = yarn_frequencies(self.config)
        self.concentration = concentration
        self.inv_freq = inv_freq.to(weights.device)

    def prefill(self, tokens: torch.Tensor, pos0: int, cache: KVCache, all_logits: bool = False) -> torch.Tensor:
        """tokens [T] int32 (on the device) at positions pos0..pos0+T-1; keys and values
        before pos0 must already be in `cache`. Returns float32 logits [T, V] if all_logits,
        else [1, V] for the last position."""
        T = tokens.shape[0]
        positions = torch.arange(pos0, pos0 + T, dtype=torch.int32, device=tokens.device)

        def attend(i: int, x: torch.Tensor, norm: Norm) -> torch.Tensor:
            layer, k_cache, v_cache = self.weights.layers[i], cache.k[i], cache.v[i]
            qkv = linear(x, layer.qkv_weight, layer.qkv_bias, norm=norm)
            q, k, v = rope_qkv(qkv, positions, self.inv_freq, self.concentration, self.config.num_attention_heads)
            # Split output: the float32 input of the output projection as its two bf16 parts.
            out = attention_prefill(q, k_cache, v_cache, k, v, layer.sinks, pos0, self.config.sm_scale, self._window(i),
                                    split=True)
            # Only now: the chunk's positions overwrite ring rows that its attention just read.
            kv_store(k, v, positions, k_cache, v_cache)
            return tuple(part.view(T, self.config.q_size) for part in out)

        x = self._layers(tokens, attend)
        return self._logits(x if all_logits else x[-1:])

    def decode(self, token: torch.Tensor, pos: torch.Tensor, cache: KVCache, scratch: StepScratch) -> torch.Tensor:
        """One token [1] int32 at the position held in `pos` [1] int32, both on the device
        (so the step can be captured in a CUDA graph). Returns logits [1, V] float32."""

        def attend(i: int, x: torch.Tensor, norm: Norm) -> torch.Tensor:
            layer, k_cache, v_cache = self.weights.layers[i], cache.k[i], cache.v[i]
            # The token's k and v go into the cache first: the row they take held pos - rows,
            # which this query no longer sees.
            q = qkv_rope_decode(x, layer.qkv_weight, layer.qkv_bias, norm, pos, self.inv_freq, self.concentration,
                                self.config.num_attention_heads, k_cache, v_cache)
            return attention_decode(q, k_cache, v_cache, layer.sinks, pos, self.config.sm_scale, self._window(i),
                                    scratch=scratch.attention).view(1, self.config.q_size)

        return self._logits(self._layers(token, attend, scratch.moe_arrivals))

    def decode_scratch(self, context_length: int) -> StepScratch:
        cfg, device = self.config, self.weights.device
        rows = cache_rows(cfg, context_length)
        return StepScratch(DecodeScratch.allocate(rows, cfg.num_attention_heads, cfg.head_dim, device),
                           moe_arrivals(cfg.hidden_size, device))

    def _window(self, i: int) -> int:
        return self.config.sliding_window if self.config.sliding_layers[i] else 0

    def _layers(self, tokens, attend, moe_arrivals: torch.Tensor | None = None) -> torch.Tensor:
        cfg, w = self.config, self.weights
        x = embedding(tokens, w.embedding)  # [T, H] float32 residual stream
        for i, layer in enumerate(w.layers):
            a = attend(i, x, Norm(layer.attn_norm, cfg.rms_norm_eps))  # [T, q_size], or its split parts
            linear(a, layer.out_weight, layer.out_bias, residual=x, out=x)
            self._moe(layer, x, moe_arrivals)
        return x

    def _moe(self, layer: LayerWeights, x: torch.Tensor, arrivals: torch.Tensor | None) -> None:
        cfg = self.config
        norm = Norm(layer.mlp_norm, cfg.rms_norm_eps)
        router = (layer.gate_weight, layer.gate_bias)
        w1 = (layer.mlp1_blocks, layer.mlp1_scales, layer.mlp1_bias)
        w2 = (layer.mlp2_blocks, layer.mlp2_scales, layer.mlp2_bias)
        moe_experts(x, router, cfg.experts_per_token, w1, w2, cfg.swiglu_limit, residual=x, norm=norm,
                    arrivals=arrivals)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x.contiguous(), self.weights.unembedding, norm=Norm(self.weights.norm, self.config.rms_norm_eps))
