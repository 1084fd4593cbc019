"""Errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, for every failure.

OpenAI clients read that shape (the official one turns it into typed exceptions), so bad
JSON, unknown or invalid fields, unknown routes and unexpected server failures all answer
with it instead of FastAPI's default `{"detail": ...}`.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

log = logging.getLogger(__name__)

# Pydantic names the branch of a union it tried inside the location; these are not fields.
_BRANCHES = {"str", "int", "float", "bool", "none"}
_BRANCH_PREFIXES = ("list[", "dict[", "literal[", "tagged-union[", "function-", "constrained-")
_TYPES = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error", 503: "server_error"}


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None):
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class APIError(Exception):
    """A request that cannot be served; `status` is the HTTP status of the answer."""

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers

    @property
    def type(self) -> str:
        return _TYPES.get(self.status, "invalid_request_error" if self.status < 500 else "server_error")

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def param_name(loc: tuple, body) -> str | None:
    """OpenAI's name for the parameter at a pydantic error location, e.g. ("body", "input",
    "list[...]", 0, "message", "colour") -> input[0].colour. Parts that do not index the
    request body are the union branches pydantic tried, and are left out; only a last part
    (a missing field) may be absent from the body."""
    parts = loc[1:] if loc and loc[0] == "body" else loc
    name, value = "", body
    for i, part in enumerate(parts):
        if isinstance(part, int) and isinstance(value, list) and 0 <= part < len(value):
            name, value = f"{name}[{part}]", value[part]
        elif isinstance(part, str) and isinstance(value, dict) and part in value:
            name, value = f"{name}.{part}" if name else part, value[part]
        elif i == len(parts) - 1 and isinstance(part, str) and part not in _BRANCHES \
                and not part.startswith(_BRANCH_PREFIXES):
            name = f"{name}.{part}" if name else part
    return name or None


def validation_error(error: dict, body) -> APIError:
    """A pydantic error of the request `body`, in words a client can act on."""
    kind, param = error["type"], param_name(tuple(error["loc"]), body)
    if kind == "json_invalid":
        return APIError(400, f"The request body is not valid JSON ({error.get('ctx', {}).get('error', error['msg'])}).")
    if kind == "extra_forbidden":
        return APIError(400, f"Unrecognized request argument supplied: {param}", param, "unknown_parameter")
    if kind == "missing":
        return APIError(400, f"Missing required parameter: '{param}'.", param, "missing_required_parameter")
    if param is None:
        return APIError(400, f"The request body must be a JSON object ({error['msg']}).")
    return APIError(400, f"Invalid value for '{param}': {error['msg']}.", param, "invalid_value")


def install(app: FastAPI) -> None:
    """Answer every error of `app` in OpenAI's shape."""

    async def api_error(request: Request, exc: APIError):
        return exc.response()

    async def invalid_request(request: Request, exc: RequestValidationError):
        # A union reports every branch it tried; the one that got deepest is the one meant.
        return validation_error(max(exc.errors(), key=lambda e: len(e["loc"])), exc.body).response()

    async def http_error(request: Request, exc: HTTPException):
        message = {404: f"Unknown path {request.url.path}", 405: f"Method {request.method} not allowed"}
        return APIError(exc.status_code, message.get(exc.status_code, str(exc.detail)), headers=exc.headers).response()

    async def unexpected(request: Request, exc: Exception):
        log.error("unexpected error serving %s %s", request.method, request.url.path, exc_info=exc)
        return APIError(500, "The server had an error while processing your request.", code="server_error").response()

    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
