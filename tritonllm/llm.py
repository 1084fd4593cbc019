"""`LLM`: the public Python API. Load a checkpoint (or synthetic weights), get logits, generate."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Iterator

import torch

from tritonllm import runtime
from tritonllm.engine import Engine, SamplingParams
from tritonllm.env import runtime_config as runtime_config_from_env
from tritonllm.model.checkpoint import load_checkpoint
from tritonllm.model.config import preset
from tritonllm.model.synthetic import synthetic_weights
from tritonllm.model.weights import Weights
from tritonllm.runtime.kernel import interpreter_enabled
from tritonllm.runtime.settings import RuntimeConfig

log = logging.getLogger(__name__)


class DeviceError(RuntimeError):
    """The requested device cannot run the engine."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None takes the GPU; "cpu" runs the kernels under Triton's interpreter (tests, tiny models)."""
    if device is None:
        if not torch.cuda.is_available():
            raise DeviceError(
                "no CUDA GPU found; to run a tiny model on the CPU under Triton's interpreter, "
                "pass device='cpu' (with TRITON_INTERPRET=1 set before Python starts)"
            )
        return torch.device("cuda")
    device = torch.device(device)
    if device.type == "cpu" and not interpreter_enabled():
        raise DeviceError("device='cpu' runs Triton's interpreter: set TRITON_INTERPRET=1 before starting Python")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {device} requested but no CUDA GPU is available")
    return device


class LLM:
    """A gpt-oss model ready to run.

    checkpoint: a folder in OpenAI's `original/` layout or the Hugging Face layout (or its
    parent holding `original/`), or already-built `Weights`. `runtime_config` chooses cubins
    vs JIT and the JIT backend (default: tritonllm.env.runtime_config(), from the environment).
    """

    def __init__(
        self, checkpoint: str | Path | Weights, device: str | torch.device | None = None,
        context_length: int = 8192, cuda_graph: bool = True, runtime_config: RuntimeConfig | None = None,
    ):
        if isinstance(checkpoint, Weights):
            weights = checkpoint
        else:
            weights = load_checkpoint(checkpoint, resolve_device(device))
        self.kernel_plan = runtime.prepare(weights.device, runtime_config or runtime_config_from_env())
        self.config = weights.config
        self.engine = Engine(weights, context_length, cuda_graph)

    @classmethod
    def synthetic(cls, size: str, seed: int = 0, device=None, context_length: int = 8192, cuda_graph: bool = True,
                  runtime_config: RuntimeConfig | None = None) -> "LLM":
        """Random weights of the published shapes ("20b", "120b", "tiny"), built on the device."""
        weights = synthetic_weights(preset(size), seed, resolve_device(device))
        return cls(weights, context_length=context_length, cuda_graph=cuda_graph, runtime_config=runtime_config)

    @property
    def weights(self) -> Weights:
        return self.engine.model.weights

    def logits(self, tokens: Iterable[int]) -> torch.Tensor:
        """Teacher-forced float32 logits [len(tokens), vocab] from one prefill pass."""
        return self.engine.logits(list(tokens))

    def generate(
        self, tokens: Iterable[int], max_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
        stop_tokens: Iterable[int] = (), seed: int | None = None,
    ) -> Iterator[int]:
        """Yield token ids as they are produced (temperature 0 = greedy). A stop token is
        yielded and ends the generation; so does a full context."""
        sampling = SamplingParams(temperature=temperature, top_p=top_p, seed=seed)
        return self.engine.generate(list(tokens), max_tokens, sampling, stop_tokens)
