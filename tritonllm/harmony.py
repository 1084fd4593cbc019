"""Harmony, gpt-oss's chat format: the one module that speaks it.

gpt-oss only answers well when its prompt is laid out exactly as in training, and it
answers in that same layout: messages with a channel (`analysis` for reasoning, `final` for
the answer, `commentary` for tool calls and preambles) and, for tool calls, a recipient
such as `browser.search`, `python` or `functions.apply_patch`. This module builds prompts
and reads answers with openai_harmony, and hands callers plain dataclasses, so the chat
CLI, the HTTP server and the tests share one implementation and never print from here:

* `load_encoding()` gets the tokenizer, with a message saying how to fix a missing
  vocabulary on machines without internet;
* `PromptConfig` + `header_messages()` build the system message (identity, reasoning
  effort, date, builtin tools) and the developer message (instructions, function tools);
* `render_prompt()` gives the tokens that make the model write the next assistant
  message, `stop_tokens()` the tokens that end its turn (answer done, or a tool call);
* `StreamDecoder` turns generated token ids, one at a time, into events a UI can show;
* `TextStream` decodes raw tokens (no harmony) into text without splitting characters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from openai_harmony import (
    Author,
    Conversation,
    DeveloperContent,
    HarmonyEncoding,
    HarmonyEncodingName,
    HarmonyError,
    Message,
    ReasoningEffort,
    Role,
    StreamableParser,
    StreamState,
    SystemContent,
    TextContent,
    ToolDescription,
    ToolNamespaceConfig,
    load_harmony_encoding,
)

DEFAULT_IDENTITY = "You are ChatGPT, a large language model trained by OpenAI."
KNOWLEDGE_CUTOFF = "2024-06"
REASONING_EFFORTS = {"low": ReasoningEffort.LOW, "medium": ReasoningEffort.MEDIUM, "high": ReasoningEffort.HIGH}
ENCODING_FILE = "o200k_base.tiktoken"
# Real headers ("<|start|>assistant<|channel|>commentary to=functions.x <|constrain|>json") take
# about 20 tokens; past this many the output is taken as broken.
MAX_HEADER_TOKENS = 128
# A UTF-8 character has at most 4 bytes and every token at least 1, so a character split
# across tokens is complete after at most 4 of them.
_MAX_SPLIT_TOKENS = 4


class EncodingUnavailable(RuntimeError):
    """The harmony tokenizer could not be loaded; the message says how to fix it."""


def load_encoding() -> HarmonyEncoding:
    """The gpt-oss harmony encoding (o200k_harmony tokenizer + format rules).

    openai_harmony reads the vocabulary from the folder in TIKTOKEN_ENCODINGS_BASE, or
    downloads it; offline without that folder this raises EncodingUnavailable.
    """
    try:
        return load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
    except HarmonyError as e:
        raise EncodingUnavailable(
            f"cannot load the harmony tokenizer vocabulary ({e}). Either set the environment "
            f"variable TIKTOKEN_ENCODINGS_BASE to a folder holding {ENCODING_FILE}; or build that "
            "file offline with `pip install quicktok-v1 && python tools/make_encoding.py DIR` and set "
            "TIKTOKEN_ENCODINGS_BASE=DIR; or run once with internet access so openai_harmony can download it"
        ) from None


# -- prompt --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltinTool:
    """A tool namespace of the system message, called as `<name>` or `<name>.<function>`.

    gpt-oss was trained with two: `browser` and `python`. `description` is the text shown
    under the tool's heading (for the browser it holds the TypeScript-like namespace); None
    uses openai_harmony's stock description of `browser` or `python`.
    """

    name: str
    description: str | None = None


@dataclass(frozen=True)
class FunctionTool:
    """A developer-defined function the model calls as `functions.<name>` with JSON arguments."""

    name: str
    description: str
    parameters: dict | None = None  # JSON schema of the arguments object


@dataclass(frozen=True)
class PromptConfig:
    """Everything the conversation's opening system and developer messages say."""

    reasoning_effort: str = "medium"  # "low", "medium" or "high": how long the model reasons
    conversation_start_date: str | None = None  # "YYYY-MM-DD"; fixed for a conversation
    model_identity: str = DEFAULT_IDENTITY
    knowledge_cutoff: str = KNOWLEDGE_CUTOFF
    instructions: str | None = None  # the developer message's "# Instructions"
    builtin_tools: tuple[BuiltinTool, ...] = ()
    function_tools: tuple[FunctionTool, ...] = ()

    def __post_init__(self):
        if self.reasoning_effort not in REASONING_EFFORTS:
            raise ValueError(
                f"reasoning effort must be one of {', '.join(REASONING_EFFORTS)}, got {self.reasoning_effort!r}"
            )


