"""The chat CLI (tritonllm.chat) and its conversation loop (tritonllm.conversation).

Most tests replace the model by a scripted token source that writes harmony, so tool calls,
result injection and continuation are checked exactly; the last ones run the real tiny
synthetic model on the CPU (a few tokens: each costs seconds under Triton's interpreter).
"""

import functools
import json
import os
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tritonllm.chat import build_parser, main
from tritonllm.conversation import ChatSession, ContextError, Notice, llm_token_source
from tritonllm.harmony import PromptConfig

pytest_plugins = ["tests.conftest_harmony"]

ROOT = Path(__file__).resolve().parent.parent


class Script:
    """A scripted model: call i answers with replies[i] (harmony text); prompts are recorded.

    A reply given as `Interrupt(text)` writes `text`, then raises KeyboardInterrupt as a
    Ctrl-C during generation would.
    """

    def __init__(self, encoding, *replies):
        self.encoding = encoding
        self.replies = list(replies)
        self.prompts: list[list[int]] = []
        self.stops: list[list[int]] = []

    def __call__(self, prompt, stop):
        self.prompts.append(list(prompt))
        self.stops.append(list(stop))
        reply = self.replies[len(self.prompts) - 1]
        yield from self.encoding.encode(str(reply), allowed_special="all")
        if isinstance(reply, Interrupt):
            raise KeyboardInterrupt

    def prompt_text(self, i: int) -> str:
        return self.encoding.decode(self.prompts[i])


class Interrupt(str):
    pass


class Keyboard:
    """Typed lines for the prompt; KeyboardInterrupt in the list is Ctrl-C there; then Ctrl-D."""

    def __init__(self, *lines):
        self.lines = list(lines)

    def __call__(self, prompt):
        if not self.lines:
            raise EOFError
        line = self.lines.pop(0)
        if line is KeyboardInterrupt:
            raise KeyboardInterrupt
        return line


def chat(capsys, argv, script, *lines):
    rc = main(argv, token_source=script, read_line=Keyboard(*lines))
    out, err = capsys.readouterr()
    return rc, out, err


def final(text):
    return f"<|channel|>final<|message|>{text}<|return|>"


# -- options -------------------------------------------------------------------------------


