"""Server-sent events and client disconnects.

Both APIs stream `data: <json>` frames (the Responses API adds `event: <type>`). A client
that goes away must stop its generation: while streaming, Starlette cancels the body
iterator when the connection drops, which unwinds into the job's cancel; for a
non-streaming request, `until_disconnect` races the work against the connection's
`http.disconnect` message.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import Request
from starlette.responses import StreamingResponse

from tritonllm.serve.errors import APIError

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def to_json(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def frame(data: dict | str, event: str | None = None) -> str:
    """One SSE frame; `data` is a JSON object, or a literal such as "[DONE]"."""
    text = data if isinstance(data, str) else to_json(data)
    return (f"event: {event}\n" if event else "") + f"data: {text}\n\n"


class EventStream(StreamingResponse):
    """A text/event-stream response that calls `on_close` once it is over, however it ends
    (finished, client gone, or never started), so the request's backend ticket is freed."""

    def __init__(self, frames: AsyncIterator[str], on_close: Callable[[], None]):
        super().__init__(frames, media_type="text/event-stream", headers=HEADERS)
        self.on_close = on_close

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()
            self.on_close()


async def until_disconnect(request: Request, work: Awaitable):
    """The result of `work`, or, if the client disconnects first, cancel it (499, never sent)."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        raise APIError(499, "The client closed the connection.", code="client_closed_request")
    return task.result()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
