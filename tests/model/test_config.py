"""config.json in both published layouts."""

import json

import pytest

from tritonllm.model.config import ConfigError, ModelConfig, preset


@pytest.mark.parametrize("size,layers,experts", [("20b", 24, 32), ("120b", 36, 128)])
@pytest.mark.parametrize("layout", ["original", "hf"])
def test_published_shapes_round_trip_through_both_layouts(size, layers, experts, layout):
    cfg = ModelConfig.from_dict(preset(size).to_json(layout))
    assert cfg == preset(size)
    assert (cfg.num_hidden_layers, cfg.num_experts, cfg.experts_per_token) == (layers, experts, 4)
    assert (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size) == (2880, 2880, 201088)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (64, 8, 64)
    assert cfg.sliding_layers[:4] == (True, False, True, False) and cfg.sliding_window == 128
    assert (cfg.rope_theta, cfg.rope_scaling_factor, cfg.initial_context_length) == (150000, 32, 4096)
    assert (cfg.rope_ntk_alpha, cfg.rope_ntk_beta, cfg.swiglu_limit) == (1, 32, 7.0)


def test_hf_names_are_read():
    d = preset("20b").to_json("hf")
    assert "num_local_experts" in d and "experts_per_token" in d
    d["num_local_experts"] = 16
    d["rope_scaling"]["factor"] = 8.0
    d["layer_types"][0] = "full_attention"
    cfg = ModelConfig.from_dict(d)
    assert cfg.num_experts == 16 and cfg.rope_scaling_factor == 8.0 and cfg.sliding_layers[0] is False


@pytest.mark.parametrize(
    "change,message",
    [
        ({"num_key_value_heads": 7}, "multiple of num_key_value_heads"),
        ({"hidden_size": 2881}, "multiples of 32"),
        ({"experts_per_token": 0}, "experts_per_token"),
        ({"num_hidden_layers": 2.5}, "must be an integer"),
    ],
)
def test_bad_configs_are_refused_with_the_reason(tmp_path, change, message):
    d = {**preset("20b").to_json("original"), **change}
    (tmp_path / "config.json").write_text(json.dumps(d))
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_file(tmp_path / "config.json")


def test_missing_and_unreadable_config(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        ModelConfig.from_file(tmp_path / "config.json")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read"):
        ModelConfig.from_file(tmp_path / "config.json")
