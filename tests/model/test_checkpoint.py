"""Checkpoint files: the on-disk format, both layouts, and a clear error for every bad case."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from tritonllm.model.checkpoint import load_checkpoint
from tritonllm.model.safetensors_io import CheckpointError, SafetensorsFile
from tritonllm.model.synthetic import random_tensor
from tritonllm.model.weights import checkpoint_specs


def test_files_are_standard_safetensors_with_published_names(tiny_checkpoints, tiny_config):
    original = load_file(tiny_checkpoints["original"] / "model.safetensors")
    names = {s.name for s in checkpoint_specs(tiny_config, "original")}
    assert set(original) == names
    assert original["block.0.mlp.mlp1_weight.blocks"].dtype == torch.uint8
    assert original["block.0.mlp.mlp1_weight.blocks"].shape == (8, 128, 2, 16)
    assert original["block.1.attn.qkv.weight"].dtype == torch.bfloat16
    assert torch.equal(original["embedding.weight"], random_tensor("embedding.weight", tiny_config, 0))

    index = json.loads((tiny_checkpoints["hf"] / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1
    hf = {}
    for shard in shards:
        hf.update(load_file(tiny_checkpoints["hf"] / shard))
    assert set(hf) == set(index["weight_map"])
    q = hf["model.layers.1.self_attn.q_proj.weight"]
    assert torch.equal(torch.cat([q, hf["model.layers.1.self_attn.k_proj.weight"], hf["model.layers.1.self_attn.v_proj.weight"]]),
                       original["block.1.attn.qkv.weight"])
    assert torch.equal(hf["model.layers.2.mlp.experts.down_proj_scales"], original["block.2.mlp.mlp2_weight.scales"])


def test_both_layouts_load_to_the_same_weights(tiny_checkpoints):
    a = load_checkpoint(tiny_checkpoints["original"], torch.device("cpu"), progress=False)
    b = load_checkpoint(tiny_checkpoints["hf"], torch.device("cpu"), progress=False)
    assert a.config == b.config
    for la, lb in zip(a.layers, b.layers):
        for name, t in vars(la).items():
            assert torch.equal(t, getattr(lb, name)), name
    assert a.layers[0].mlp1_blocks.dtype == torch.uint8  # stays packed
    assert torch.equal(a.unembedding, b.unembedding)


def test_parent_folder_with_original_subfolder(tmp_path, tiny_checkpoints):
    shutil.copytree(tiny_checkpoints["original"], tmp_path / "original")
    w = load_checkpoint(tmp_path, torch.device("cpu"), progress=False)
    assert w.config.num_hidden_layers == 4


@pytest.fixture
def broken(tmp_path, tiny_checkpoints):
    """A writable copy of the tiny original-layout checkpoint."""
    dest = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoints["original"], dest)
    return dest


def _rewrite_header(path, edit):
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    edit(header)
    new = json.dumps(header, separators=(",", ":")).encode()
    path.write_bytes(len(new).to_bytes(8, "little") + new + raw[8 + n :])


def _expect(path, *fragments):
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, torch.device("cpu"), progress=False)
    for fragment in fragments:
        assert fragment in str(e.value), str(e.value)


def test_missing_folder_and_file(tmp_path, broken):
    _expect(tmp_path / "nope", "not found")
    (broken / "model.safetensors").unlink()
    _expect(broken, "no .safetensors files")


def test_missing_shard_named_in_index(tmp_path, tiny_checkpoints):
    dest = tmp_path / "hf"
    shutil.copytree(tiny_checkpoints["hf"], dest)
    shard = sorted(dest.glob("model-*.safetensors"))[-1]
    shard.unlink()
    _expect(dest, shard.name, "not found")


def test_missing_tensor(broken):
    _rewrite_header(broken / "model.safetensors", lambda h: h.update({"block.3.attn.sinkz": h.pop("block.3.attn.sinks")}))
    _expect(broken, "missing tensor 'block.3.attn.sinks'")


def test_wrong_shape(broken):
    def edit(h):
        h["block.1.attn.out.bias"]["shape"] = [2, 32]

    _rewrite_header(broken / "model.safetensors", edit)
    _expect(broken, "model.safetensors", "'block.1.attn.out.bias'", "shape [2, 32]")


def test_wrong_dtype(broken):
    def edit(h):
        h["block.0.attn.qkv.bias"]["dtype"] = "U8"  # same bytes, wrong type
        h["block.0.attn.qkv.bias"]["shape"] = [h["block.0.attn.qkv.bias"]["shape"][0] * 2]

    _rewrite_header(broken / "model.safetensors", edit)
    _expect(broken, "'block.0.attn.qkv.bias'", "dtype torch.uint8")


def test_truncated_file(broken):
    path = broken / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-1000])
    _expect(broken, "model.safetensors", "truncated", "'unembedding.weight'")


def test_corrupt_header(broken):
    path = broken / "model.safetensors"
    raw = bytearray(path.read_bytes())
    raw[20:30] = b"\xff" * 10
    path.write_bytes(bytes(raw))
    _expect(broken, "model.safetensors", "corrupt")
    path.write_bytes((10**12).to_bytes(8, "little") + b"{}")
    _expect(broken, "corrupt or truncated safetensors header")


def test_missing_config(broken):
    (broken / "config.json").unlink()
    _expect(broken, "no config.json")


def test_reader_reads_tensors_on_demand(tiny_checkpoints):
    f = SafetensorsFile(tiny_checkpoints["original"] / "model.safetensors")
    assert f.read("norm.scale").shape == (64,)
    assert f.tensors["embedding.weight"].nbytes == 201088 * 64 * 2


def test_make_checkpoint_script_writes_a_loadable_checkpoint(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "ckpt"
    cmd = [sys.executable, "tools/make_checkpoint.py", "--size", "tiny", "--layout", "hf", "--seed", "3",
           "--vocab-size", "1000", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    weights = load_checkpoint(out, torch.device("cpu"), progress=False)
    assert weights.config.vocab_size == 1000 and weights.embedding.shape == (1000, 64)
    assert torch.equal(weights.embedding, random_tensor("embedding.weight", weights.config, 3))


def test_out_of_range_mxfp4_scale(broken):
    """A scale byte past 2^33 (no real weight) is named, not computed with as inf."""
    path = broken / "model.safetensors"
    raw = bytearray(path.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    start, _ = json.loads(raw[8 : 8 + n])["block.2.mlp.mlp2_weight.scales"]["data_offsets"]
    raw[8 + n + start + 5] = 161
    path.write_bytes(bytes(raw))
    _expect(broken, "block.2.mlp2_scales", "scale exponent 34 is out of range (at most 33)")
