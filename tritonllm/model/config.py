"""Model configuration, read from `config.json` in either published gpt-oss layout.

OpenAI's `original/` layout names things `num_experts`, `experts_per_token`,
`rope_scaling_factor`, ...; the Hugging Face layout names them `num_local_experts`,
`num_experts_per_tok`, `rope_scaling={...}`, `layer_types`, ... Both become one frozen
`ModelConfig`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path


class ConfigError(ValueError):
    """config.json is missing, unreadable or describes a model we cannot run."""


@dataclass(frozen=True)
class ModelConfig:
    num_hidden_layers: int = 24
    num_experts: int = 32
    experts_per_token: int = 4
    vocab_size: int = 201088
    hidden_size: int = 2880
    intermediate_size: int = 2880
    swiglu_limit: float = 7.0
    head_dim: int = 64
    num_attention_heads: int = 64
    num_key_value_heads: int = 8
    sliding_window: int = 128
    initial_context_length: int = 4096
    rope_theta: float = 150000.0
    rope_scaling_factor: float = 32.0
    rope_ntk_alpha: float = 1.0
    rope_ntk_beta: float = 32.0
    rms_norm_eps: float = 1e-5
    # One entry per layer: True where the layer attends within `sliding_window` tokens.
    # gpt-oss slides on even layers and attends fully on odd ones.
    sliding_layers: tuple[bool, ...] = field(default=())

    def __post_init__(self):
        if not self.sliding_layers:
            object.__setattr__(
                self, "sliding_layers", tuple(i % 2 == 0 for i in range(self.num_hidden_layers))
            )
        problems = []
        if len(self.sliding_layers) != self.num_hidden_layers:
            problems.append(
                f"{len(self.sliding_layers)} layer types for {self.num_hidden_layers} layers"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            problems.append("num_attention_heads must be a multiple of num_key_value_heads")
        if self.hidden_size % 32 or self.intermediate_size % 32:
            problems.append("hidden_size and intermediate_size must be multiples of 32 (MXFP4 blocks)")
        if self.head_dim % 2:
            problems.append("head_dim must be even (rotary embedding)")
        if not 0 < self.experts_per_token <= self.num_experts:
            problems.append("experts_per_token must be in 1..num_experts")
        if problems:
            raise ConfigError("invalid model config: " + "; ".join(problems))

    @property
    def q_size(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_key_value_heads * self.head_dim

    @property
    def qkv_size(self) -> int:
        return self.q_size + 2 * self.kv_size

    @property
    def sm_scale(self) -> float:
        return 1.0 / math.sqrt(self.head_dim)

    def to_json(self, layout: str = "original") -> dict:
        """The config.json dict of the given layout ("original" or "hf")."""
        d = asdict(self)
        sliding = d.pop("sliding_layers")
        if layout == "original":
            return d
        if layout != "hf":
            raise ValueError(f"unknown layout {layout!r}: expected 'original' or 'hf'")
        return {
            "architectures": ["GptOssForCausalLM"],
            "model_type": "gpt_oss",
            "num_hidden_layers": d["num_hidden_layers"],
            "num_local_experts": d["num_experts"],
            "num_experts_per_tok": d["experts_per_token"],
            "experts_per_token": d["experts_per_token"],
            "vocab_size": d["vocab_size"],
            "hidden_size": d["hidden_size"],
            "intermediate_size": d["intermediate_size"],
            "swiglu_limit": d["swiglu_limit"],
            "head_dim": d["head_dim"],
            "num_attention_heads": d["num_attention_heads"],
            "num_key_value_heads": d["num_key_value_heads"],
            "sliding_window": d["sliding_window"],
            "initial_context_length": d["initial_context_length"],
            "max_position_embeddings": d["initial_context_length"] * int(d["rope_scaling_factor"]),
            "rope_theta": d["rope_theta"],
            "rope_scaling": {
                "rope_type": "yarn",
                "factor": d["rope_scaling_factor"],
                "beta_slow": d["rope_ntk_alpha"],
                "beta_fast": d["rope_ntk_beta"],
                "original_max_position_embeddings": d["initial_context_length"],
                "truncate": False,
            },
            "rms_norm_eps": d["rms_norm_eps"],
            "layer_types": ["sliding_attention" if s else "full_attention" for s in sliding],
            "attention_bias": True,
            "tie_word_embeddings": False,
            "eos_token_id": 200002,
            "pad_token_id": 199999,
            "quantization_config": {
                "quant_method": "mxfp4",
                "modules_to_not_convert": [
                    "model.layers.*.self_attn",
                    "model.layers.*.mlp.router",
                    "model.embed_tokens",
                    "lm_head",
                ],
            },
        }

    @staticmethod
    def from_dict(d: dict) -> "ModelConfig":
        """Build from a config.json dict of either layout."""
        if "num_local_experts" in d or "rope_scaling" in d or "layer_types" in d:
            return _from_hf(d)
        known = set(ModelConfig.__dataclass_fields__) - {"sliding_layers"}
        return ModelConfig(**{k: _typed(k, v) for k, v in d.items() if k in known})

    @staticmethod
    def from_file(path: str | Path) -> "ModelConfig":
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: config.json not found") from None
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: cannot read config.json ({e})") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{path}: config.json must hold a JSON object")
        try:
            return ModelConfig.from_dict(d)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{path}: {e}") from None


def _typed(name: str, value):
    want = ModelConfig.__dataclass_fields__[name].type
    if want == "int":
        if isinstance(value, bool) or int(value) != value:
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return int(value)
    if want == "float":
        return float(value)
    return value


def _from_hf(d: dict) -> ModelConfig:
    rope = d.get("rope_scaling") or {}
    if rope and rope.get("rope_type", rope.get("type", "yarn")) != "yarn":
        raise ConfigError(f"unsupported rope_scaling type {rope.get('rope_type')!r}: gpt-oss uses yarn")
    renamed = {
        "num_hidden_layers": d.get("num_hidden_layers"),
        "num_experts": d.get("num_local_experts", d.get("num_experts")),
        "experts_per_token": d.get("num_experts_per_tok", d.get("experts_per_token")),
        "vocab_size": d.get("vocab_size"),
        "hidden_size": d.get("hidden_size"),
        "intermediate_size": d.get("intermediate_size"),
        "swiglu_limit": d.get("swiglu_limit"),
        "head_dim": d.get("head_dim"),
        "num_attention_heads": d.get("num_attention_heads"),
        "num_key_value_heads": d.get("num_key_value_heads"),
        "sliding_window": d.get("sliding_window"),
        "initial_context_length": rope.get(
            "original_max_position_embeddings", d.get("initial_context_length")
        ),
        "rope_theta": d.get("rope_theta"),
        "rope_scaling_factor": rope.get("factor", 1.0 if not rope else None),
        "rope_ntk_alpha": rope.get("beta_slow"),
        "rope_ntk_beta": rope.get("beta_fast"),
        "rms_norm_eps": d.get("rms_norm_eps"),
    }
    kwargs = {k: _typed(k, v) for k, v in renamed.items() if v is not None}
    layer_types = d.get("layer_types")
    if layer_types is not None:
        unknown = set(layer_types) - {"sliding_attention", "full_attention"}
        if unknown:
            raise ConfigError(f"unknown layer_types {sorted(unknown)}")
        kwargs["sliding_layers"] = tuple(t == "sliding_attention" for t in layer_types)
    return ModelConfig(**kwargs)


def preset(size: str, vocab_size: int | None = None) -> ModelConfig:
    """The published gpt-oss shapes ("20b", "120b") or the CPU-sized "tiny" model."""
    if size == "20b":
        cfg = ModelConfig(num_hidden_layers=24, num_experts=32)
    elif size == "120b":
        cfg = ModelConfig(num_hidden_layers=36, num_experts=128)
    elif size == "tiny":
        # Small enough for Triton's CPU interpreter, with the real structure: GQA 8:1,
        # sinks, alternating sliding (window 8, so short tests cross it) and full layers,
        # top-4 of 8 experts, YaRN, and the real vocabulary so the harmony tokenizer works.
        cfg = ModelConfig(
            num_hidden_layers=4,
            num_experts=8,
            experts_per_token=4,
            hidden_size=64,
            intermediate_size=64,
            head_dim=16,
            num_attention_heads=16,
            num_key_value_heads=2,
            sliding_window=8,
        )
    else:
        raise ValueError(f"unknown model size {size!r}: expected tiny, 20b or 120b")
    if vocab_size is not None:
        cfg = ModelConfig(**{**asdict(cfg), "vocab_size": vocab_size})
    return cfg
