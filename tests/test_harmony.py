"""tritonllm.harmony: offline vocabulary, prompt rendering and streaming decode."""

import base64
import hashlib

import pytest

from tritonllm.harmony import (
    MAX_HEADER_TOKENS,
    BuiltinTool,
    EncodingUnavailable,
    FormatError,
    FunctionTool,
    MessageDone,
    MessageStart,
    PromptConfig,
    RawText,
    StreamDecoder,
    TextDelta,
    TextStream,
    header_messages,
    load_encoding,
    message_text,
    render_prompt,
    stop_tokens,
    tool_result_message,
    user_message,
)

pytest_plugins = ["tests.conftest_harmony"]

O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"


def tokens(encoding, text):
    return encoding.encode(text, allowed_special="all")


def decode_all(encoding, text):
    decoder = StreamDecoder(encoding)
    events = [e for t in tokens(encoding, text) for e in decoder.feed(t)]
    return decoder, events


def test_make_encoding_writes_the_official_file(encoding_dir):
    data = (encoding_dir / "o200k_base.tiktoken").read_bytes()
    assert hashlib.sha256(data).hexdigest() == O200K_SHA256


def test_missing_vocabulary_says_how_to_fix_it(encoding_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_ENCODINGS_BASE", str(tmp_path))
    with pytest.raises(EncodingUnavailable) as err:
        load_encoding()
    message = str(err.value)
    assert "TIKTOKEN_ENCODINGS_BASE" in message and "o200k_base.tiktoken" in message
    assert "python tools/make_encoding.py DIR" in message and "internet" in message


def test_system_message_has_effort_date_and_builtin_tools(encoding):
    config = PromptConfig(
        reasoning_effort="low",
        conversation_start_date="2025-08-05",
        builtin_tools=(BuiltinTool("browser"), BuiltinTool("python", "Runs code, statelessly.")),
    )
    text = encoding.decode(render_prompt(encoding, header_messages(config) + [user_message("Hi")]))
    assert text.startswith("<|start|>system<|message|>You are ChatGPT")
    assert "Reasoning: low" in text and "Current date: 2025-08-05" in text
    assert "## browser" in text and "namespace browser {" in text  # harmony's stock browser text
    assert "## python\n\nRuns code, statelessly." in text
    assert "<|start|>developer" not in text  # nothing to say there
    assert text.endswith("<|start|>user<|message|>Hi<|end|><|start|>assistant")


def test_developer_message_has_instructions_and_function_tools(encoding):
    schema = {"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]}
    config = PromptConfig(
        reasoning_effort="high",
        instructions="Answer in French.",
        function_tools=(FunctionTool("apply_patch", "Edit files with a patch.", schema),),
    )
    text = encoding.decode(render_prompt(encoding, header_messages(config)))
    assert "Reasoning: high" in text and "Current date" not in text
    assert "<|start|>developer<|message|># Instructions\n\nAnswer in French." in text
    assert "namespace functions {" in text and "type apply_patch = (_: {\ninput: string," in text
    assert "Calls to these tools must go to the commentary channel: 'functions'." in text


def test_bad_reasoning_effort_is_refused():
    with pytest.raises(ValueError, match="low, medium, high"):
        PromptConfig(reasoning_effort="extreme")


def test_stop_tokens_are_return_and_call(encoding):
    assert sorted(encoding.decode([t]) for t in stop_tokens(encoding)) == ["<|call|>", "<|return|>"]


def test_decoder_reports_reasoning_tool_call_and_answer(encoding):
    decoder, events = decode_all(
        encoding,
        "<|channel|>analysis<|message|>Think first.<|end|>"
        "<|start|>assistant<|channel|>commentary to=functions.apply_patch <|constrain|>json"
        '<|message|>{"input": 1}<|call|>',
    )
    starts = [e for e in events if isinstance(e, MessageStart)]
    assert [(s.channel, s.recipient) for s in starts] == [("analysis", None), ("commentary", "functions.apply_patch")]
    assert starts[1].content_type == "<|constrain|>json"
    analysis = "".join(e.text for e in events if isinstance(e, TextDelta) and e.channel == "analysis")
    call_args = "".join(e.text for e in events if isinstance(e, TextDelta) and e.recipient)
    assert analysis == "Think first." and call_args == '{"input": 1}'
    done = [e for e in events if isinstance(e, MessageDone)]
    assert [(d.channel, d.recipient, d.text) for d in done] == [
        ("analysis", None, "Think first."),
        ("commentary", "functions.apply_patch", '{"input": 1}'),
    ]
    assert decoder.messages == [d.message for d in done] and decoder.error is None
    assert decoder.finish() == []  # ended by a stop token: nothing pending


def test_decoder_final_answer_and_cut_off_message(encoding):
    decoder, events = decode_all(encoding, "<|channel|>final<|message|>Bonjour, ça va")
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Bonjour, ça va"
    assert not decoder.messages  # no end token yet
    done = decoder.finish()
    assert [(d.channel, d.text) for d in done] == [("final", "Bonjour, ça va")]
    cut_in_header, _ = decode_all(encoding, "<|channel|>fin")
    assert cut_in_header.finish() == [] and cut_in_header.messages == []


def test_decoder_passes_broken_output_on_as_raw_text(encoding):
    decoder, events = decode_all(encoding, "<|channel|>final<|message|>ok<|end|>garbage here")
    assert [e.text for e in events if isinstance(e, MessageDone)] == ["ok"]
    errors = [e for e in events if isinstance(e, FormatError)]
    assert len(errors) == 1 and decoder.error == errors[0].error
    assert "".join(e.text for e in events if isinstance(e, RawText)) == "garbage here"
    assert [message_text(m) for m in decoder.messages] == ["ok"]  # the well-formed part is kept


def test_decoder_gives_up_on_a_header_that_never_ends(encoding):
    words = "word " * (MAX_HEADER_TOKENS + 5)
    decoder, events = decode_all(encoding, "<|channel|>" + words)
    errors = [e for e in events if isinstance(e, FormatError)]
    assert len(errors) == 1 and "header longer than" in errors[0].error
    raw = "".join(e.text for e in events if isinstance(e, RawText)) + "".join(e.text for e in decoder.finish())
    assert raw == "<|channel|>" + words and decoder.messages == []


def test_text_stream_never_splits_a_character(encoding, encoding_dir):
    single_bytes = {}  # the byte-level tokens, read from the vocabulary file
    for line in (encoding_dir / "o200k_base.tiktoken").read_text().splitlines():
        token, rank = line.split()
        if len(base64.b64decode(token)) == 1:
            single_bytes[base64.b64decode(token)] = int(rank)
    smile = [single_bytes[bytes([b])] for b in "🙂".encode()]  # 4 tokens for one character
    stream = TextStream(encoding)
    pieces = [stream.feed(t) for t in encoding.encode("ok ") + smile + encoding.encode(" done")]
    assert "".join(pieces) + stream.flush() == "ok 🙂 done"
    assert not any("\ufffd" in piece for piece in pieces)
    invalid = TextStream(encoding)  # bytes that never form a character are not held forever
    assert "".join(invalid.feed(single_bytes[b"\xff"]) for _ in range(4)) == "\ufffd" * 4


def test_tool_result_message_answers_the_call(encoding):
    _, events = decode_all(encoding, "<|channel|>analysis to=python code<|message|>print(1)<|call|>")
    call = next(e.message for e in events if isinstance(e, MessageDone))
    result = tool_result_message(call, "1")
    text = encoding.decode(render_prompt(encoding, header_messages(PromptConfig()) + [user_message("x"), call, result]))
    assert text.endswith("<|start|>python to=assistant<|channel|>analysis<|message|>1<|end|><|start|>assistant")
