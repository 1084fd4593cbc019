"""The chat's terminal side: shows conversation events and runs the read-answer loop.

Kept apart from the option parsing and model loading of tritonllm.chat so that both stay
small; tests drive `run_chat` with scripted input and a scripted model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TextIO

from tritonllm.conversation import ChatSession, ContextError, Notice, RawSession, ToolResult
from tritonllm.harmony import FormatError, MessageDone, MessageStart, RawText, TextDelta

log = logging.getLogger(__name__)

PROMPT = ">>> "
HISTORY_LENGTH = 1000
RESULT_LINES = 20  # lines of a tool result shown on screen (the model always gets all of it)
DIM, RESET = "\033[2m", "\033[0m"


class Printer:
    """Prints session events: reasoning and tool traffic dimmed and labelled, the answer plain."""

    def __init__(self, out: TextIO, color: bool, show_browser_results: bool = False):
        self.out = out
        self.color = color
        self.show_browser_results = show_browser_results
        self.line_start = True

    def show(self, event) -> None:
        match event:
            case MessageStart(channel=channel, recipient=recipient):
                self._break()
                if recipient is not None:
                    self._write(f"[tool call {recipient}] ", dim=True)
                elif channel == "analysis":
                    self._write("[thinking] ", dim=True)
            case TextDelta(channel=channel, recipient=recipient, text=text):
                self._write(text, dim=recipient is not None or channel == "analysis")
            case MessageDone():
                self._break()
            case ToolResult(recipient=recipient, output=output):
                self._break()
                self._write(f"[{recipient} result] {self._shorten(recipient, output)}", dim=True)
                self._break()
            case FormatError(error=error):
                self.notice(f"the model's output is not valid harmony ({error}); showing it raw")
            case RawText(text=text):
                self._write(text)
            case Notice(text=text):
                self.notice(text)

    def notice(self, text: str) -> None:
        self._break()
        self._write(f"[{text}]", dim=True)
        self._break()

    def end_turn(self) -> None:
        self._break()
        self.out.flush()

    def _shorten(self, recipient: str, output: str) -> str:
        lines = output.splitlines() or [""]
        if recipient.startswith("browser.") and not self.show_browser_results:
            return lines[0] + (" (--show-browser-results prints the page)" if len(lines) > 1 else "")
        if len(lines) > RESULT_LINES:
            return "\n".join(lines[:RESULT_LINES] + [f"... ({len(lines) - RESULT_LINES} more lines)"])
        return "\n".join(lines)

    def _write(self, text: str, dim: bool = False) -> None:
        if not text:
            return
        self.out.write(f"{DIM}{text}{RESET}" if dim and self.color else text)
        self.out.flush()
        self.line_start = text.endswith("\n")

    def _break(self) -> None:
        if not self.line_start:
            self._write("\n")


def run_chat(session: ChatSession | RawSession, read_line: Callable[[str], str], printer: Printer) -> int:
    """The read-answer loop; returns the exit code (0 at end of input, Ctrl-D)."""
    while True:
        try:
            text = read_line(PROMPT)
        except EOFError:
            printer.end_turn()
            return 0
        except KeyboardInterrupt:  # at the prompt: a fresh line, as shells do
            printer.out.write("\n")
            continue
        if not text.strip():
            continue
        try:
            with closing(session.turn(text)) as events:  # closing an unfinished turn drops it
                for event in events:
                    printer.show(event)
        except KeyboardInterrupt:
            printer.notice("interrupted: this turn was dropped from the history")
        except ContextError as e:
            printer.notice(str(e))
        printer.end_turn()


@contextmanager
def line_editing(history_file: Path) -> Iterator[None]:
    """Line editing for input() with a history kept in `history_file` across sessions."""
    try:
        import readline
    except ImportError:  # not on every platform; input() still works
        yield
        return
    try:
        readline.read_history_file(history_file)
    except OSError:
        pass  # no history yet
    readline.set_history_length(HISTORY_LENGTH)
    try:
        yield
    finally:
        try:
            readline.write_history_file(history_file)
        except OSError as e:
            log.warning("could not save the input history to %s: %s", history_file, e)
