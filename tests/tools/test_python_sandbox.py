"""Tests for the python tool: real subprocesses, real limits, real kills."""

import os
import tempfile
import time
from pathlib import Path

import pytest

from tritonllm.tools.python_sandbox import PythonTool

TIMEOUT_S = 2.0


@pytest.fixture
def tool() -> PythonTool:
    return PythonTool(timeout_s=TIMEOUT_S, memory_mb=256, max_output_chars=2000)


def is_gone(pid: int, grace_s: float = 1.0) -> bool:
    """True once ``pid`` no longer runs (a zombie counts as gone: our init may not reap).

    A killed process closes its files (ending the output the tool waits for)
    a moment before it turns into a zombie, hence the short grace.
    """
    deadline = time.monotonic() + grace_s
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def wait_for_pid_file(path: Path) -> str:
    """Sandbox code: block until the child has written its pid to ``path``."""
    return (
        "import os, time\n"
        f"while not os.path.exists({str(path)!r}):\n"
        "    time.sleep(0.01)\n"
        "print('child started')\n"
    )


def test_prints_output_and_final_expression(tool):
    out = tool.run("import math\nprint('hello', math.sqrt(16))\n6 * 7\n")
    assert out == "hello 4.0\n42"


def test_call_runs_code_text(tool):
    assert tool.call("print('from call')") == "from call"
    assert "stateless" in tool.description and "2 seconds" in tool.description


def test_exception_shows_traceback(tool):
    out = tool.run("def f():\n    raise ValueError('bad value')\nf()\n")
    assert "Traceback (most recent call last)" in out
    assert 'File "main.py", line 3' in out
    assert "ValueError: bad value" in out
    assert out.endswith("[exit code 1]")


def test_syntax_error_is_reported(tool):
    out = tool.run("print('unclosed'\n")
    assert "SyntaxError" in out and "[exit code 1]" in out


def test_infinite_loop_is_killed_at_timeout(tool):
    start = time.monotonic()
    out = tool.run("print('started')\nwhile True:\n    pass\n")
    elapsed = time.monotonic() - start
    assert TIMEOUT_S <= elapsed < TIMEOUT_S + 2
    assert out.startswith("started\n")
    assert "[timed out after 2 s" in out


def test_background_child_is_killed_when_script_exits(tool, tmp_path):
    """A Popen child that would sleep for a minute dies when the script ends."""
    pid_file = tmp_path / "child.pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    out = tool.run(
        "import subprocess, sys\n"
        f"subprocess.Popen([sys.executable, '-c', {child!r}])\n"
        + wait_for_pid_file(pid_file)
    )
    assert out == "child started"
    assert is_gone(int(pid_file.read_text()))


def test_forked_child_is_killed_at_timeout(tool, tmp_path):
    """Both the looping script and its forked sleeper die at the timeout."""
    pid_file = tmp_path / "child.pid"
    out = tool.run(
        "import os, time\n"
        "if os.fork() == 0:\n"
        f"    open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "    time.sleep(60)\n"
        "    os._exit(0)\n"
        + wait_for_pid_file(pid_file)
        + "while True:\n"
        "    pass\n"
    )
    assert out.startswith("child started\n") and "[timed out" in out
    assert is_gone(int(pid_file.read_text()))


def test_memory_bomb_fails_cleanly(tool):
    out = tool.run("block = bytearray(4 * 1024**3)\nprint('allocated')\n")
    assert "allocated" not in out
    assert "MemoryError" in out
    assert "[out of memory: the limit is 256 MB]" in out


def test_parent_secrets_are_not_visible(tool, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-value")
    out = tool.run(
        "import os, subprocess\n"
        "print(sorted(os.environ))\n"
        "print(open('/proc/self/environ').read())\n"
        "print(subprocess.run(['env'], capture_output=True, text=True).stdout)\n"
    )
    assert "OPENAI_API_KEY" not in out and "sk-test-secret-value" not in out
    assert "HOME" in out


def test_output_flood_is_truncated(tool):
    out = tool.run(
        "import sys\n"
        "for i in range(200_000):\n"
        "    sys.stdout.write('x' * 99 + '\\n')\n"
        "print('END')\n"
    )
    assert "[output truncated: " in out
    assert len(out) < 2000 + 200
    assert out.rstrip().endswith("END")  # the tail is kept, not just the head


def test_file_size_is_limited(tool):
    out = tool.run("open('big.bin', 'wb').write(b'0' * (100 << 20))\n")
    assert "File too large" in out


def test_each_run_gets_a_fresh_temporary_cwd_that_is_removed(tool):
    code = (
        "import os\n"
        "print(os.getcwd())\n"
        "print(os.environ['HOME'] == os.getcwd())\n"
        "print(sorted(f for f in os.listdir('.') if f != 'main.py'))\n"
        "with open('left_behind.txt', 'w') as f:\n"
        "    f.write('x')\n"
    )
    first = tool.run(code).splitlines()
    second = tool.run(code).splitlines()
    assert first[1:] == second[1:] == ["True", "[]"]  # no file from the first run
    assert first[0] != second[0]
    for cwd in (first[0], second[0]):
        assert Path(cwd).parent == Path(tempfile.gettempdir())
        assert Path(cwd) != Path(os.getcwd())
        assert not os.path.exists(cwd)


def test_interrupt_kills_the_script(tmp_path, monkeypatch):
    """Ctrl-C in the chat while the tool runs must not leave the script running."""
    import os
    import time

    from tritonllm.tools import python_sandbox

    pid_file = tmp_path / "pid"
    code = f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)\n"
    real_collect = python_sandbox.PythonTool._collect

    def interrupted(proc, selector, output, deadline):
        while not pid_file.exists():
            time.sleep(0.05)
        raise KeyboardInterrupt

    monkeypatch.setattr(python_sandbox.PythonTool, "_collect", staticmethod(interrupted))
    with pytest.raises(KeyboardInterrupt):
        python_sandbox.PythonTool(timeout_s=30).run(code)
    monkeypatch.setattr(python_sandbox.PythonTool, "_collect", real_collect)
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        if open(f"/proc/{pid}/stat").read().split()[2] == "Z":
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"script process {pid} still running after the interrupt")
