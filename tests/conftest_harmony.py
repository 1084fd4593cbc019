"""Pytest plugin for tests that need the harmony tokenizer (`pytest_plugins = ["tests.conftest_harmony"]`).

CI has no internet, so openai_harmony cannot download its vocabulary: build it once per
session with tools/make_encoding.py (from the quicktok-v1 package) and point
TIKTOKEN_ENCODINGS_BASE at it for this process and the processes it starts.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def encoding_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("encodings")
    built = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "make_encoding.py"), str(out)], capture_output=True, text=True
    )
    if built.returncode:
        pytest.fail(f"tools/make_encoding.py failed (is quicktok-v1 installed?): {built.stderr.strip()}")
    before = os.environ.get("TIKTOKEN_ENCODINGS_BASE")
    os.environ["TIKTOKEN_ENCODINGS_BASE"] = str(out)
    yield out
    if before is None:
        os.environ.pop("TIKTOKEN_ENCODINGS_BASE", None)
    else:
        os.environ["TIKTOKEN_ENCODINGS_BASE"] = before


@pytest.fixture(scope="session")
def encoding(encoding_dir):
    from tritonllm.harmony import load_encoding

    return load_encoding()