def header_messages(config: PromptConfig) -> list[Message]:
    """The system message, then the developer message when there are instructions or functions."""
    system = (
        SystemContent.new()
        .with_model_identity(config.model_identity)
        .with_reasoning_effort(REASONING_EFFORTS[config.reasoning_effort])
        .with_knowledge_cutoff(config.knowledge_cutoff)
    )
    if config.conversation_start_date:
        system = system.with_conversation_start_date(config.conversation_start_date)
    for tool in config.builtin_tools:
        system = system.with_tools(_namespace(tool))
    messages = [Message.from_role_and_content(Role.SYSTEM, system)]
    if config.instructions or config.function_tools:
        developer = DeveloperContent.new()
        if config.instructions:
            developer = developer.with_instructions(config.instructions)
        if config.function_tools:
            developer = developer.with_function_tools(
                [ToolDescription.new(f.name, f.description, f.parameters) for f in config.function_tools]
            )
        messages.append(Message.from_role_and_content(Role.DEVELOPER, developer))
    return messages


def _namespace(tool: BuiltinTool) -> ToolNamespaceConfig:
    if tool.description is not None:
        return ToolNamespaceConfig(name=tool.name, description=tool.description, tools=[])
    stock = {"browser": ToolNamespaceConfig.browser, "python": ToolNamespaceConfig.python}.get(tool.name)
    if stock is None:
        raise ValueError(f"builtin tool {tool.name!r} needs a description (only browser and python have stock ones)")
    return stock()


def user_message(text: str) -> Message:
    return Message.from_role_and_content(Role.USER, text)


def tool_result_message(call: Message, output: str) -> Message:
    """The tool's answer to `call`: authored by the tool (named as the call's recipient),
    addressed to the assistant, on the channel the call was made on."""
    message = Message.from_author_and_content(Author.new(Role.TOOL, call.recipient), output).with_recipient("assistant")
    return message.with_channel(call.channel) if call.channel else message


def assistant_message(text: str, channel: str = "final") -> Message:
    """An earlier assistant message that an API client sends back: its answer (`final`),
    a preamble (`commentary`) or its reasoning (`analysis`)."""
    return Message.from_role_and_content(Role.ASSISTANT, text).with_channel(channel)


def function_call_message(name: str, arguments: str) -> Message:
    """An earlier call of the developer function `name` with JSON `arguments`, laid out as
    gpt-oss writes one (commentary channel, `<|constrain|>json`)."""
    return (
        assistant_message(arguments, "commentary")
        .with_recipient(f"functions.{name}")
        .with_content_type("<|constrain|>json")
    )


def function_result_message(name: str, output: str) -> Message:
    """What the developer function `name` returned, as the API client reports it."""
    return tool_result_message(function_call_message(name, ""), output)


def message_text(message: Message) -> str:
    """The text of a message (its text parts joined)."""
    return "".join(part.text for part in message.content if isinstance(part, TextContent))


def render_prompt(encoding: HarmonyEncoding, messages: list[Message]) -> list[int]:
    """Prompt tokens that end with `<|start|>assistant`, for the model's next message.

    Harmony drops the reasoning (and tool calls) of earlier, already answered turns. For the
    same `messages` plus new ones at the end, the result starts with the earlier prompt
    (except where such dropping applies), which lets the engine reuse its KV cache.
    """
    return encoding.render_conversation_for_completion(Conversation.from_messages(messages), Role.ASSISTANT)


def stop_tokens(encoding: HarmonyEncoding) -> list[int]:
    """Tokens that end an assistant turn: `<|return|>` (answer done) and `<|call|>` (tool call)."""
    return encoding.stop_tokens_for_assistant_actions()


# -- streaming decode ----------------------------------------------------------------------


