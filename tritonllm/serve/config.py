"""The server's settings: what `python -m tritonllm.serve` parses, what tests build by hand."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from openai_harmony import HarmonyEncoding

from tritonllm.conversation import Tools


@dataclass(frozen=True)
class ServerConfig:
    """Options shared by every request.

    builtin_tools maps the tools the server was started with ("browser", "python") to a
    factory: each request that asks for one gets a fresh instance (the browser keeps page
    state, which must not leak between clients).
    """

    encoding: HarmonyEncoding
    model_name: str = "gpt-oss"
    context_length: int = 8192
    reasoning_effort: str = "medium"  # when a request does not say
    api_key: str | None = None  # None: no authentication
    max_stored_responses: int = 1024  # responses kept for previous_response_id / GET, oldest dropped
    retry_after_s: int = 1  # the Retry-After of a 429 (queue full) or 503 (model loading)
    builtin_tools: Mapping[str, Callable[[], object]] = field(default_factory=dict)

    def tools(self, names: set[str]) -> Tools:
        """A fresh `Tools` holding the builtin tools `names` (all enabled on this server)."""
        return Tools(**{name: self.builtin_tools[name]() for name in names})
