"""One model answer for an API request, as output items both APIs can present.

A `Turn` renders the harmony prompt, runs it through the backend and decodes the tokens
with harmony's `StreamDecoder` into items: `reasoning` (the analysis channel), `message`
(the final answer or a commentary preamble), `function_call` (a call to a developer
function, which ends the turn: the client runs it) and `tool_call` (a builtin tool the
server runs, after which the model goes on). Output that breaks the harmony format (a
random test model, a broken reply) becomes the text of a `message` item, so the client
still sees what the model wrote.

`events()` yields `Added`, `Delta` and `Done` per item as generation proceeds; when it
ends, `finish` says why ("stop", "length" or "tool_calls"; the APIs add "error", and
"stop" for a stop sequence; None: not finished, e.g. the client left), `history` has
gained the well-formed messages (for a later turn) and `usage` counts the tokens.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from openai_harmony import HarmonyEncoding, Message

from tritonllm.conversation import Tools
from tritonllm.harmony import (
    FormatError,
    MessageDone,
    MessageStart,
    RawText,
    StreamDecoder,
    TextDelta,
    render_prompt,
    stop_tokens,
    tool_result_message,
)
from tritonllm.serve.backend import Backend, Sampling
from tritonllm.serve.errors import APIError

log = logging.getLogger(__name__)

REASONING, MESSAGE, FUNCTION_CALL, TOOL_CALL = "reasoning", "message", "function_call", "tool_call"
FUNCTIONS = "functions."


def new_id(prefix: str, separator: str = "_") -> str:
    """A random id in OpenAI's style: resp_..., msg_..., call_..., chatcmpl-..."""
    return f"{prefix}{separator}{secrets.token_hex(12)}"


@dataclass
class Item:
    """An output item; `text` is the reasoning, the answer, the call's arguments or the tool's code."""

    kind: str
    channel: str | None = None
    recipient: str | None = None
    text: str = ""
    status: str = "in_progress"  # then "completed" or "incomplete"
    output: str | None = None  # what a builtin tool returned
    id: str = ""
    call_id: str | None = None

    def __post_init__(self):
        prefix = {REASONING: "rs", MESSAGE: "msg", FUNCTION_CALL: "fc", TOOL_CALL: "tc"}[self.kind]
        self.id = self.id or new_id(prefix)
        if self.kind == FUNCTION_CALL:
            self.call_id = new_id("call")

    @property
    def name(self) -> str:
        """The function (for function calls) or tool (for builtin calls) called."""
        return (self.recipient or "").removeprefix(FUNCTIONS)


@dataclass(frozen=True)
class Added:
    item: Item


@dataclass(frozen=True)
class Delta:
    item: Item
    text: str


@dataclass(frozen=True)
class Done:
    item: Item


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0


def _kind(channel: str | None, recipient: str | None) -> str:
    if recipient:
        return FUNCTION_CALL if recipient.startswith(FUNCTIONS) else TOOL_CALL
    return REASONING if channel == "analysis" else MESSAGE


