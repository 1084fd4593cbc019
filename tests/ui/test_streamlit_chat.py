"""streamlit_chat.py in a real browser (headless Chromium) over the real server on a tiny model.

Needs Debian's chromium and Playwright's Python package; Playwright's own browsers are not
used, so `playwright install` is never needed:

    apt-get install -y chromium
    pip install -e ".[test,server,ui]" playwright
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest_plugins = ["tests.conftest_harmony"]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
# The machine has no network: keep Chromium from reaching for it.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = ROOT / "test-artifacts" / "streamlit_chat.png"
MESSAGES = '[data-testid="stChatMessage"]'
ALERTS = '[data-testid="stAlert"]'
FINISHED = re.compile(r"\d+ tokens")  # the line under an answer once it has come in whole
BUSY = re.compile(r"The server is busy \(HTTP 429\): please retry in \d+ s\.")


def free_port() -> int:
    """A loopback port nobody listens on (the OS's pick, closed again)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """Starts `python args...` in the repository root, its output going to `log`."""
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_until_up(proc: subprocess.Popen, url: str, log: Path, timeout: float) -> None:
    """Polls `url` until it answers 200; fails with the process's output if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args} exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {timeout:.0f} s:\n{log.read_text()}")


def stop(proc: subprocess.Popen) -> None:
    """Ends a process this test started."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def server_port():
    """Where the real server listens once `server` has started it."""
    return free_port()


@pytest.fixture(scope="module")
def server(tmp_path_factory, encoding_dir, server_port):
    """The real `python -m tritonllm.serve` on a random tiny checkpoint, on the CPU."""
    from tritonllm.model.config import preset
    from tritonllm.model.synthetic import write_checkpoint

    folder = tmp_path_factory.mktemp("serve")
    checkpoint = write_checkpoint(preset("tiny"), "original", 0, folder / "tiny")
    env = {**os.environ, "TIKTOKEN_ENCODINGS_BASE": str(encoding_dir)}
    args = ["-m", "tritonllm.serve", str(checkpoint), "--device", "cpu", "--host", "127.0.0.1"]
    args += ["--port", str(server_port), "--context", "512", "--max-queue", "0"]  # a second request: 429
    log = folder / "server.log"
    proc = start(args, log, env)
    try:
        wait_until_up(proc, f"http://127.0.0.1:{server_port}/ready", log, timeout=120)
        yield
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, server_port):
    """`streamlit run streamlit_chat.py`, its default server URL set to the real server."""
    folder = tmp_path_factory.mktemp("streamlit")
    port = free_port()
    env = {**os.environ, "TRITONLLM_SERVER_URL": f"http://127.0.0.1:{server_port}/v1"}
    args = ["-m", "streamlit", "run", "streamlit_chat.py", "--server.headless", "true"]
    args += ["--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false"]
    log = folder / "streamlit.log"
    proc = start(args, log, env)
    try:
        wait_until_up(proc, f"http://127.0.0.1:{port}/_stcore/health", log, timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium driven by Playwright."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is missing: pip install playwright (its browsers are not needed)")
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, app_url):
    """A fresh tab on the chat page, once the page has drawn its input box."""
    tab = browser.new_page(viewport={"width": 1280, "height": 800})
    tab.goto(app_url)
    tab.get_by_placeholder("Message gpt-oss").wait_for(timeout=30_000)
    yield tab
    tab.close()


def send(page, text: str) -> None:
    """Types `text` into the chat box and sends it."""
    box = page.get_by_placeholder("Message gpt-oss")
    box.fill(text)
    box.press("Enter")


def set_max_tokens(page, count: int) -> None:
    """Sets the sidebar's max tokens (the tiny model takes seconds a token on the CPU)."""
    field = page.get_by_label("Max tokens")
    field.fill(str(count))
    field.press("Enter")


def answers(page) -> list[str]:
    """The text of each assistant message on the page."""
    return page.get_by_role("group", name="Chat message from assistant").all_inner_texts()


def test_answers_stream_in_and_the_conversation_goes_on(server, page):
    set_max_tokens(page, 3)
    page.get_by_text("low", exact=True).click()
    send(page, "Hello")
    page.get_by_text("Waiting for the model…").wait_for(timeout=30_000)  # drawn before the first event
    page.get_by_text(FINISHED).wait_for(timeout=120_000)
    send(page, "And then?")  # continues through previous_response_id
    page.get_by_text(FINISHED).nth(1).wait_for(timeout=120_000)
    footer = "3 tokens, cut off (max_output_tokens)"
    assert page.locator(MESSAGES).count() == 4 and page.locator(ALERTS).count() == 0
    for answer in answers(page):  # the random model's tokens, passed on as text by the server
        assert footer in answer and answer.replace(footer, "").strip() not in ("", "(no answer text)")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))
    page.get_by_role("button", name="New conversation").click()
    page.locator(MESSAGES).first.wait_for(state="detached", timeout=30_000)


