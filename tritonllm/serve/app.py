"""The HTTP application: OpenAI's Responses and Chat Completions APIs over one engine.

`create_app(backend, config)` wires the routes to the backend (which owns the model) and
the in-memory response store. A generation request is validated and its prompt rendered
first (4xx for anything wrong, before any token is spent), then it takes a place in the
backend (429 past the queue bound, 503 while the model loads), then it streams or waits.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from datetime import date

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tritonllm.conversation import Tools
from tritonllm.harmony import PromptConfig, header_messages
from tritonllm.serve import chat_completions, errors, responses
from tritonllm.serve.backend import Backend, Busy, GenerationError, NotReady, Sampling
from tritonllm.serve.chat_completions import ChatRequest, ChatRun
from tritonllm.serve.config import ServerConfig
from tritonllm.serve.errors import APIError
from tritonllm.serve.generation import Turn, new_id
from tritonllm.serve.middleware import Guard
from tritonllm.serve.response_events import ResponseRun
from tritonllm.serve.responses import ResponsesRequest
from tritonllm.serve.schemas import check_model
from tritonllm.serve.sse import EventStream, until_disconnect
from tritonllm.serve.store import ResponseStore


def create_app(backend: Backend, config: ServerConfig) -> FastAPI:
    store = ResponseStore(config.max_stored_responses)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await backend.start()
        try:
            yield
        finally:
            await backend.stop()

    app = FastAPI(title="TritonLLM", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    errors.install(app)
    app.add_middleware(Guard, api_key=config.api_key)
    model_card = {"id": config.model_name, "object": "model", "created": 0, "owned_by": "tritonllm"}

    @app.get("/health")
    async def health():
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready")
    async def ready():
        """Readiness: the model is loaded and requests are served."""
        if not backend.ready:
            raise _not_ready(backend.load_error)
        return {"status": "ready", "model": config.model_name}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card]}

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str):
        check_model(model_id, config.model_name)
        return model_card

    @app.get("/v1/responses/{response_id}")
    async def get_response(response_id: str):
        entry = store.get(response_id)
        if entry is None:
            raise APIError(404, f"No response with id '{response_id}' is stored.", "response_id", "not_found")
        return entry.response

    @app.post("/v1/responses")
    async def create_response(body: ResponsesRequest, request: Request):
        check_model(body.model, config.model_name)
        previous = None
        if body.previous_response_id is not None:
            previous = store.get(body.previous_response_id)
            if previous is None:
                raise APIError(
                    400, f"Previous response with id '{body.previous_response_id}' not found.",
                    "previous_response_id", "previous_response_not_found",
                )
        enabled = responses.builtin_tools(body, set(config.builtin_tools)) if body.tool_choice == "auto" else set()
        tools = config.tools(enabled)
        effort = (body.reasoning.effort if body.reasoning else None) or config.reasoning_effort
        start = previous.start_date if previous else date.today().isoformat()
        prompt = responses.prompt_config(body, effort, start, tools.builtin())
        history, call_names = responses.conversation(body, previous)
        turn = _turn(prompt, history, body.temperature, body.top_p, None, body.max_output_tokens, tools, "input")
        run = ResponseRun(body, turn, config.model_name, effort, store, call_names, start, new_id("resp"))
        return await _serve(request, turn, run, body.stream)

    @app.post("/v1/chat/completions")
    async def create_chat_completion(body: ChatRequest, request: Request):
        check_model(body.model, config.model_name)
        prompt = chat_completions.prompt_config(body, config.reasoning_effort, date.today().isoformat())
        history = chat_completions.conversation(body)
        max_tokens = body.max_completion_tokens or body.max_tokens
        turn = _turn(prompt, history, body.temperature, body.top_p, body.seed, max_tokens, Tools(), "messages")
        run = ChatRun(body, turn, config.model_name, new_id("chatcmpl", "-"))
        return await _serve(request, turn, run, body.stream)

    def _turn(prompt: PromptConfig, history, temperature, top_p, seed, max_tokens, tools, input_param) -> Turn:
        sampling = Sampling(1.0 if temperature is None else temperature, 1.0 if top_p is None else top_p, seed)
        return Turn(backend, config.encoding, config.context_length, header_messages(prompt), history, sampling,
                    max_tokens, tools, input_param)

    async def _serve(request: Request, turn: Turn, run: ResponseRun | ChatRun, stream: bool):
        try:
            ticket = backend.admit()
        except NotReady as e:
            raise _not_ready(e.error) from None
        except Busy:
            raise APIError(
                429, f"The server is busy ({backend.admitted} requests running or waiting); retry shortly.",
                code="rate_limit_exceeded", headers={"Retry-After": str(config.retry_after_s)},
            ) from None
        request.state.turn = turn  # for the access log
        if stream:
            return EventStream(run.stream(), ticket.release)
        try:
            return JSONResponse(await until_disconnect(request, run.collect()))
        except GenerationError as e:
            turn.finish = "error"
            raise APIError(500, str(e), code="server_error") from None
        finally:
            ticket.release()

    def _not_ready(load_error: str | None) -> APIError:
        if load_error:
            return APIError(503, load_error, code="model_load_failed")
        return APIError(503, "The model is still loading; retry shortly.", code="model_not_ready",
                        headers={"Retry-After": str(config.retry_after_s)})

    return app
