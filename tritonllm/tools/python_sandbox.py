"""The ``python`` tool: run model-written code in a locked-down subprocess.

Like gpt-oss's stateless python tool, each call runs the code as a script in
a brand-new interpreter and returns what it printed.  Safety measures:

* a fresh temporary directory as cwd, HOME and TMPDIR, removed afterwards;
* a minimal environment built from scratch, so no variable of the parent
  (API keys, tokens) is visible, and ``python -I`` (isolated mode: no
  ``PYTHON*`` variables, no user site-packages, no script dir on sys.path);
* resource limits on address space (memory), process count, file size and
  core dumps;
* a wall-clock limit enforced by the parent, which kills the whole process
  group (the child runs in its own session), so background children and
  grandchildren die with it; leftovers of a run that finished are killed too;
* output read incrementally and capped, so a process printing gigabytes
  cannot exhaust the parent's memory.

Limits of this design: the code runs as the same OS user as the engine, with
that user's file-system and network access, and it can read the *initial*
environment of that user's other processes through /proc/<pid>/environ.  As
root it could also raise its own resource limits (and RLIMIT_NPROC does not
apply to root).  A process that calls ``setsid()`` leaves the process group
and escapes the kill.  For untrusted multi-tenant use, run the engine as a
dedicated user or in a container.

The resource limits are set by a small bootstrap at the start of the child
rather than in a ``preexec_fn``: ``preexec_fn`` is documented as unsafe in a
multi-threaded parent such as the inference engine.
"""

from __future__ import annotations

import logging
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

logger = logging.getLogger(__name__)

MAX_PROCESSES = 512  # RLIMIT_NPROC: counts all the user's processes; bounds a fork bomb
MAX_FILE_BYTES = 64 << 20  # RLIMIT_FSIZE: largest file the code may write
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
READ_CHUNK = 1 << 16
POLL_S = 0.05  # how often the parent checks whether the child has exited
DRAIN_GRACE_S = 1.0  # how long to wait for the pipe to close after the kill
SCRIPT_NAME = "main.py"

# Runs in the child before the model's code: applies the limits given in
# argv, then runs main.py as __main__, printing the value of a final bare
# expression like the REPL does.  Tracebacks are cut to the model's frames.
_BOOTSTRAP = """
import ast, resource, sys, traceback

def _limit(res, value):
    hard = resource.getrlimit(res)[1]
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(res, (value, value))

def _run(script, memory, nproc, fsize):
    _limit(resource.RLIMIT_AS, memory)
    _limit(resource.RLIMIT_NPROC, nproc)
    _limit(resource.RLIMIT_FSIZE, fsize)
    _limit(resource.RLIMIT_CORE, 0)
    sys.argv = [script]
    scope = {"__name__": "__main__", "__file__": script, "__builtins__": __builtins__}
    try:
        with open(script, encoding="utf-8") as f:
            tree = ast.parse(f.read(), script)
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        exec(compile(tree, script, "exec"), scope)
        if last is not None:
            value = eval(compile(ast.Expression(last.value), script, "eval"), scope)
            if value is not None:
                print(repr(value))
    except SystemExit:
        raise
    except BaseException as exc:
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != script:
            tb = tb.tb_next
        traceback.print_exception(type(exc), exc, tb)
        sys.exit(1)

_run(sys.argv[1], *map(int, sys.argv[2:]))
"""


class _CappedOutput:
    """Collects a byte stream but keeps only its first and last ``limit // 2`` bytes."""

    def __init__(self, limit: int):
        self.half = limit // 2
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.half - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        self.tail += chunk
        if len(self.tail) > self.half:
            del self.tail[: len(self.tail) - self.half]

    def text(self) -> str:
        head = self.head.decode("utf-8", errors="replace")
        tail = self.tail.decode("utf-8", errors="replace")
        omitted = self.total - len(self.head) - len(self.tail)
        if not omitted:
            return head + tail
        return (
            f"{head}\n[output truncated: {omitted} bytes omitted from the middle; "
            f"print less, or summarize large results]\n{tail}"
        )


