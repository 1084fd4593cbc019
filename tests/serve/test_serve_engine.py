"""`python -m tritonllm.serve` as a process, with the real engine: the tiny synthetic model on
the CPU under Triton's interpreter (each token costs seconds, so answers are 2 tokens long).

The random model writes no valid harmony: its tokens come back as plain output text.
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest

from tritonllm.serve.__main__ import build_parser

pytest_plugins = ["tests.conftest_harmony"]

ROOT = Path(__file__).resolve().parents[2]


def test_cli_defaults_bind_loopback():
    args = build_parser().parse_args([])
    assert (args.model, args.host, args.port) == ("20b", "127.0.0.1", 8000)
    assert (args.reasoning, args.context, args.max_queue) == ("medium", 8192, 64)
    assert (args.api_key, args.browser, args.python, args.device) == (None, False, False, "cuda")


@pytest.fixture
def server_process(tiny_checkpoints, encoding_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # --device cpu must turn it on
    env["TRITONLLM_API_KEY"] = "engine-key"
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tritonllm.serve", str(tiny_checkpoints["original"]), "--device", "cpu",
             "-c", "256", "--port", "0", "--served-model-name", "tiny"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while not (port := re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", log_path.read_text())):
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port[1]}/v1", api_key="engine-key", max_retries=0,
                               timeout=180)
        while "model loaded" not in log_path.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        yield client, log_path
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.timeout(300)
def test_streamed_conversation_through_the_real_engine(server_process):
    client, log_path = server_process
    with pytest.raises(openai.AuthenticationError):  # the key came from TRITONLLM_API_KEY
        client.with_options(api_key="wrong").models.list()
    events = list(client.responses.create(model="tiny", input="zebracorn", max_output_tokens=2, stream=True,
                                          temperature=1.0))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ("response.incomplete", "response.completed")
    first = events[-1].response
    assert first.usage.output_tokens <= 2 and first.usage.input_tokens > 0
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == first.output_text
    with client.responses.stream(model="tiny", input="again", previous_response_id=first.id,
                                 max_output_tokens=2) as stream:
        last = list(stream)[-1]
    assert last.type in ("response.completed", "response.incomplete")
    second = last.response
    assert second.previous_response_id == first.id
    assert second.usage.input_tokens > first.usage.input_tokens  # the first turn is in the prompt

    chunks = list(client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "zebracorn"}], max_tokens=2, stream=True
    ))
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices[0].finish_reason in ("length", "stop")

    log = log_path.read_text()
    assert "method=POST path=/v1/responses status=200" in log and "output_tokens=2" in log
    assert "zebracorn" not in log  # the access log leaves prompts out
