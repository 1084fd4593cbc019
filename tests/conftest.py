"""Test-wide setup. Kernels run on the CPU under Triton's interpreter, which Triton only
enables if TRITON_INTERPRET is set before it is first imported: hence here, first."""

import os

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from tritonllm.model.config import preset  # noqa: E402
from tritonllm.model.synthetic import write_checkpoint  # noqa: E402


@pytest.fixture(scope="session")
def tiny_config():
    return preset("tiny")


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory, tiny_config):
    """The same random tiny model (seed 0) written in both published layouts."""
    root = tmp_path_factory.mktemp("tiny")
    return {
        "original": write_checkpoint(tiny_config, "original", 0, root / "original"),
        "hf": write_checkpoint(tiny_config, "hf", 0, root / "hf", shard_bytes=20 << 20),
    }


@pytest.fixture(scope="session")
def tiny_llm(tiny_checkpoints):
    from tritonllm import LLM

    return LLM(tiny_checkpoints["original"], device="cpu", context_length=64)


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(1234)
