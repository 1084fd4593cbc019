"""Request-model pieces both APIs share: strictness, tool names, text content, sampling checks."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from tritonllm.harmony import REASONING_EFFORTS
from tritonllm.serve.errors import APIError

# A function name goes verbatim into the prompt (`functions.<name>`): OpenAI's rule keeps it
# to one word, so no client can smuggle text into the developer message through it.
FunctionName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
Effort = Literal[tuple(REASONING_EFFORTS)]
Temperature = Annotated[float, Field(ge=0, le=2)]
TopP = Annotated[float, Field(gt=0, le=1)]
MaxTokens = Annotated[int, Field(ge=1)]
Seed = Annotated[int, Field(ge=-(2**63), lt=2**63)]  # the engine keeps it in an int64


class Strict(BaseModel):
    """Unknown fields are errors (400 naming the field), not silently ignored."""

    model_config = ConfigDict(extra="forbid")


def check_model(requested: str | None, served: str) -> None:
    """A request may name no model or the served one; any other name is a 404, as OpenAI answers."""
    if requested is not None and requested != served:
        raise APIError(
            404, f"The model '{requested}' does not exist; this server serves '{served}'.", "model", "model_not_found"
        )
