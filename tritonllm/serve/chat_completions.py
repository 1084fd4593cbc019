"""`POST /v1/chat/completions`: request model, translation to harmony, completion and chunks.

System and developer messages become the developer message's instructions; an assistant
message's `tool_calls` become harmony function calls and `role: tool` messages their
results, so a client that runs a function and sends the result back gets the model's next
step. The analysis channel comes back in `reasoning_content` (of the message, or of the
chunk deltas), as other OpenAI-compatible servers put it; a client may send it back on
assistant messages, which harmony needs to continue after a tool call.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Annotated, Literal

from openai_harmony import Message
from pydantic import Field

from tritonllm.harmony import (
    FunctionTool,
    PromptConfig,
    assistant_message,
    function_call_message,
    function_result_message,
    user_message,
)
from tritonllm.serve.backend import GenerationError
from tritonllm.serve.errors import APIError, error_body
from tritonllm.serve.generation import FUNCTION_CALL, MESSAGE, REASONING, Added, Delta, Turn
from tritonllm.serve.schemas import Effort, FunctionName, MaxTokens, Seed, Strict, Temperature, TopP
from tritonllm.serve.sse import frame
from tritonllm.serve.stop_text import StopText


class TextPart(Strict):
    type: Literal["text"]
    text: str


Content = str | list[TextPart]


class SystemMessage(Strict):
    role: Literal["system", "developer"]
    content: Content
    name: str | None = None


class UserMessage(Strict):
    role: Literal["user"]
    content: Content
    name: str | None = None


class CalledFunction(Strict):
    name: FunctionName
    arguments: str


class ToolCall(Strict):
    id: str
    type: Literal["function"] = "function"
    function: CalledFunction


class AssistantMessage(Strict):
    role: Literal["assistant"]
    content: Content | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] | None = None
    name: str | None = None
    refusal: str | None = None


class ToolMessage(Strict):
    role: Literal["tool"]
    content: Content
    tool_call_id: str


ChatMessage = Annotated[SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")]


class FunctionSpec(Strict):
    name: FunctionName
    description: str | None = None
    parameters: dict | None = None
    strict: bool | None = None


class ToolSpec(Strict):
    type: Literal["function"]
    function: FunctionSpec


class StreamOptions(Strict):
    include_usage: bool = False


class ChatRequest(Strict):
    model: str
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    tools: list[ToolSpec] | None = None
    tool_choice: Literal["auto", "none"] | None = None
    parallel_tool_calls: bool | None = None
    max_tokens: MaxTokens | None = None
    max_completion_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    seed: Seed | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Literal[1] | None = None
    reasoning_effort: Effort | None = None
    user: str | None = None


def prompt_config(request: ChatRequest, default_effort: str, start_date: str) -> PromptConfig:
    """The header's settings: reasoning effort, the system/developer messages' text, function tools."""
    instructions = "\n\n".join(_text(m.content) for m in request.messages if m.role in ("system", "developer"))
    functions = () if request.tool_choice == "none" else tuple(
        FunctionTool(t.function.name, t.function.description or "", t.function.parameters) for t in request.tools or ()
    )
    return PromptConfig(
        reasoning_effort=request.reasoning_effort or default_effort,
        conversation_start_date=start_date,
        instructions=instructions or None,
        function_tools=functions,
    )


def conversation(request: ChatRequest) -> list[Message]:
    """The messages after the header, harmony's way."""
    history: list[Message] = []
    names: dict[str, str] = {}  # tool_call_id -> function
    for i, message in enumerate(request.messages):
        if message.role == "user":
            history.append(user_message(_text(message.content)))
        elif message.role == "assistant":
            if message.reasoning_content:
                history.append(assistant_message(message.reasoning_content, "analysis"))
            text = _text(message.content or "")
            if text:
                history.append(assistant_message(text, "commentary" if message.tool_calls else "final"))
            for call in message.tool_calls or ():
                names[call.id] = call.function.name
                history.append(function_call_message(call.function.name, call.function.arguments))
        elif message.role == "tool":
            if message.tool_call_id not in names:
                raise APIError(
                    400, f"No assistant tool call has the id '{message.tool_call_id}' that this tool message answers.",
                    f"messages[{i}].tool_call_id", "invalid_tool_call_id",
                )
            history.append(function_result_message(names[message.tool_call_id], _text(message.content)))
    return history


