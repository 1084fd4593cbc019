"""The Responses API's output: the Response object and its streaming events, built from a `Turn`.

Event order and fields follow the types of the official `openai` package
(openai.types.responses), which its stream helpers check: `response.created`,
`response.in_progress`, then per output item `response.output_item.added`, for messages and
reasoning a content part (`response.content_part.added`, text deltas and `.done` events,
`response.content_part.done`), for function calls argument deltas, then
`response.output_item.done`; finally `response.completed` (or `response.incomplete` when
the output limit cut the answer, `response.failed` when the model failed). Every event has
a `sequence_number`. Builtin tool calls appear as `web_search_call` (browser) and
`code_interpreter_call` (python) items.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import aclosing

from tritonllm.serve.backend import GenerationError
from tritonllm.serve.generation import FUNCTION_CALL, MESSAGE, REASONING, TOOL_CALL, Added, Delta, Done, Item, Turn
from tritonllm.serve.responses import ResponsesRequest
from tritonllm.serve.sse import frame
from tritonllm.serve.store import ResponseStore, StoredResponse


class ResponseRun:
    """One `POST /v1/responses` being answered, streamed (`stream()`) or not (`collect()`)."""

    def __init__(self, request: ResponsesRequest, turn: Turn, model: str, effort: str, store: ResponseStore,
                 call_names: dict[str, str], start_date: str, response_id: str):
        self.request, self.turn, self.model, self.effort = request, turn, model, effort
        self.store, self.call_names, self.start_date = store, call_names, start_date
        self.id = response_id
        self.created_at = int(time.time())
        self.sequence = 0
        self.output_index: dict[str, int] = {}  # item id -> its place in `output`

    async def stream(self) -> AsyncIterator[str]:
        """SSE frames of the whole response."""
        for kind in ("response.created", "response.in_progress"):
            yield self._frame(kind, response=self.response("in_progress"))
        try:
            async with aclosing(self.turn.events()) as events:
                async for event in events:
                    for kind, fields in self._item_events(event):
                        yield self._frame(kind, **fields)
        except GenerationError as e:
            self.turn.finish = "error"
            error = {"code": "server_error", "message": str(e)}
            yield self._frame("response.failed", response=self.response("failed", error))
            return
        response = self._finish()
        yield self._frame(f"response.{response['status']}", response=response)

    async def collect(self) -> dict:
        """The finished Response object."""
        async with aclosing(self.turn.events()) as events:
            async for _ in events:
                pass
        return self._finish()

    def response(self, status: str, error: dict | None = None) -> dict:
        request, usage = self.request, self.turn.usage
        done = status in ("completed", "incomplete")
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "model": self.model,
            "output": [item_json(item) for item in self.turn.items if item.id in self.output_index] if done else [],
            "error": error,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": request.instructions,
            "max_output_tokens": request.max_output_tokens,
            "metadata": request.metadata or {},
            "parallel_tool_calls": request.parallel_tool_calls,
            "previous_response_id": request.previous_response_id,
            "reasoning": {"effort": self.effort, "summary": None},
            "temperature": self.turn.sampling.temperature,
            "top_p": self.turn.sampling.top_p,
            "text": {"format": {"type": "text"}},
            "tool_choice": request.tool_choice,
            "tools": [tool.model_dump(exclude_none=True) for tool in request.tools],
            "truncation": "disabled",
            "usage": {
                "input_tokens": usage.input_tokens,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": usage.output_tokens,
                "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
                "total_tokens": usage.input_tokens + usage.output_tokens,
            } if done else None,
            "user": request.user,
        }

    def _finish(self) -> dict:
        """The final Response; kept in the store unless the request said `store: false`."""
        for item in self.turn.items:  # items the stream never presented (collect()) get their place
            if _visible(item):
                self.output_index.setdefault(item.id, len(self.output_index))
        response = self.response("incomplete" if self.turn.finish == "length" else "completed")
        if self.request.store:
            names = {**self.call_names, **{i.call_id: i.name for i in self.turn.items if i.kind == FUNCTION_CALL}}
            self.store.put(StoredResponse(response, self.turn.history, names, self.start_date))
        return response

    def _frame(self, kind: str, **fields) -> str:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return frame(event, kind)

    def _item_events(self, event: Added | Delta | Done) -> list[tuple[str, dict]]:
        item = event.item
        if not _visible(item):
            return []
        where = {"output_index": self.output_index.setdefault(item.id, len(self.output_index))}
        part = {"item_id": item.id, **where, "content_index": 0}
        text_kind = "reasoning_text" if item.kind == REASONING else "output_text"
        if isinstance(event, Added):
            added = [("response.output_item.added", {**where, "item": item_json(item, started=True)})]
            if item.kind in (REASONING, MESSAGE):
                added.append(("response.content_part.added", {**part, "part": _part(item, "")}))
            return added
        if isinstance(event, Delta):
            if item.kind == FUNCTION_CALL:
                return [("response.function_call_arguments.delta", {"item_id": item.id, **where, "delta": event.text})]
            if item.kind == MESSAGE:
                return [("response.output_text.delta", {**part, "delta": event.text, "logprobs": []})]
            return [("response.reasoning_text.delta", {**part, "delta": event.text})] if item.kind == REASONING else []
        done = [("response.output_item.done", {**where, "item": item_json(item)})]
        if item.kind == FUNCTION_CALL:
            args = {"item_id": item.id, **where, "name": item.name, "arguments": item.text}
            return [("response.function_call_arguments.done", args), *done]
        if item.kind in (REASONING, MESSAGE):
            logprobs = {"logprobs": []} if item.kind == MESSAGE else {}
            return [
                (f"response.{text_kind}.done", {**part, "text": item.text, **logprobs}),
                ("response.content_part.done", {**part, "part": _part(item, item.text)}),
                *done,
            ]
        return done


def _visible(item: Item) -> bool:
    """Calls of tools that do not exist are answered with an error for the model, not shown."""
    return item.kind != TOOL_CALL or item.recipient == "python" or item.recipient.startswith("browser.")


def _part(item: Item, text: str) -> dict:
    if item.kind == REASONING:
        return {"type": "reasoning_text", "text": text}
    return {"type": "output_text", "text": text, "annotations": []}


def item_json(item: Item, started: bool = False) -> dict:
    """An output item as the Responses API shows it; `started`: as first announced, still empty."""
    text = "" if started else item.text
    status = "in_progress" if started else item.status
    if item.kind == REASONING:
        content = [] if started else [_part(item, text)]
        return {"id": item.id, "type": "reasoning", "summary": [], "content": content, "status": status}
    if item.kind == MESSAGE:
        content = [] if started else [_part(item, text)]
        return {"id": item.id, "type": "message", "role": "assistant", "status": status, "content": content}
    if item.kind == FUNCTION_CALL:
        return {"id": item.id, "type": "function_call", "call_id": item.call_id, "name": item.name,
                "arguments": text, "status": status}
    if item.recipient == "python":
        outputs = [] if item.output is None else [{"type": "logs", "logs": item.output}]
        return {"id": item.id, "type": "code_interpreter_call", "code": text, "container_id": "local",
                "outputs": outputs, "status": status}
    return {"id": item.id, "type": "web_search_call", "action": _browser_action(item.name, item.text),
            "status": "failed" if (item.output or "").startswith("error:") else status}


def _browser_action(recipient: str, arguments: str) -> dict:
    """What a browser call did, as a web_search_call's action (its arguments are JSON)."""
    try:
        args = json.loads(arguments or "{}")
    except ValueError:
        args = {}
    args = args if isinstance(args, dict) else {}
    function = recipient.removeprefix("browser.")
    if function == "open":
        page = args.get("id")
        return {"type": "open_page", "url": page if isinstance(page, str) else None}
    if function == "find":
        return {"type": "find_in_page", "pattern": str(args.get("pattern", "")), "url": ""}
    return {"type": "search", "query": str(args.get("query", arguments))}
