"""The generation engine: owns the KV cache, the decode scratch buffers, the sampler state and
the CUDA graph of the decode step, and turns a prompt into a stream of token ids.

On a GPU the whole decode step (all layers, the unembedding, sampling and the position's
advance) is captured once in a CUDA graph and replayed per token; its state (token id,
position, random stream, sampling parameters) lives in device tensors. The next step is
launched before the host reads the sampled id (copied to pinned memory behind it), so the GPU
never waits for the host between tokens. A step launched for a token that turns out to be a
stop token is not wasted work for the cache: that token's keys and values are valid, and
`cached` records it.

Invariant: `self.cached` lists exactly the tokens whose keys and values were written to the
cache at positions 0..len(cached)-1 (sliding-window layers keep only the last window of them).
A new prompt that starts with cached tokens only prefills the rest (so a chat's next turn
does not recompute the conversation so far). A prompt that drops cached tokens needs the
sliding-window layers' rings as they were where it continues, which later tokens overwrote:
the cache keeps a copy of the rings from the end of the last prompt (a next chat turn drops
the reasoning generated after it), and a prompt continuing anywhere else is prefilled in full.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch

from tritonllm.kernels.sampling import SamplerParams, SampleScratch, sample
from tritonllm.model.transformer import KVCache, Transformer
from tritonllm.model.weights import Weights


class PromptError(ValueError):
    """The prompt cannot be run: empty, an unknown token id, or longer than the context."""


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None  # None: a fresh random seed per generation

    def __post_init__(self):
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


class Engine:
    def __init__(self, weights: Weights, context_length: int, cuda_graph: bool = True):
        if context_length < 1:
            raise ValueError(f"context_length must be positive, got {context_length}")
        self.model = Transformer(weights)
        self.config = weights.config
        self.device = weights.device
        self.context_length = context_length
        self.cache = KVCache.allocate(self.config, context_length, self.device)
        self.cached: list[int] = []
        self.scratch = self.model.decode_scratch(context_length)
        self.pos = torch.zeros(1, dtype=torch.int32, device=self.device)
        self.token = torch.zeros(1, dtype=torch.int32, device=self.device)
        self.rng = torch.zeros(2, dtype=torch.int64, device=self.device)  # [seed, step]
        self.sampling = SamplerParams(device=self.device)
        self.sample_scratch = SampleScratch(self.config.vocab_size, self.device)
        self.use_graph = cuda_graph and self.device.type == "cuda"
        # One graph per launch sequence: with top-p (sampling.nucleus) the sampler runs more passes.
        self.graphs: dict[bool, torch.cuda.CUDAGraph] = {}
        # Two slots, so the host reads one sampled id while the next step writes the other.
        on_cuda = self.device.type == "cuda"
        self.sampled = torch.zeros(2, dtype=torch.int32, pin_memory=on_cuda)
        self.sampled_ready = [torch.cuda.Event() for _ in range(2)] if on_cuda else None

    def reset(self) -> None:
        """Forget the cached prefix (the next prompt is prefilled in full)."""
        self.cached = []
        self.cache.forget_saved_rings()

    def _run_step(self) -> None:
        """Decode self.token at self.pos, sample the next token into self.token, advance self.pos."""
        logits = self.model.decode(self.token, self.pos, self.cache, self.scratch)
        sample(logits[0], self.rng, self.sampling, out=self.token, pos=self.pos, scratch=self.sample_scratch)

    def _step(self) -> None:
        """One decode step, through the CUDA graph where there is one."""
        if not self.use_graph:
            return self._run_step()
        graph = self.graphs.get(self.sampling.nucleus)
        if graph is None:
            # Compile every kernel outside the capture, on a side stream as torch requires. That
            # run is real, so the state it advances is put back before the capture.
            state = [t.clone() for t in (self.token, self.pos, self.rng)]
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                self._run_step()
            torch.cuda.current_stream().wait_stream(stream)
            for t, saved in zip((self.token, self.pos, self.rng), state):
                t.copy_(saved)
            graph = self.graphs[self.sampling.nucleus] = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._run_step()
        graph.replay()

    def _copy_sampled(self, slot: int) -> None:
        """Start copying self.token to the host, into `slot`, behind the work queued so far."""
        self.sampled[slot : slot + 1].copy_(self.token, non_blocking=True)
        if self.sampled_ready:
            self.sampled_ready[slot].record()

    def _read_sampled(self, slot: int) -> int:
        if self.sampled_ready:
            self.sampled_ready[slot].synchronize()
        return int(self.sampled[slot])

    def _check_prompt(self, tokens: list[int]) -> None:
        if not tokens:
            raise PromptError("the prompt is empty: give at least one token")
        vocab = self.config.vocab_size
        bad = [t for t in tokens if not 0 <= t < vocab]
        if bad:
            raise PromptError(f"token id {bad[0]} is outside the vocabulary (0..{vocab - 1})")
        if len(tokens) > self.context_length:
            raise PromptError(
                f"the prompt has {len(tokens)} tokens but the context holds {self.context_length}; "
                "shorten it or raise the context length"
            )

    def _ids(self, tokens: list[int]) -> torch.Tensor:
        return torch.tensor(tokens, dtype=torch.int32, device=self.device)

    def logits(self, tokens: list[int]) -> torch.Tensor:
        """Teacher-forced logits [T, vocab] float32 for `tokens`, in one prefill pass."""
        tokens = list(tokens)
        self._check_prompt(tokens)
        self.reset()  # the prefill below overwrites the cache from position 0
        out = self.model.prefill(self._ids(tokens), 0, self.cache, all_logits=True)
        self.cached = tokens
        self.cache.save_rings(len(tokens))
        return out

    def prefill(self, tokens: list[int]) -> torch.Tensor:
        """Bring the cache to `tokens`, reusing the longest cached prefix; logits [1, V] of the last."""
        self._check_prompt(tokens)
        reuse = 0
        limit = min(len(self.cached), len(tokens) - 1)  # the last token always runs, for its logits
        while reuse < limit and self.cached[reuse] == tokens[reuse]:
            reuse += 1
        # Where the sliding layers' rings (live, or as saved at the end of the last prompt) still
        # hold the keys that the new tokens see; 0 if nowhere.
        reuse = self.cache.resume_point(reuse, len(self.cached))
        self.cached = self.cached[:reuse]
        logits = self.model.prefill(self._ids(tokens[reuse:]), reuse, self.cache)
        self.cached = list(tokens)
        self.cache.save_rings(len(tokens))
        return logits

    def generate(
        self, tokens: Iterable[int], max_tokens: int, sampling: SamplingParams = SamplingParams(),
        stop_tokens: Iterable[int] = (),
    ) -> Iterator[int]:
        """Yield up to `max_tokens` sampled token ids; a stop token is yielded, then generation
        ends. Generation also ends when the context is full."""
        tokens = list(tokens)
        stop = set(stop_tokens)
        if max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
        logits = self.prefill(tokens)
        if max_tokens == 0:
            return
        seed = sampling.seed if sampling.seed is not None else int.from_bytes(os.urandom(4), "little")
        self.rng.copy_(torch.tensor([seed, 0], dtype=torch.int64))
        self.sampling.set(sampling.temperature, sampling.top_p)
        self.pos.fill_(len(self.cached) - 1)  # sampling advances it to the first new token's position
        sample(logits[0], self.rng, self.sampling, out=self.token, pos=self.pos, scratch=self.sample_scratch)
        self._copy_sampled(0)
        for i in range(max_tokens):
            # Token i is sampled on the device; decode it (sampling token i + 1) before reading it.
            decode = i < max_tokens - 1 and len(self.cached) < self.context_length
            if decode:
                self._step()
                self._copy_sampled((i + 1) % 2)
            token = self._read_sampled(i % 2)
            if decode:
                self.cached.append(token)
            yield token
            if not decode or token in stop:
                return
