"""A chat conversation with gpt-oss, independent of any user interface.

`ChatSession.turn(text)` adds the user's message, lets the model answer, runs the tools
it calls and lets it continue, yielding events along the way (harmony's stream events
plus `ToolResult` and `Notice`), until the model ends its turn. The chat CLI prints these
events; tests drive a session with a scripted token source.

Tokens come from a `TokenSource`, `(prompt_tokens, stop_tokens) -> Iterator[int]`, e.g.
`llm_token_source(...)` around `LLM.generate`. The engine reuses its KV cache for the
longest prefix the new prompt shares with the tokens it already holds (where its
sliding-window rings allow: see tritonllm.engine), so the session keeps earlier messages
unchanged and only appends: each turn prefills just its new part.

History rules (also documented in the CLI's --help):
* a turn that is interrupted (any exception, Ctrl-C included, or the consumer closing
  the event stream) is removed whole, the user's message too, so the history is as if
  it had not been asked; the same goes for a turn that cannot fit the context at all;
* an answer cut off by --max-tokens or a full context is kept as far as it got;
* before every model step the prompt must leave room for the answer: `max_tokens`, or a
  quarter of the context when unset (never more than half of it). If it does not, the
  oldest turns (a user message with everything said in reply) are dropped until it does;
  the system and developer messages always stay.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from openai_harmony import HarmonyEncoding, Message, Role

from tritonllm.harmony import (
    BuiltinTool,
    Event,
    FunctionTool,
    PromptConfig,
    RawText,
    StreamDecoder,
    TextStream,
    header_messages,
    message_text,
    render_prompt,
    stop_tokens,
    tool_result_message,
    user_message,
)
from tritonllm.tools.apply_patch import ApplyPatchTool
from tritonllm.tools.browser import BrowserTool
from tritonllm.tools.python_sandbox import PythonTool

log = logging.getLogger(__name__)

TokenSource = Callable[[list[int], list[int]], Iterator[int]]


class ContextError(RuntimeError):
    """The turn cannot fit the context; it was dropped and the message says what to do."""


@dataclass(frozen=True)
class ToolResult:
    """A tool ran for a call to `recipient`; `output` is what the model is shown."""

    recipient: str
    output: str


@dataclass(frozen=True)
class Notice:
    """Something the user should know about the conversation (dropped turns, cut-off answers)."""

    text: str


def llm_token_source(llm, temperature: float = 1.0, top_p: float = 1.0, seed: int | None = None) -> TokenSource:
    """A TokenSource over `LLM.generate`, allowed to fill the rest of the context."""
    context = llm.engine.context_length

    def generate(prompt: list[int], stop: list[int]) -> Iterator[int]:
        return llm.generate(prompt, context - len(prompt), temperature, top_p, stop, seed)

    return generate


@dataclass
class Tools:
    """The tools enabled for a conversation and the dispatch of the model's calls to them."""

    browser: BrowserTool | None = None
    python: PythonTool | None = None
    apply_patch: ApplyPatchTool | None = None

    def builtin(self) -> tuple[BuiltinTool, ...]:
        return tuple(BuiltinTool(t.name, t.description) for t in (self.browser, self.python) if t is not None)

    def functions(self) -> tuple[FunctionTool, ...]:
        if self.apply_patch is None:
            return ()
        tool = self.apply_patch
        return (FunctionTool(tool.name, tool.description, tool.parameters),)

    def call(self, recipient: str, args: str) -> str:
        """Run the tool `recipient` names; failures come back as "error: ..." text for the model."""
        recipient = recipient.strip()
        namespace, _, function = recipient.partition(".")
        try:
            if namespace == "browser" and self.browser is not None:
                return self.browser.call(function, args)
            if recipient == "python" and self.python is not None:
                return self.python.call(args)
            if recipient == "functions.apply_patch" and self.apply_patch is not None:
                return self.apply_patch.call(args)
        except Exception as e:  # a tool failure must not end the conversation
            log.exception("tool %s failed", recipient)
            return f"error: the tool {recipient} failed: {type(e).__name__}: {e}"
        return f"error: there is no tool {recipient!r}; the available tools are: {', '.join(self.names()) or 'none'}"

    def names(self) -> list[str]:
        names = [t.name for t in (self.browser, self.python) if t is not None]
        return names + [f"functions.{f.name}" for f in self.functions()]


def _drain(tokens: Iterable[int], budget: int | None, stop: set[int]) -> Iterator[int]:
    """Pass tokens on until a stop token (included) or `budget` tokens; then close the source."""
    iterator = iter(tokens)
    try:
        for count, token in enumerate(iterator, 1):
            yield token
            if token in stop or count == budget:
                return
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


