"""bench_chat.py: the bandwidth-bound arithmetic, and an end-to-end run on the tiny model."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench_chat import decode_bound_tok_s, kv_bytes_per_token, weight_bytes_per_token
from tritonllm.model.config import preset

ROOT = Path(__file__).resolve().parents[1]


def test_bytes_per_token_match_the_published_figures():
    # docs: 20b reads ~3.71 GB per token (attention 1.27, experts 1.27, unembedding 1.16);
    # 120b ~4.98 GB; at 3.03 TB/s copy bandwidth that bounds decode near 817 and 608 tok/s.
    parts = weight_bytes_per_token(preset("20b"))
    assert parts["attention"] / 1e9 == pytest.approx(1.27, abs=0.01)
    assert parts["experts"] / 1e9 == pytest.approx(1.27, abs=0.01)
    assert parts["unembedding"] / 1e9 == pytest.approx(1.16, abs=0.01)
    assert sum(parts.values()) / 1e9 == pytest.approx(3.71, abs=0.02)
    assert decode_bound_tok_s(preset("20b"), 3.03e12) == pytest.approx(817, rel=0.01)
    assert sum(weight_bytes_per_token(preset("120b")).values()) / 1e9 == pytest.approx(4.98, abs=0.03)
    assert decode_bound_tok_s(preset("120b"), 3.03e12) == pytest.approx(608, rel=0.01)


def test_kv_reads_grow_with_context_on_full_layers_only():
    cfg = preset("20b")
    per_position = 2 * 8 * 64 * 4  # k and v, 8 kv heads of 64, float32
    assert kv_bytes_per_token(cfg, 100) == 24 * 100 * per_position
    assert kv_bytes_per_token(cfg, 4096) == (12 * 128 + 12 * 4096) * per_position
    assert decode_bound_tok_s(cfg, 3.03e12, 4096) < decode_bound_tok_s(cfg, 3.03e12)


def test_runs_end_to_end_on_the_tiny_model(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "bench_chat.py", "--synthetic", "tiny", "--device", "cpu", "--prompt-tokens", "5",
           "--decode-tokens", "2", "--runs", "1", "--temperature", "1", "--top-p", "0.9", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["prompt_tokens"] == 5 and report["runs"][0]["generated"] == 2
    assert report["sampling"] == {"temperature": 1.0, "top_p": 0.9}
    assert report["prefill_tok_s"]["median"] > 0 and report["decode_tok_s"]["median"] > 0
    assert "decode tok/s" in proc.stdout and "prefill tok/s" in proc.stdout


def test_bad_arguments_are_refused():
    proc = subprocess.run([sys.executable, "bench_chat.py"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "--synthetic" in proc.stderr
