"""Helpers for the HTTP server's tests: a scripted model and a live uvicorn on 127.0.0.1.

The scripted model stands in for the engine: it answers each prompt with harmony text
(reasoning, an answer, a function call) tokenized by the real encoding, records the prompts
and sampling it was given, and notes how far each generation got before it was closed,
so tests see exactly what the server sent to "the model" and whether it stopped it.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass

import openai
import uvicorn

from tritonllm.serve import Backend, ServerConfig, create_app

HOST = "127.0.0.1"


def final(text: str) -> str:
    return f"<|channel|>final<|message|>{text}<|return|>"


def analysis_then_final(thought: str, answer: str) -> str:
    return f"<|channel|>analysis<|message|>{thought}<|end|><|start|>assistant" + final(answer)


def function_call(name: str, arguments: str) -> str:
    return f"<|channel|>commentary to=functions.{name} <|constrain|>json<|message|>{arguments}<|call|>"


def weather_model(prompt: str) -> str:
    """Reasons, calls get_weather for the user's city, then answers from the function's result."""
    marker = "<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>"
    if marker in prompt:
        return final(f"It is {prompt.rsplit(marker, 1)[1].split('<|end|>')[0]}.")
    return ("<|channel|>analysis<|message|>Need weather.<|end|><|start|>assistant"
            + function_call("get_weather", json.dumps({"city": last_user(prompt)})))


def last_user(prompt: str) -> str:
    """The text of the prompt's last user message."""
    return re.findall(r"<\|start\|>user<\|message\|>(.*?)<\|end\|>", prompt, re.DOTALL)[-1]


def wait_for(condition, timeout: float = 10.0) -> bool:
    """Poll `condition()` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@dataclass
class Run:
    """One generation of the script: how many tokens it handed out of how many."""

    planned: int
    given: int = 0
    closed: bool = False  # the server closed the token source (at a stop token, the budget or a cancel)


class Script:
    """A scripted model. `reply(prompt_text)` gives the harmony text to answer with;
    `delay` seconds pass before each token (a slow model, for streaming and cancel tests)."""

    def __init__(self, encoding, reply, delay: float = 0.0):
        self.encoding, self.reply, self.delay = encoding, reply, delay
        self.prompts: list[str] = []
        self.samplings = []
        self.runs: list[Run] = []
        self.lock = threading.Lock()

    def factory(self, sampling):
        """The backend's SourceFactory."""
        self.samplings.append(sampling)
        return self.source

    def source(self, prompt: list[int], stop: list[int]):
        text = self.encoding.decode(prompt)
        tokens = self.encoding.encode(self.reply(text), allowed_special="all")
        run = Run(len(tokens))
        with self.lock:
            self.prompts.append(text)
            self.runs.append(run)
        try:
            for token in tokens:
                if self.delay:
                    time.sleep(self.delay)
                run.given += 1
                yield token
        finally:
            run.closed = True


class LiveServer:
    """uvicorn serving `create_app(...)` on 127.0.0.1, an OS-chosen port, in a thread."""

    def __init__(self, backend: Backend, config: ServerConfig):
        self.config = config
        self.backend = backend
        app = create_app(backend, config)
        self.server = uvicorn.Server(uvicorn.Config(app, host=HOST, port=0, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{HOST}:{port}"

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.backend.ready:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the model did not load: {self.backend.load_error}")
            time.sleep(0.01)

    def client(self, api_key: str = "none", **kwargs):
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, timeout=60, **kwargs)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
