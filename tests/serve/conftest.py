"""Fixtures for the HTTP server's tests (helpers.py has the scripted model and the live server).

They need the server's extra (`pip install -e ".[server]"`, which .ci/run installs); without
it they fail at import rather than being skipped.
"""

import pytest

from tests.serve.helpers import LiveServer, Script  # noqa: E402
from tritonllm.serve import Backend, ServerConfig  # noqa: E402


@pytest.fixture
def serve(encoding):
    """serve(script_or_factory_loader, max_queue=..., **ServerConfig fields) -> a started LiveServer."""
    started: list[LiveServer] = []

    def start(script: Script | None = None, *, load=None, max_queue: int = 64, **config) -> LiveServer:
        config.setdefault("model_name", "tiny")
        config.setdefault("context_length", 4096)
        backend = Backend(load or (lambda: script.factory), max_queue)
        server = LiveServer(backend, ServerConfig(encoding=encoding, **config))
        server.start()
        started.append(server)
        if load is None:
            server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()