@dataclass
class Turn:
    """See the module doc. Raises APIError (400) at construction if the prompt cannot fit."""

    backend: Backend
    encoding: HarmonyEncoding
    context_length: int
    header: list[Message]
    history: list[Message]  # after the header; extended with the answer
    sampling: Sampling
    max_tokens: int | None
    tools: Tools
    input_param: str  # the request field the prompt comes from, for errors
    items: list[Item] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    finish: str | None = None

    def __post_init__(self):
        self.stop = stop_tokens(self.encoding)
        prompt = self._prompt()
        room = self.context_length - len(prompt)
        if room < (self.max_tokens or 1):
            wanted = f"; {self.max_tokens} requested for the output" if self.max_tokens else ""
            raise APIError(
                400, f"This model's maximum context length is {self.context_length} tokens, but the prompt has "
                f"{len(prompt)} tokens{wanted}. Shorten the input or the output limit.",
                self.input_param, "context_length_exceeded",
            )
        self._current: Item | None = None  # the message being written
        self._pending: Item | None = None  # a builtin call written but not run yet
        self._raw: Item | None = None  # the message holding output that broke the format

    def _prompt(self) -> list[int]:
        return render_prompt(self.encoding, self.header + self.history)

    async def events(self) -> AsyncIterator[Added | Delta | Done]:
        """Generate until the model ends its turn, calls a function or runs out of tokens."""
        while True:
            prompt = self._prompt()
            budget = self.context_length - len(prompt)
            if self.max_tokens is not None:
                budget = min(budget, self.max_tokens - self.usage.output_tokens)
            if budget <= 0:  # spent on earlier steps (builtin tool calls)
                self.finish = "length"
                return
            self.usage.input_tokens += len(prompt)
            decoder = StreamDecoder(self.encoding)
            stopped = False
            header: list[int] = []  # tokens of a message header not complete yet
            job = self.backend.submit(prompt, self.stop, self.sampling, budget)
            try:
                async for token in job:
                    self.usage.output_tokens += 1
                    if self._current is not None and self._current.kind == REASONING:
                        self.usage.reasoning_tokens += 1
                    stopped = token in self.stop
                    if stopped and decoder.error is not None:
                        break  # keep the stop token's text out of the raw output
                    events = self._translate(decoder.feed(token))
                    inside = events or self._current is not None or self._raw is not None
                    header = [] if inside else [*header, token]
                    for event in events:
                        yield event
            finally:
                job.cancel()
            for event in [] if stopped else self._translate(decoder.finish(), "incomplete") + self._unheaded(header):
                yield event
            if self._raw is not None:
                yield self._close(self._raw, "completed" if stopped else "incomplete")
            self.history.extend(decoder.messages)
            last = decoder.messages[-1] if decoder.messages and decoder.error is None else None
            call, self._pending = self._pending, None
            if stopped and call is not None and last is not None and last.recipient == call.recipient:
                yield await self._run_tool(call, last)
                continue
            if call is not None:
                yield self._close(call, "incomplete")
            if not stopped:
                self.finish = "length"
            else:
                self.finish = "tool_calls" if last is not None and last.recipient else "stop"
            return

    def _unheaded(self, header: list[int]) -> list[Added | Delta]:
        """Output cut off before it ever looked like a harmony header (a random test model
        writes plain tokens): passed on as text, like output that broke the format."""
        text = self.encoding.decode(header)
        if not text or text.startswith(("<|", " to=")):
            return []  # a real header cut off: nothing to show
        self._raw = self._add(MESSAGE, None, None)
        self._raw.text = text
        return [Added(self._raw), Delta(self._raw, text)]

    async def _run_tool(self, item: Item, call: Message) -> Done:
        """Run the builtin tool the model called; its result joins the history for the next step."""
        item.output = await asyncio.to_thread(self.tools.call, call.recipient, item.text)
        log.info("builtin tool %s returned %d characters", call.recipient, len(item.output))
        self.history.append(tool_result_message(call, item.output))
        return self._close(item, "completed")

    def _translate(self, events, status: str = "completed") -> list[Added | Delta | Done]:
        """Harmony's decode events as item events; `status` for the messages they complete."""
        out: list[Added | Delta | Done] = []
        for event in events:
            if isinstance(event, MessageStart):
                if self._pending is not None:  # more output followed the call: it is not run
                    out.append(self._close(self._pending, "incomplete"))
                self._current = self._add(_kind(event.channel, event.recipient), event.channel, event.recipient)
                out.append(Added(self._current))
            elif isinstance(event, TextDelta) and self._current is not None:
                self._current.text += event.text
                out.append(Delta(self._current, event.text))
            elif isinstance(event, MessageDone) and self._current is not None:
                item, self._current = self._current, None
                item.text = event.text
                if item.kind == TOOL_CALL and status == "completed":
                    self._pending = item  # done once the tool ran
                else:
                    out.append(self._close(item, status))
            elif isinstance(event, FormatError):
                log.warning("the model's output broke the harmony format (%s); passing it on as text", event.error)
                out.extend(self._close(item, "incomplete") for item in (self._current, self._pending) if item)
            elif isinstance(event, RawText):
                if self._raw is None:
                    self._raw = self._add(MESSAGE, None, None)
                    out.append(Added(self._raw))
                self._raw.text += event.text
                out.append(Delta(self._raw, event.text))
        return out

    def _add(self, kind: str, channel: str | None, recipient: str | None) -> Item:
        item = Item(kind, channel, recipient)
        self.items.append(item)
        return item

    def _close(self, item: Item, status: str) -> Done:
        item.status = status
        for attr in ("_current", "_pending", "_raw"):
            if getattr(self, attr) is item:
                setattr(self, attr, None)
        return Done(item)
