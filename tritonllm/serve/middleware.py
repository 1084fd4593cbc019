"""API-key check and access log, as one ASGI layer around the app.

The key (when the server has one) guards `/v1/*`; `/health` and `/ready` stay open for
probes. It is compared with `hmac.compare_digest`, so the time taken does not reveal how
much of a guess was right. Each request is logged on one line of key=value fields (method,
path, status, duration, tokens, how generation ended), never the prompt or the answer.
"""

from __future__ import annotations

import hmac
import logging
import time

from tritonllm.serve.errors import APIError

log = logging.getLogger("tritonllm.serve.access")
MAX_BODY_BYTES = 16 << 20  # far above any prompt the context holds; keeps a huge body out of memory


class Guard:
    def __init__(self, app, api_key: str | None):
        self.app = app
        self.api_key = api_key.encode() if api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = None

        async def send_and_note(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        received = 0

        async def limited_receive():
            # Bodies without a Content-Length (chunked) are cut off at the limit: the app sees
            # a disconnect instead of more bytes.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > MAX_BODY_BYTES:
                    return {"type": "http.disconnect"}
            return message

        try:
            denied = self._denied(scope) or self._too_large(scope)
            if denied is not None:
                return await denied.response()(scope, receive, send_and_note)
            await self.app(scope, limited_receive, send_and_note)
        finally:
            turn = scope.get("state", {}).get("turn")  # set by the generation endpoints
            log.info(
                "method=%s path=%s status=%s duration_ms=%.1f input_tokens=%s output_tokens=%s finish=%s",
                scope["method"], scope["path"], status or "-", 1000 * (time.perf_counter() - start),
                turn.usage.input_tokens if turn else "-", turn.usage.output_tokens if turn else "-",
                (turn.finish or "unfinished") if turn else "-",
            )

    @staticmethod
    def _too_large(scope) -> APIError | None:
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            return APIError(413, f"The request body has {int(length)} bytes; the limit is {MAX_BODY_BYTES}.",
                            code="request_too_large")
        return None

    def _denied(self, scope) -> APIError | None:
        if self.api_key is None or not scope["path"].startswith("/v1/"):
            return None
        headers = dict(scope["headers"])
        scheme, _, key = headers.get(b"authorization", b"").partition(b" ")
        challenge = {"WWW-Authenticate": "Bearer"}
        if scheme.lower() != b"bearer" or not key.strip():
            return APIError(401, "You didn't provide an API key: send it as 'Authorization: Bearer KEY'.",
                            code="missing_api_key", headers=challenge)
        if not hmac.compare_digest(key.strip(), self.api_key):
            return APIError(401, "Incorrect API key provided.", code="invalid_api_key", headers=challenge)
        return None
