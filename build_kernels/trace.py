"""Every kernel launch the engine makes for gpt-oss-20b and gpt-oss-120b on one architecture.

The model runs on meta tensors (shapes, no data) with the runtime's recorder installed, so
the launchers choose their tiles for `arch` exactly as they would on such a GPU and each
distinct specialization is recorded instead of launched. Covered: prefill lengths in every
tile bucket of the dense and expert matmuls (1-2,048 tokens; last-token and all logits; a
short chunk after a long cache, whose attention splits the cached keys), decode
at every attention split size (contexts 2k..32k), and sampling (its parameters are device values).
"""

from __future__ import annotations

import torch

from tritonllm.kernels.sampling import SamplerParams, SampleScratch, sample
from tritonllm.model.config import preset
from tritonllm.model.transformer import KVCache, Transformer
from tritonllm.model.weights import assemble, canonical_shape, checkpoint_specs, device_dtype
from tritonllm.runtime import settings
from tritonllm.runtime.cubin import specialize
from tritonllm.runtime.target import tracing

MODELS = ("20b", "120b")
PREFILL_TOKENS = (1, 2, 5, 50, 100, 200, 500, 1000, 2048)
CONTEXTS = (2048, 4096, 8192, 16384, 32768)
META = torch.device("meta")


def _meta_model(size: str) -> Transformer:
    cfg = preset(size)
    targets = dict.fromkeys(s.target for s in checkpoint_specs(cfg, "original"))
    return Transformer(assemble(cfg, {t: torch.empty(canonical_shape(cfg, t), dtype=device_dtype(t), device=META)
                                      for t in targets}))


def trace(arch: int) -> dict:
    """{(kernel name, specialization key): (kernel, args, kwargs)} for every launch on `arch`."""
    launches: dict = {}

    def record(kernel, grid, args, kwargs):
        key, _, _ = specialize(kernel, arch, args, kwargs)
        launches.setdefault((kernel.name, key), (kernel, args, kwargs))

    settings.recorder = record
    try:
        with tracing(arch):
            for size in MODELS:
                model = _meta_model(size)
                for context in CONTEXTS:
                    cache = KVCache.allocate(model.config, context, META)
                    if context == CONTEXTS[0]:
                        for T in PREFILL_TOKENS:  # last-token logits (generate) and all logits (LLM.logits)
                            for all_logits in (False, True):
                                model.prefill(torch.empty(T, dtype=torch.int32, device=META), 0, cache, all_logits)
                        # a chat's next turn: a short chunk after a long cache splits its keys
                        model.prefill(torch.empty(90, dtype=torch.int32, device=META), 1900, cache)
                    one = torch.empty(1, dtype=torch.int32, device=META)
                    logits = model.decode(one, one, cache, model.decode_scratch(context))
                rng = torch.empty(2, dtype=torch.int64, device=META)
                scratch = SampleScratch(model.config.vocab_size, META)
                for top_p in (1.0, 0.9):  # the values are read on the device; top_p < 1 adds the top-p passes
                    sample(logits[0], rng, SamplerParams(1.0, top_p, META), out=one, pos=one, scratch=scratch)
    finally:
        settings.recorder = None
    return launches