def _text(content: Content) -> str:
    return content if isinstance(content, str) else "".join(part.text for part in content)


class ChatRun:
    """One `POST /v1/chat/completions` being answered, streamed (`stream()`) or not (`collect()`)."""

    def __init__(self, request: ChatRequest, turn: Turn, model: str, completion_id: str):
        self.request, self.turn, self.model, self.id = request, turn, model, completion_id
        self.created = int(time.time())
        stop = request.stop
        self.stop = StopText([stop] if isinstance(stop, str) else stop or [])

    async def stream(self) -> AsyncIterator[str]:
        """SSE frames: chunks with the deltas, the finish reason, usage if asked, `[DONE]`."""
        yield self._chunk({"role": "assistant", "content": ""})
        calls = []
        try:
            async for field, value in self._pieces():
                if field == "call":
                    calls.append(value)
                    call = {"index": len(calls) - 1, "id": value.call_id, "type": "function",
                            "function": {"name": value.name, "arguments": ""}}
                    yield self._chunk({"tool_calls": [call]})
                elif field == "arguments":
                    yield self._chunk({"tool_calls": [{"index": len(calls) - 1, "function": {"arguments": value}}]})
                else:
                    yield self._chunk({field: value})
        except GenerationError as e:
            self.turn.finish = "error"
            yield frame(error_body(str(e), "server_error", code="server_error"))  # the client raises it
            return
        yield self._chunk({}, self.turn.finish)
        if self.request.stream_options and self.request.stream_options.include_usage:
            yield frame(self._object("chat.completion.chunk", [], usage=True))
        yield frame("[DONE]")

    async def collect(self) -> dict:
        """The whole chat.completion object."""
        content, reasoning, calls = [], [], []
        async for field, value in self._pieces():
            if field == "content":
                content.append(value)
            elif field == "reasoning_content":
                reasoning.append(value)
            elif field == "call":
                calls.append(value)
        message = {"role": "assistant", "content": "".join(content) or (None if calls else ""),
                   "reasoning_content": "".join(reasoning) or None}
        if calls:
            message["tool_calls"] = [{"id": c.call_id, "type": "function",
                                      "function": {"name": c.name, "arguments": c.text}} for c in calls]
        choice = {"index": 0, "message": message, "finish_reason": self.turn.finish, "logprobs": None}
        return self._object("chat.completion", [choice], usage=True)

    async def _pieces(self) -> AsyncIterator[tuple[str, object]]:
        """("content" | "reasoning_content", text), ("call", item), ("arguments", text), in order;
        ends early at a stop sequence."""
        async with aclosing(self.turn.events()) as events:
            async for event in events:
                item = event.item
                if item.kind == FUNCTION_CALL and isinstance(event, Added):
                    yield "call", item
                elif item.kind == FUNCTION_CALL and isinstance(event, Delta):
                    yield "arguments", event.text
                elif item.kind == REASONING and isinstance(event, Delta):
                    yield "reasoning_content", event.text
                elif item.kind == MESSAGE and isinstance(event, Delta):
                    text = self.stop.feed(event.text)
                    if text:
                        yield "content", text
                    if self.stop.stopped:
                        self.turn.finish = "stop"
                        return
        rest = self.stop.flush()
        if rest:
            yield "content", rest

    def _chunk(self, delta: dict, finish_reason: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        return frame(self._object("chat.completion.chunk", [choice]))

    def _object(self, kind: str, choices: list, usage: bool = False) -> dict:
        result = {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": choices}
        if usage:
            u = self.turn.usage
            result["usage"] = {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens,
                               "total_tokens": u.input_tokens + u.output_tokens,
                               "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens}}
        return result
