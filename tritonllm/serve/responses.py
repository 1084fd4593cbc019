"""`POST /v1/responses`: the request model and its translation into a harmony conversation.

Input items map to harmony messages: user text to user messages, system and developer
text to the developer message's instructions (harmony has one developer message, in the
header), earlier assistant output to assistant messages (reasoning on the analysis
channel), function calls and their outputs to commentary-channel calls and tool results.
With `previous_response_id` the stored conversation comes first (`instructions` and
`tools` are not carried over, as in OpenAI's API).
"""

from __future__ import annotations

from typing import Annotated, Literal

from openai_harmony import Message
from pydantic import Discriminator, Field, Tag

from tritonllm.harmony import (
    FunctionTool,
    PromptConfig,
    assistant_message,
    function_call_message,
    function_result_message,
    user_message,
)
from tritonllm.serve.errors import APIError
from tritonllm.serve.schemas import Effort, FunctionName, MaxTokens, Strict, Temperature, TopP
from tritonllm.serve.store import StoredResponse

Status = Literal["in_progress", "completed", "incomplete"]


class InputText(Strict):
    type: Literal["input_text"]
    text: str


class OutputText(Strict):
    type: Literal["output_text"]
    text: str
    annotations: list[dict] = Field(default_factory=list)
    logprobs: list[dict] | None = None


class Refusal(Strict):
    type: Literal["refusal"]
    refusal: str


Part = Annotated[InputText | OutputText | Refusal, Field(discriminator="type")]


class InputMessage(Strict):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[Part]
    id: str | None = None
    status: Status | None = None
    phase: Literal["commentary", "final_answer"] | None = None


class FunctionCall(Strict):
    type: Literal["function_call"]
    call_id: str
    name: FunctionName
    arguments: str
    id: str | None = None
    status: Status | None = None


class FunctionCallOutput(Strict):
    type: Literal["function_call_output"]
    call_id: str
    output: str | list[InputText]
    id: str | None = None
    status: Status | None = None


class ReasoningText(Strict):
    type: Literal["reasoning_text"]
    text: str


class SummaryText(Strict):
    type: Literal["summary_text"]
    text: str


class Reasoning(Strict):
    type: Literal["reasoning"]
    id: str | None = None
    summary: list[SummaryText] = Field(default_factory=list)
    content: list[ReasoningText] | None = None
    status: Status | None = None


def _item_type(value) -> str:
    """Input items name their type, except easy messages (`{"role", "content"}`)."""
    return value.get("type", "message") if isinstance(value, dict) else getattr(value, "type", "message")


InputItem = Annotated[
    Annotated[InputMessage, Tag("message")]
    | Annotated[FunctionCall, Tag("function_call")]
    | Annotated[FunctionCallOutput, Tag("function_call_output")]
    | Annotated[Reasoning, Tag("reasoning")],
    Discriminator(_item_type),
]


class FunctionToolSpec(Strict):
    type: Literal["function"]
    name: FunctionName
    description: str | None = None
    parameters: dict | None = None
    strict: bool | None = None


class WebSearchSpec(Strict):
    """The browser tool (the server must run with --browser)."""

    type: Literal["web_search_preview", "web_search_preview_2025_03_11", "web_search", "web_search_2025_08_26"]
    search_context_size: Literal["low", "medium", "high"] | None = None
    user_location: dict | None = None


class CodeInterpreterSpec(Strict):
    """The python tool (the server must run with --python)."""

    type: Literal["code_interpreter"]
    container: str | dict = "auto"


ToolSpec = Annotated[FunctionToolSpec | WebSearchSpec | CodeInterpreterSpec, Field(discriminator="type")]


class ReasoningConfig(Strict):
    effort: Effort | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None


class TextFormat(Strict):
    type: Literal["text"]


class TextConfig(Strict):
    format: TextFormat | None = None


class ResponsesRequest(Strict):
    model: str | None = None
    input: str | list[InputItem]
    instructions: str | None = None
    reasoning: ReasoningConfig | None = None
    tools: list[ToolSpec] = Field(default_factory=list)
    tool_choice: Literal["auto", "none"] = "auto"
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    max_output_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    store: bool = True
    stream: bool = False
    metadata: dict[str, str] | None = None
    user: str | None = None
    text: TextConfig | None = None
    truncation: Literal["disabled"] | None = None


def builtin_tools(request: ResponsesRequest, enabled: set[str]) -> set[str]:
    """The server tools ("browser", "python") the request asks for; each must be enabled."""
    names = set()
    for i, tool in enumerate(request.tools):
        if tool.type == "function":
            continue
        name = "browser" if tool.type.startswith("web_search") else "python"
        if name not in enabled:
            raise APIError(
                400, f"The tool '{tool.type}' is not available: the server runs it only when started with --{name}.",
                f"tools[{i}].type", "tool_not_enabled",
            )
        names.add(name)
    return names


def prompt_config(request: ResponsesRequest, effort: str, start_date: str, builtin) -> PromptConfig:
    """The header's settings: reasoning effort, instructions (also from system/developer input), tools."""
    instructions = [request.instructions] if request.instructions else []
    if isinstance(request.input, list):
        instructions += [_text(item.content) for item in request.input
                         if item.type == "message" and item.role in ("system", "developer")]
    functions = () if request.tool_choice == "none" else tuple(
        FunctionTool(t.name, t.description or "", t.parameters) for t in request.tools if t.type == "function"
    )
    return PromptConfig(
        reasoning_effort=effort,
        conversation_start_date=start_date,
        instructions="\n\n".join(instructions) or None,
        builtin_tools=builtin,
        function_tools=functions,
    )


def conversation(request: ResponsesRequest, previous: StoredResponse | None) -> tuple[list[Message], dict[str, str]]:
    """The history after the header (stored turns, then this input) and the call_id -> function map."""
    history = list(previous.history) if previous else []
    names = dict(previous.call_names) if previous else {}
    items = [InputMessage(role="user", content=request.input)] if isinstance(request.input, str) else request.input
    for i, item in enumerate(items):
        if item.type == "message":
            if item.role == "user":
                history.append(user_message(_text(item.content)))
            elif item.role == "assistant":
                history.append(assistant_message(_text(item.content), _channel(item)))
        elif item.type == "reasoning":
            text = "".join(part.text for part in item.content or item.summary)
            history.append(assistant_message(text, "analysis"))
        elif item.type == "function_call":
            names[item.call_id] = item.name
            history.append(function_call_message(item.name, item.arguments))
        elif item.call_id not in names:
            raise APIError(
                400, f"No function call found for the function_call_output with call_id '{item.call_id}'.",
                f"input[{i}].call_id", "invalid_call_id",
            )
        else:
            history.append(function_result_message(names[item.call_id], _text(item.output)))
    return history, names


def _text(content: str | list) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.refusal if part.type == "refusal" else part.text for part in content)


def _channel(message: InputMessage) -> str:
    return "commentary" if message.phase == "commentary" else "final"
