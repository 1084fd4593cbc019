"""An OpenAI-compatible HTTP server for gpt-oss on TritonLLM (`python -m tritonllm.serve`).

Serves the Responses API (`/v1/responses`) and Chat Completions (`/v1/chat/completions`),
streaming or not, over one engine that generates for one request at a time:

* app.py: the routes; middleware.py: API key and access log; errors.py: OpenAI's error shape;
* config.py: the server's settings; backend.py: the worker that owns the model and runs
  queued generations in order;
* generation.py: one answer, harmony tokens decoded into output items, builtin tools run;
* responses.py / response_events.py and chat_completions.py (with stop_text.py): each API's
  requests and output; schemas.py: what their request models share;
* store.py: responses kept for `previous_response_id`; sse.py: streaming and disconnects.

Nothing here imports triton, so `__main__` can still turn on the CPU interpreter.
"""

from tritonllm.serve.app import create_app
from tritonllm.serve.backend import Backend, Sampling
from tritonllm.serve.config import ServerConfig

__all__ = ["Backend", "Sampling", "ServerConfig", "create_app"]