class PythonTool:
    """Runs Python code in a sandboxed subprocess and returns its output."""

    name = "python"

    def __init__(
        self,
        timeout_s: float = 30.0,
        memory_mb: int = 1024,
        max_output_chars: int = 16000,
        python: str = sys.executable,
    ):
        if timeout_s <= 0 or memory_mb <= 0 or max_output_chars <= 0:
            raise ValueError(
                f"PythonTool limits must be positive, got timeout_s={timeout_s}, "
                f"memory_mb={memory_mb}, max_output_chars={max_output_chars}"
            )
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.max_output_chars = max_output_chars
        self.python = python

    @property
    def description(self) -> str:
        """Tool instructions for the model, quoting the configured limits."""
        return (
            "Use this tool to execute Python code. The code runs as a script in a fresh, "
            "stateless sandbox: variables, imports and files do not persist between calls. "
            "Whatever the script prints (stdout and stderr) is returned to you, so use print() "
            "to see results; the value of a final bare expression is printed too. "
            "There is no stdin. "
            f"The run is stopped after {self.timeout_s:g} seconds, memory is limited to "
            f"{self.memory_mb} MB, and output beyond about {self.max_output_chars} characters "
            "is truncated."
        )

    def call(self, args: str) -> str:
        """Chat-loop entry: ``args`` is the code text."""
        return self.run(args)

    def run(self, code: str) -> str:
        """Run ``code`` in a fresh temporary directory and return its output and status."""
        workdir = tempfile.mkdtemp(prefix="tritonllm-python-")
        try:
            Path(workdir, SCRIPT_NAME).write_text(code, encoding="utf-8", errors="replace")
            return self._execute(workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            if os.path.exists(workdir):
                logger.warning("could not remove the python tool's directory %s", workdir)

    def _execute(self, workdir: str) -> str:
        env = {
            "PATH": SAFE_PATH,
            "HOME": workdir,
            "TMPDIR": workdir,
            "LANG": "C.UTF-8",
            # Single-threaded numeric libraries: thread pools would eat into the
            # memory and process limits.
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        # -I ignores PYTHON* variables, so use flags: -B no .pyc files,
        # -u unbuffered (output survives a kill), -X utf8 UTF-8 I/O.
        limits = [self.memory_mb << 20, MAX_PROCESSES, MAX_FILE_BYTES]
        command = [self.python, "-I", "-B", "-u", "-X", "utf8", "-c", _BOOTSTRAP, SCRIPT_NAME]
        command += [str(value) for value in limits]
        logger.debug("python tool: running in %s", workdir)
        started = time.monotonic()
        proc = subprocess.Popen(
            command,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        output = _CappedOutput(self.max_output_chars)
        with proc, selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            try:
                timed_out = self._collect(proc, selector, output, started + self.timeout_s)
            finally:  # also on Ctrl-C in the chat: never leave the script's processes behind
                _kill_group(proc.pid)
            self._drain(proc, selector, output, time.monotonic() + DRAIN_GRACE_S)
            returncode = proc.wait()
        logger.debug(
            "python tool: exit %s, timed out %s, %d output bytes, %.2f s",
            returncode, timed_out, output.total, time.monotonic() - started,
        )
        return self._report(output.text(), returncode, timed_out)

    @staticmethod
    def _collect(proc, selector, output: _CappedOutput, deadline: float) -> bool:
        """Read output while the script runs; return True if ``deadline`` came first.

        Returns once the script has exited, even if a process it started still
        holds the pipe open (the caller then kills the group).  The script is
        waited for without being reaped, so its pid, which is also the
        process-group id, cannot be reused before the group is killed.
        """
        eof = False
        while not _exited(proc.pid):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            if eof:  # the script closed its output but is still running
                time.sleep(min(remaining, POLL_S))
            elif selector.select(min(remaining, POLL_S)):
                chunk = os.read(proc.stdout.fileno(), READ_CHUNK)
                output.add(chunk)
                eof = not chunk
        return False

    @staticmethod
    def _drain(proc, selector, output: _CappedOutput, deadline: float) -> None:
        """After the kill, read what is left until every writer is gone or ``deadline``."""
        while (remaining := deadline - time.monotonic()) > 0:
            if selector.select(remaining):
                chunk = os.read(proc.stdout.fileno(), READ_CHUNK)
                if not chunk:
                    return
                output.add(chunk)
        logger.warning("python tool: output pipe still open after the kill (a process escaped)")

    def _report(self, text: str, returncode: int, timed_out: bool) -> str:
        """Combine the output with a note on how the run ended."""
        notes = []
        if timed_out:
            notes.append(
                f"[timed out after {self.timeout_s:g} s: the process and its children were killed]"
            )
        elif returncode < 0:
            notes.append(f"[killed by signal {_signal_name(-returncode)}]")
        elif returncode > 0:
            notes.append(f"[exit code {returncode}]")
        if returncode and not timed_out and "MemoryError" in text:
            notes.append(f"[out of memory: the limit is {self.memory_mb} MB]")
        parts = [text.rstrip("\n")] if text.strip() else []
        return "\n".join(parts + notes) or "[no output]"


def _exited(pid: int) -> bool:
    """True once process ``pid`` has exited, without reaping it."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:  # e.g. a real-time signal without a name
        return str(number)


def _kill_group(pgid: int) -> None:
    """SIGKILL every process left in the group (none is fine)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
