"""YaRN rotary-embedding frequencies for gpt-oss (NTK-by-parts plus the concentration factor)."""

import math

import torch

from tritonllm.model.config import ModelConfig


def yarn_frequencies(cfg: ModelConfig) -> tuple[float, torch.Tensor]:
    """(concentration, inv_freq [head_dim/2] float32 on the CPU).

    Dimension pairs whose wavelength is short next to the original context keep their
    frequency (extrapolation); long-wavelength pairs are slowed by the scaling factor
    (interpolation), with a linear ramp between `low` and `high`. cos and sin are both
    multiplied by the concentration 0.1 ln(factor) + 1.
    """
    d_half = cfg.head_dim // 2
    freq = cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float32) / cfg.head_dim)
    if cfg.rope_scaling_factor <= 1.0:
        return 1.0, 1.0 / freq
    concentration = 0.1 * math.log(cfg.rope_scaling_factor) + 1.0
    ctx, base = cfg.initial_context_length, cfg.rope_theta
    low = d_half * math.log(ctx / (cfg.rope_ntk_beta * 2 * math.pi)) / math.log(base)
    high = d_half * math.log(ctx / (cfg.rope_ntk_alpha * 2 * math.pi)) / math.log(base)
    if not 0 < low < high < d_half - 1:
        raise ValueError(f"YaRN parameters give an empty ramp (low={low:.2f}, high={high:.2f})")
    ramp = ((torch.arange(d_half, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    interpolated, extrapolated = 1.0 / (cfg.rope_scaling_factor * freq), 1.0 / freq
    return concentration, interpolated * ramp + extrapolated * (1 - ramp)
