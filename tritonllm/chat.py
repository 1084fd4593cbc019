"""`tritonllm` / `python -m tritonllm.chat`: chat with gpt-oss in the terminal.

The command line edge of the project: parses options, loads the tokenizer, the tools and
the model, then runs the terminal loop (tritonllm.terminal) over a `ChatSession`
(tritonllm.conversation). The token source can be injected (`main(..., token_source=...)`)
so tests can drive the whole loop with scripted model output.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path

from tritonllm.conversation import ChatSession, RawSession, TokenSource, Tools, llm_token_source
from tritonllm.harmony import PromptConfig, load_encoding
from tritonllm.terminal import Printer, line_editing, run_chat

log = logging.getLogger("tritonllm.chat")

PROG = "tritonllm"
HISTORY_FILE = Path("~/.tritonllm_history")

EPILOG = """\
examples:
  tritonllm                                    # gpt-oss-20b, downloaded on first use
  tritonllm 120b -r low --source hf            # gpt-oss-120b from Hugging Face, short reasoning
  tritonllm /models/gpt-oss-20b -b -p -a       # a local checkpoint with browser, python, apply_patch
  tritonllm 20b -a --apply-patch-root ~/proj --developer-message "You edit the project in ~/proj."
  tritonllm 20b --raw --max-tokens 64          # plain text completion, no chat format
  tritonllm ./tiny-checkpoint --device cpu --max-tokens 3   # tiny test model, Triton interpreter

keys:
  Enter sends a line (arrow keys edit, history is kept in ~/.tritonllm_history);
  Ctrl-C stops the answer being written, Ctrl-D (on an empty line) exits.

conversation:
  Reasoning is shown dimmed after "[thinking]", tool calls after "[tool call NAME]", tool
  output after "[NAME result]", then the answer. A turn stopped with Ctrl-C is dropped from
  the history whole (your message too), as if not asked. An answer cut off by --max-tokens
  or a full context is kept as far as it got. Before each model step the prompt must leave
  room for the answer (--max-tokens, or a quarter of --context when that is not set); if it
  does not, the oldest turns are dropped, with a notice, and the chat goes on. Earlier
  turns' reasoning is left out of later prompts, as harmony prescribes.

environment:
  TIKTOKEN_ENCODINGS_BASE  folder holding o200k_base.tiktoken, for machines without
                           internet (build it with: python tools/make_encoding.py DIR)
  EXA_API_KEY, YDC_API_KEY web search for --browser (Exa or You.com); without one the
                           browser can still open URLs