def test_help_documents_options_examples_and_keys(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    for option in (
        "--reasoning",
        "--developer-message",
        "--context",
        "--temperature",
        "--top-p",
        "--seed",
        "--max-tokens",
        "--raw",
        "--browser",
        "--show-browser-results",
        "--python",
        "--apply-patch",
        "--apply-patch-root",
        "--source",
        "--device",
    ):
        assert option in out
    assert "examples:" in out and "tritonllm 120b -r low" in out
    assert "Ctrl-C" in out and "Ctrl-D" in out and "dropped" in out and "TIKTOKEN_ENCODINGS_BASE" in out


def test_defaults_and_every_option():
    args = build_parser().parse_args([])
    assert (args.model, args.reasoning, args.context, args.temperature, args.top_p) == ("20b", "high", 8192, 1.0, 1.0)
    assert (args.seed, args.max_tokens, args.raw, args.device, args.apply_patch_root) == (
        None,
        None,
        False,
        "cuda",
        ".",
    )
    args = build_parser().parse_args(
        [
            "/m",
            "-r",
            "low",
            "--developer-message",
            "hi",
            "-c",
            "1024",
            "--temperature",
            "0",
            "--top-p",
            "0.9",
            "--seed",
            "7",
            "--max-tokens",
            "50",
            "-b",
            "--show-browser-results",
            "-p",
            "-a",
            "--apply-patch-root",
            "/x",
            "--source",
            "hf",
            "--device",
            "cpu",
        ]
    )
    assert (args.model, args.reasoning, args.developer_message, args.context) == ("/m", "low", "hi", 1024)
    assert (args.temperature, args.top_p, args.seed, args.max_tokens, args.source) == (0.0, 0.9, 7, 50, "hf")
    assert args.browser and args.show_browser_results and args.python and args.apply_patch
    assert (args.apply_patch_root, args.device) == ("/x", "cpu")


@pytest.mark.parametrize(
    "argv",
    [["-r", "extreme"], ["--top-p", "0"], ["-c", "0"], ["--temperature", "-1"], ["--source", "ftp"], ["--bogus"]],
)
def test_usage_errors_are_one_line_and_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and err.startswith("tritonllm: error:")


def test_runtime_errors_are_one_line_and_exit_1(capsys, encoding, tmp_path):
    rc, _, err = chat(capsys, ["-a", "--apply-patch-root", str(tmp_path / "missing")], Script(encoding))
    assert rc == 1 and err.count("\n") == 1 and err.startswith("tritonllm: error:") and "missing" in err
    rc, _, err = chat(capsys, ["--raw", "-p"], Script(encoding))
    assert rc == 1 and "--raw" in err and err.count("\n") == 1


# -- the loop with each tool ----------------------------------------------------------------


def test_python_tool_call_runs_code_and_the_answer_continues(capsys, encoding):
    script = Script(
        encoding,
        "<|channel|>analysis<|message|>Compute it.<|end|>"
        "<|start|>assistant<|channel|>analysis to=python code<|message|>print(6 * 7)<|call|>",
        final("It is 42."),
    )
    rc, out, _ = chat(capsys, ["-p", "-r", "low"], script, "What is 6*7?")
    assert rc == 0 and len(script.prompts) == 2
    first, second = script.prompt_text(0), script.prompt_text(1)
    assert "Reasoning: low" in first and "## python" in first and "stateless" in first
    assert second.startswith(first)  # the tool step only appends: the KV cache is reused
    assert "<|start|>python to=assistant<|channel|>analysis<|message|>42<|end|><|start|>assistant" in second
    assert sorted(encoding.decode([t]) for t in script.stops[0]) == ["<|call|>", "<|return|>"]
    assert "[thinking] Compute it." in out and "[tool call python] print(6 * 7)" in out
    assert "[python result] 42" in out and "It is 42." in out


def test_apply_patch_call_edits_files_and_the_result_is_injected(capsys, encoding, tmp_path):
    (tmp_path / "notes.txt").write_text("alpha\nbeta\n")
    patch = (
        "*** Begin Patch\n*** Update File: notes.txt\n@@\n alpha\n-beta\n+gamma\n"
        "*** Add File: new.txt\n+fresh\n*** End Patch"
    )
    script = Script(
        encoding,
        "<|channel|>commentary to=functions.apply_patch <|constrain|>json<|message|>"
        + json.dumps({"input": patch})
        + "<|call|>",
        final("Edited."),
    )
    rc, out, _ = chat(capsys, ["-a", "--apply-patch-root", str(tmp_path)], script, "Replace beta by gamma")
    assert rc == 0
    assert (tmp_path / "notes.txt").read_text() == "alpha\ngamma\n" and (tmp_path / "new.txt").read_text() == "fresh\n"
    assert "namespace functions {" in script.prompt_text(0) and "type apply_patch" in script.prompt_text(0)
    result = "<|channel|>commentary<|message|>Done!\nM notes.txt\nA new.txt<|end|>"
    assert "<|start|>functions.apply_patch to=assistant" + result in script.prompt_text(1)
    assert "[functions.apply_patch result] Done!" in out and "Edited." in out


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def web_page(tmp_path):
    (tmp_path / "page.html").write_text(
        "<html><head><title>Loopback page</title></head><body><p>The secret word is heliotrope.</p></body></html>"
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/page.html"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("show", [False, True])
def test_browser_call_opens_a_local_page_and_the_answer_continues(capsys, encoding, web_page, show):
    script = Script(
        encoding,
        "<|channel|>analysis to=browser.open code<|message|>" + json.dumps({"id": web_page}) + "<|call|>",
        final("The word is heliotrope."),
    )
    argv = ["-b"] + (["--show-browser-results"] if show else [])
    rc, out, _ = chat(capsys, argv, script, "Which word?")
    assert rc == 0 and "namespace browser {" in script.prompt_text(0)
    second = script.prompt_text(1)
    assert "<|start|>browser.open to=assistant<|channel|>analysis<|message|>[0] Loopback page" in second
    assert "The secret word is heliotrope." in second
    assert "[browser.open result] [0] Loopback page" in out and "The word is heliotrope." in out
    assert ("L0: The secret word" in out) == show


def test_unknown_tool_gets_an_error_the_model_can_read(capsys, encoding):
    script = Script(encoding, "<|channel|>commentary to=functions.rm_rf <|message|>{}<|call|>", final("Sorry."))
    rc, _, _ = chat(capsys, ["-p"], script, "go")
    assert (
        rc == 0
        and "error: there is no tool 'functions.rm_rf'; the available tools are: python" in script.prompt_text(1)
    )


# -- history, interruption, context ----------------------------------------------------------


def test_multi_turn_prompts_share_their_prefix(capsys, encoding):
    script = Script(
        encoding,
        "<|channel|>analysis<|message|>Private thoughts.<|end|><|start|>assistant" + final("Hello!"),
        final("Still here."),
    )
    rc, out, _ = chat(capsys, [], script, "Hi", "And now?")
    first, second = script.prompt_text(0), script.prompt_text(1)
    assert rc == 0 and second.startswith(first)
    assert "Private thoughts." not in second  # harmony drops answered turns' reasoning
    assert "<|channel|>final<|message|>Hello!<|end|><|start|>user<|message|>And now?<|end|>" in second
    assert "Hello!" in out and "Still here." in out


def test_ctrl_c_during_an_answer_drops_the_turn_and_returns_to_the_prompt(capsys, encoding):
    script = Script(encoding, Interrupt("<|channel|>final<|message|>Once upon a"), final("Short answer."))
    rc, out, _ = chat(capsys, [], script, "Tell a long story", "Be brief")
    assert rc == 0 and "Once upon a" in out and "interrupted: this turn was dropped" in out
    assert "Short answer." in out
    second = script.prompt_text(1)
    assert "Tell a long story" not in second and "Once upon a" not in second and "Be brief" in second


def test_ctrl_c_at_the_prompt_continues_and_ctrl_d_exits_0(capsys, encoding):
    script = Script(encoding, final("Yes."))
    rc, out, _ = chat(capsys, [], script, KeyboardInterrupt, "", "Still there?")
    assert rc == 0 and "Yes." in out and len(script.prompts) == 1
    rc, _, _ = chat(capsys, [], Script(encoding))
    assert rc == 0


def test_answer_cut_off_by_max_tokens_is_kept(capsys, encoding):
    script = Script(encoding, final("one two three four five six seven"), final("ok"))
    rc, out, _ = chat(capsys, ["--max-tokens", "6"], script, "Count", "Again")
    assert rc == 0 and "cut off at --max-tokens (6 tokens)" in out
    assert (
        "<|start|>user<|message|>Count<|end|><|start|>assistant<|channel|>final<|message|>one two"
        in script.prompt_text(1)
    )


def test_max_tokens_spent_on_a_tool_call_ends_the_turn(capsys, encoding):
    call = "<|channel|>analysis to=python code<|message|>print(1)<|call|>"
    script = Script(encoding, call, final("never asked"))
    budget = str(len(encoding.encode(call, allowed_special="all")))
    rc, out, _ = chat(capsys, ["-p", "--max-tokens", budget], script, "go")
    assert rc == 0 and len(script.prompts) == 1 and "[python result] 1" in out
    assert f"cut off at --max-tokens ({budget} tokens)" in out


def test_broken_harmony_is_shown_raw_and_the_chat_goes_on(capsys, encoding):
    script = Script(encoding, "<|channel|>final<|message|>fine<|end|>not harmony at all", final("ok"))
    rc, out, _ = chat(capsys, [], script, "a", "b")
    assert rc == 0 and "not valid harmony" in out and "not harmony at all" in out and "ok" in out
    assert "<|channel|>final<|message|>fine<|end|><|start|>user<|message|>b" in script.prompt_text(1)


def test_outgrowing_the_context_drops_the_oldest_turns(encoding):
    config = PromptConfig()
    header = len(ChatSession(encoding, None, config, 10_000).prompt())
    replies = [final(f"answer number {i}") for i in range(6)]
    script = Script(encoding, *replies)
    session = ChatSession(encoding, script, config, context_length=header + 60, max_tokens=12)
    notices = []
    for i in range(6):
        notices += [e.text for e in session.turn(f"question number {i}") if isinstance(e, Notice)]
    assert any("dropped the oldest turn" in n for n in notices)
    last = script.prompt_text(5)
    assert "question number 0" not in last and "question number 5" in last and "answer number 4" in last
    assert all(len(p) + 12 <= header + 60 for p in script.prompts)


def test_a_turn_longer_than_the_context_is_refused_and_the_chat_goes_on(capsys, encoding):
    script = Script(encoding, final("ok"))
    rc, out, _ = chat(capsys, ["-c", "200"], script, "word " * 300, "short")
    assert rc == 0 and "the context holds 200" in out and "ok" in out
    assert "word" not in script.prompt_text(0)
    session = ChatSession(encoding, script, PromptConfig(), 100)
    with pytest.raises(ContextError):
        list(session.turn("word " * 300))
    assert session.history == []


def test_raw_mode_completes_the_typed_text(capsys, encoding):
    script = Script(encoding, " world, in plain text.<|return|>")
    rc, out, _ = chat(capsys, ["--raw"], script, "Hello")
    assert rc == 0 and script.prompts[0] == encoding.encode("Hello")
    assert "world, in plain text.<|return|>" in out


# -- the real tiny model ---------------------------------------------------------------------


def test_real_tiny_model_streams_two_turns(capsys, encoding, tiny_checkpoints):
    from tritonllm import LLM

    llm = LLM(tiny_checkpoints["original"], device="cpu", context_length=256)
    generate = llm_token_source(llm, temperature=1.0, seed=0)
    streamed: list[list[int]] = []

    def source(prompt, stop):
        streamed.append([])
        for token in generate(prompt, stop):
            streamed[-1].append(token)
            yield token

    rc = main(["-r", "low", "--max-tokens", "2", "-c", "256"], token_source=source, read_line=Keyboard("Hi", "Bye"))
    out = capsys.readouterr().out
    assert rc == 0 and [len(s) for s in streamed] == [2, 2]
    # A random model writes no valid harmony: each turn ends cut off or with its raw text.
    assert out.count("cut off at --max-tokens (2 tokens)") + out.count("broke the harmony format") == 2
    assert all(0 <= t < llm.config.vocab_size for s in streamed for t in s)


def test_cli_process_help():
    result = subprocess.run(
        [sys.executable, "-m", "tritonllm.chat", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode == 0 and "usage: tritonllm" in result.stdout and "--reasoning" in result.stdout


def test_cli_process_chats_with_a_tiny_checkpoint_on_cpu(tmp_path, encoding_dir):
    from tritonllm.model.config import preset
    from tritonllm.model.synthetic import write_checkpoint

    checkpoint = write_checkpoint(preset("tiny"), "original", 0, tmp_path / "tiny")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the CLI must turn it on itself
    env["HOME"] = str(tmp_path)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tritonllm.chat",
            str(checkpoint),
            "--device",
            "cpu",
            "--max-tokens",
            "2",
            "-c",
            "256",
            "-r",
            "low",
            "--seed",
            "1",
        ],
        input="Hello\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "tritonllm:" in result.stdout and "Ctrl-D exits" in result.stdout
    assert result.stdout.count(">>> ") == 2  # asked, answered, asked again, then end of input