@dataclass(frozen=True)
class MessageStart:
    """A new message's header is complete; its text follows as TextDeltas."""

    channel: str | None
    recipient: str | None  # set for a tool call, e.g. "browser.search", "python", "functions.apply_patch"
    content_type: str | None  # e.g. "<|constrain|>json" or "code" for tool calls


@dataclass(frozen=True)
class TextDelta:
    """New text of the message in progress."""

    channel: str | None
    recipient: str | None
    text: str


@dataclass(frozen=True)
class MessageDone:
    """A message is complete (a stop token or `<|end|>` came, or generation was cut off)."""

    message: Message

    @property
    def channel(self) -> str | None:
        return self.message.channel

    @property
    def recipient(self) -> str | None:
        return self.message.recipient

    @property
    def text(self) -> str:
        return message_text(self.message)


@dataclass(frozen=True)
class FormatError:
    """The model's output stopped following harmony; what follows comes as RawText."""

    error: str


@dataclass(frozen=True)
class RawText:
    """Decoded text outside harmony: after a FormatError, or in plain (raw) completion."""

    text: str


Event = MessageStart | TextDelta | MessageDone | FormatError | RawText


@dataclass
class StreamDecoder:
    """Reads an assistant reply token by token (`feed`) and reports events.

    Completed messages collect in `messages`, ready to append to the conversation. If the
    output breaks the format (a random model, a broken reply, a header that never ends),
    `error` is set, one FormatError is reported, and the output from the broken message's
    header on is passed on as RawText and kept out of `messages`.
    """

    encoding: HarmonyEncoding
    messages: list[Message] = field(default_factory=list)
    error: str | None = None

    def __post_init__(self):
        self._parser = StreamableParser(self.encoding, Role.ASSISTANT)
        self._in_content = False
        self._header: list[int] = []  # tokens since the last message text: shown raw if the format breaks
        self._raw: TextStream | None = None

    def feed(self, token: int) -> list[Event]:
        if self._raw is not None:
            return self._raw_events([token])
        parser = self._parser
        try:
            parser.process(token)
        except HarmonyError as e:
            return self._break(str(e), [*self._header, token])
        events: list[Event] = []
        in_content = parser.state == StreamState.CONTENT
        if in_content and not self._in_content:  # the header is complete
            self._header.clear()
            events.append(MessageStart(parser.current_channel, parser.current_recipient, parser.current_content_type))
        elif self._in_content and not in_content:  # the message ended
            events.extend(self._collect())
        elif not in_content:
            self._header.append(token)
            if len(self._header) > MAX_HEADER_TOKENS:  # else a broken model streams on unseen
                return self._break(f"a message header longer than {MAX_HEADER_TOKENS} tokens", self._header)
        self._in_content = in_content
        delta = parser.last_content_delta
        if in_content and delta:
            events.append(TextDelta(parser.current_channel, parser.current_recipient, delta))
        return events

    def finish(self) -> list[Event]:
        """Generation ended without a stop token (cut off): complete the message in progress.

        A message cut off inside its header is dropped.
        """
        if self._raw is not None:
            text = self._raw.flush()
            return [RawText(text)] if text else []
        if not self._in_content:
            return []
        self._in_content = False
        self._parser.process_eos()
        return self._collect()

    def _collect(self) -> list[Event]:
        new = self._parser.messages[len(self.messages) :]
        self.messages.extend(new)
        return [MessageDone(m) for m in new]

    def _break(self, error: str, tokens: list[int]) -> list[Event]:
        self.error = error
        self._raw = TextStream(self.encoding)
        return [FormatError(error), *self._raw_events(tokens)]

    def _raw_events(self, tokens: list[int]) -> list[Event]:
        text = "".join(self._raw.feed(token) for token in tokens)
        return [RawText(text)] if text else []


class TextStream:
    """Decodes token ids one at a time into text pieces that never split a UTF-8 character."""

    def __init__(self, encoding: HarmonyEncoding):
        self.encoding = encoding
        self._pending: list[int] = []

    def feed(self, token: int) -> str:
        self._pending.append(token)
        text = self.encoding.decode(self._pending)
        if text.endswith("\ufffd") and len(self._pending) < _MAX_SPLIT_TOKENS:
            return ""  # maybe the start of a character that the next token completes
        self._pending.clear()
        return text

    def flush(self) -> str:
        text = self.encoding.decode(self._pending)
        self._pending.clear()
        return text