def test_busy_server_asks_to_retry(server, server_port, page):
    import openai

    client = openai.OpenAI(base_url=f"http://127.0.0.1:{server_port}/v1", api_key="none", max_retries=0)
    holder = client.responses.create(input="Hold on", max_output_tokens=1, stream=True)  # admitted: now busy
    try:
        set_max_tokens(page, 3)
        send(page, "Are you free?")
        page.get_by_text(BUSY).wait_for(timeout=30_000)
    finally:
        for _ in holder:  # let it finish, freeing the server
            pass


def test_tools_are_sent_as_the_servers_builtin_tools(server, page):
    set_max_tokens(page, 3)
    page.get_by_text("Browser tool").click()
    page.get_by_text("Python tool").click()
    send(page, "Search the web")
    # This server runs without -b/-p: it names the tool it lacks, so it did read the tool specs.
    page.get_by_text("The tool 'web_search_preview' is not available").wait_for(timeout=30_000)


def test_server_down_is_reported(page):
    url = page.get_by_label("Server URL")
    url.fill(f"http://127.0.0.1:{free_port()}/v1")
    url.press("Enter")
    send(page, "Anyone there?")
    alert = page.get_by_text("Cannot reach the server")
    alert.wait_for(timeout=30_000)
    assert "python -m tritonllm.serve" in alert.inner_text()


# A scripted model stands in where the CPU interpreter is too slow for a tool-using exchange:
# the real server (in this process), the real python tool, streamlit and Chromium.
THOUGHT = "The user wants 6 times 7; I will compute it with python."
ANSWER = "Six times seven is 42, computed by the python tool just now, as you can see above."


def _scripted_reply(prompt: str) -> str:
    from tests.serve.helpers import analysis_then_final

    if prompt.count("<|start|>user") > 1:  # the second turn
        return analysis_then_final("They thank me.", "You are welcome: it was 42.")
    if "<|start|>python to=assistant" in prompt:  # the tool's result is in: answer
        return analysis_then_final("The tool printed 42.", ANSWER)
    return f"<|channel|>analysis<|message|>{THOUGHT}<|end|><|start|>assistant<|channel|>analysis to=python code<|message|>print(6 * 7)<|call|>"


@pytest.fixture(scope="module")
def scripted_server(encoding):
    from tests.serve.helpers import LiveServer, Script
    from tritonllm.serve import Backend, ServerConfig
    from tritonllm.tools.python_sandbox import PythonTool

    script = Script(encoding, _scripted_reply, delay=0.15)  # ~7 tokens a second: visibly streamed
    server = LiveServer(Backend(lambda: script.factory), ServerConfig(
        encoding=encoding, model_name="scripted", builtin_tools={"python": PythonTool}))
    server.start()
    server.wait_ready()
    yield server, script
    server.stop()


@pytest.fixture(scope="module")
def scripted_app_url(tmp_path_factory, scripted_server):
    server, _ = scripted_server
    folder = tmp_path_factory.mktemp("streamlit-scripted")
    port = free_port()
    env = {**os.environ, "TRITONLLM_SERVER_URL": f"{server.url}/v1"}
    args = ["-m", "streamlit", "run", "streamlit_chat.py", "--server.headless", "true"]
    args += ["--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false"]
    proc = start(args, folder / "streamlit.log", env)
    try:
        wait_until_up(proc, f"http://127.0.0.1:{port}/_stcore/health", folder / "streamlit.log", timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def test_a_streamed_multi_turn_tool_using_conversation(browser, scripted_server, scripted_app_url):
    _, script = scripted_server
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(scripted_app_url)
        page.get_by_placeholder("Message gpt-oss").wait_for(timeout=30_000)
        page.get_by_text("Python tool").click()
        send(page, "What is 6*7?")
        # Streamed: the answer's first words are on the page before its last ones have come.
        page.get_by_text("Six times seven", exact=False).wait_for(timeout=60_000)
        assert "as you can see above" not in answers(page)[-1]
        page.get_by_text(FINISHED).wait_for(timeout=60_000)
        assert ANSWER in answers(page)[-1]
        # The reasoning section (collapsed once the answer is in) holds the thought and the tool call.
        page.get_by_text("print(6 * 7)").first.wait_for(state="attached", timeout=10_000)
        assert THOUGHT in page.content()
        send(page, "Thanks!")  # the second turn continues the first (previous_response_id)
        page.get_by_text("You are welcome: it was 42.").wait_for(timeout=60_000)
        assert ANSWER in script.prompts[-1] and "What is 6*7?" in script.prompts[-1]
        assert "<|start|>python to=assistant" in script.prompts[1]  # the tool's output went back to the model
        assert "42" in script.prompts[1].split("<|start|>python to=assistant")[1]
        assert page.locator(ALERTS).count() == 0
        page.screenshot(path=str(SCREENSHOT.with_name("streamlit_chat_tools.png")))
    finally:
        page.close()