class ChatSession:
    """One harmony conversation: history, context management and the tool loop."""

    def __init__(
        self,
        encoding: HarmonyEncoding,
        source: TokenSource,
        config: PromptConfig,
        context_length: int,
        max_tokens: int | None = None,
        tools: Tools | None = None,
    ):
        self.encoding = encoding
        self.source = source
        self.tools = tools or Tools()
        self.header = header_messages(config)
        self.history: list[Message] = []  # after the header; always starts with a user message
        self.context_length = context_length
        self.max_tokens = max_tokens
        self.room = min(max_tokens or context_length // 4, context_length // 2)
        self.stop = stop_tokens(encoding)

    def prompt(self) -> list[int]:
        return render_prompt(self.encoding, self.header + self.history)

    def turn(self, text: str) -> Iterator[Event | ToolResult | Notice]:
        """Answer `text`: yield the model's events until it ends its turn (see module doc)."""
        user = user_message(text)
        self.history.append(user)
        try:
            yield from self._answer(user)
        except BaseException:
            del self.history[self._index(user) :]
            raise

    def _answer(self, user: Message) -> Iterator[Event | ToolResult | Notice]:
        used = 0
        while True:
            budget = None if self.max_tokens is None else self.max_tokens - used
            if budget == 0:  # spent on tool calls
                yield Notice(self._cut_off_reason(used, 0))
                return
            prompt = yield from self._fit(user)
            decoder = StreamDecoder(self.encoding)
            stopped = False
            for token in _drain(self.source(prompt, self.stop), budget, set(self.stop)):
                used += 1
                stopped = token in self.stop
                yield from decoder.feed(token)
            if not stopped:
                yield from decoder.finish()
            self.history.extend(decoder.messages)
            if decoder.error is not None:
                yield Notice("the model's reply broke the harmony format; only its well-formed messages are kept")
                return
            if not stopped:
                yield Notice(self._cut_off_reason(used, len(prompt) + used))
                return
            call = decoder.messages[-1] if decoder.messages else None
            if call is None or call.recipient is None:
                return
            output = self.tools.call(call.recipient, message_text(call))
            log.info("tool %s returned %d characters", call.recipient, len(output))
            self.history.append(tool_result_message(call, output))
            yield ToolResult(call.recipient, output)

    def _cut_off_reason(self, used: int, length: int) -> str:
        if self.max_tokens is not None and used >= self.max_tokens:
            return f"the answer was cut off at --max-tokens ({self.max_tokens} tokens)"
        if length >= self.context_length:
            return f"the answer was cut off: the context ({self.context_length} tokens) is full"
        return "the answer ended without a stop token"

    def _fit(self, user: Message) -> Iterator[Notice]:
        """Drop the oldest turns until the prompt leaves room for the answer; return the prompt."""
        while True:
            prompt = self.prompt()
            free = self.context_length - len(prompt)
            if free >= self.room:
                return prompt
            current = self._index(user)
            if current == 0:  # only the current turn is left
                if free > 0:
                    return prompt
                raise ContextError(
                    f"this turn needs {len(prompt)} tokens but the context holds {self.context_length}: "
                    "the turn was dropped; write less, or raise the context length"
                )
            end = next(i for i in range(1, len(self.history)) if self.history[i].author.role == Role.USER)
            del self.history[:end]
            yield Notice(
                f"the conversation outgrew the context ({self.context_length} tokens): dropped the oldest turn"
            )

    def _index(self, message: Message) -> int:
        return next(i for i, m in enumerate(self.history) if m is message)


class RawSession:
    """Plain completion, no harmony: each input's text is continued on its own.

    Special tokens typed as text (e.g. `<|start|>`) are encoded as special tokens, so
    harmony can be typed by hand.
    """

    def __init__(
        self, encoding: HarmonyEncoding, source: TokenSource, context_length: int, max_tokens: int | None = None
    ):
        self.encoding = encoding
        self.source = source
        self.context_length = context_length
        self.max_tokens = max_tokens
        self.stop = encoding.stop_tokens() + encoding.encode("<|endoftext|>", allowed_special="all")

    def turn(self, text: str) -> Iterator[RawText | Notice]:
        prompt = self.encoding.encode(text, allowed_special="all")
        if len(prompt) >= self.context_length:
            raise ContextError(
                f"the text has {len(prompt)} tokens but the context holds {self.context_length}: "
                "shorten it or raise the context length"
            )
        stream = TextStream(self.encoding)
        used = 0
        for token in _drain(self.source(prompt, self.stop), self.max_tokens, set(self.stop)):
            used += 1
            text = stream.feed(token)
            if text:
                yield RawText(text)
        rest = stream.flush()
        if rest:
            yield RawText(rest)
        if self.max_tokens is not None and used >= self.max_tokens:
            yield Notice(f"stopped at --max-tokens ({self.max_tokens} tokens)")