"""


class _Parser(argparse.ArgumentParser):
    """Reports usage errors on one line (exit 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _temperature(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _top_p(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Chat with gpt-oss (harmony format, reasoning effort, browser/python/apply_patch tools).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "model", nargs="?", default="20b", help="checkpoint folder, or 20b / 120b to download (default: 20b)"
    )
    p.add_argument(
        "-r", "--reasoning", choices=("low", "medium", "high"), default="high", help="reasoning effort (default: high)"
    )
    p.add_argument("--developer-message", metavar="TEXT", help="instructions for the model (the developer message)")
    p.add_argument("-c", "--context", type=_positive_int, default=8192, help="context length in tokens (default: 8192)")
    p.add_argument(
        "--temperature", type=_temperature, default=1.0, help="sampling temperature, 0 = greedy (default: 1.0)"
    )
    p.add_argument("--top-p", type=_top_p, default=1.0, help="nucleus sampling mass (default: 1.0)")
    p.add_argument("--seed", type=int, help="sampling seed, for repeatable answers (default: random)")
    p.add_argument(
        "--max-tokens", type=_positive_int, help="most tokens per answer, tool calls included (default: the context)"
    )
    p.add_argument(
        "--raw", action="store_true", help="plain completion of the typed text: no chat format, history or tools"
    )
    p.add_argument("-b", "--browser", action="store_true", help="let the model search the web and open pages")
    p.add_argument(
        "--show-browser-results", action="store_true", help="print the pages the browser returns (default: their title)"
    )
    p.add_argument(
        "-p", "--python", action="store_true", help="let the model run Python code in a sandboxed subprocess"
    )
    p.add_argument("-a", "--apply-patch", action="store_true", help="let the model edit files under --apply-patch-root")
    p.add_argument(
        "--apply-patch-root", metavar="DIR", default=".", help="folder apply_patch may edit (default: the current one)"
    )
    p.add_argument(
        "--source",
        choices=("modelscope", "hf"),
        default="modelscope",
        help="where 20b / 120b are downloaded from (default: modelscope)",
    )
    p.add_argument("--cache-dir", metavar="DIR", help="where downloaded checkpoints are kept")
    p.add_argument("--offline", action="store_true", help="only use an already downloaded checkpoint")
    p.add_argument(
        "--device", default="cuda", help="cuda (default), or cpu to run Triton's interpreter (tiny models only)"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log details (and tracebacks) to stderr")
    return p


def main(
    argv: list[str] | None = None,
    token_source: TokenSource | None = None,
    read_line: Callable[[str], str] | None = None,
) -> int:
    """Run the chat CLI; `token_source` replaces the model and `read_line` the keyboard (tests)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return _run(args, argv, token_source, read_line)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except Exception as e:
        log.debug("fatal error", exc_info=True)
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, argv: list[str], token_source: TokenSource | None, read_line) -> int:
    if args.raw and (args.browser or args.python or args.apply_patch):
        raise ValueError("--raw has no chat format, so it cannot be combined with tools (-b, -p, -a)")
    if token_source is None and args.device.startswith("cpu"):
        _use_interpreter()
    encoding = load_encoding()
    tools = _tools(args)
    if token_source is None:
        llm = _load_model(args)
        token_source = llm_token_source(llm, args.temperature, args.top_p, args.seed)
    if args.raw:
        session = RawSession(encoding, token_source, args.context, args.max_tokens)
    else:
        config = PromptConfig(
            reasoning_effort=args.reasoning,
            conversation_start_date=date.today().isoformat(),
            instructions=args.developer_message,
            builtin_tools=tools.builtin(),
            function_tools=tools.functions(),
        )
        session = ChatSession(encoding, token_source, config, args.context, args.max_tokens, tools)
    printer = Printer(sys.stdout, sys.stdout.isatty(), args.show_browser_results)
    mode = "raw completion" if args.raw else f"reasoning {args.reasoning}, tools: {', '.join(tools.names()) or 'none'}"
    print(f"{PROG}: {args.model} ({mode}). Ctrl-C stops an answer, Ctrl-D exits.", flush=True)
    if read_line is not None or not sys.stdin.isatty():
        return run_chat(session, read_line or input, printer)
    with line_editing(HISTORY_FILE.expanduser()):
        return run_chat(session, input, printer)


def _use_interpreter() -> None:
    """--device cpu needs Triton's interpreter, which Triton turns on (for its own library
    functions too) only when TRITON_INTERPRET=1 is set before triton is first imported.
    Nothing this command has imported so far imports triton, so set it here."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        return
    if "triton" in sys.modules:
        raise RuntimeError("--device cpu: triton was imported before the interpreter could be enabled; "
                           "set TRITON_INTERPRET=1 in the environment")
    os.environ["TRITON_INTERPRET"] = "1"


def _tools(args: argparse.Namespace) -> Tools:
    from tritonllm.tools.apply_patch import ApplyPatchTool
    from tritonllm.tools.browser import BrowserTool, backend_from_keys
    from tritonllm.tools.python_sandbox import PythonTool

    browser = None
    if args.browser:
        browser = BrowserTool(backend_from_keys(os.environ.get("EXA_API_KEY"), os.environ.get("YDC_API_KEY")))
    python = PythonTool() if args.python else None
    apply_patch = ApplyPatchTool(Path(args.apply_patch_root).expanduser()) if args.apply_patch else None
    return Tools(browser=browser, python=python, apply_patch=apply_patch)


def _load_model(args: argparse.Namespace):
    """The LLM for args.model: a checkpoint folder, or 20b / 120b downloaded on first use."""
    from tritonllm.download import resolve_model
    from tritonllm.llm import LLM

    cache_dir = Path(args.cache_dir).expanduser() if args.cache_dir else None
    path = resolve_model(args.model, source=args.source, cache_dir=cache_dir, offline=args.offline, progress=True)
    log.info("loading %s on %s", path, args.device)
    return LLM(path, device=args.device, context_length=args.context)


if __name__ == "__main__":
    sys.exit(main())
