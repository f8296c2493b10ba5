"""Map every error to the OpenAI error body ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from thresher.api.work import Busy
from thresher.core.errors import (
    BackendError,
    BackendProtocolError,
    BackendResponseError,
    BackendTimeoutError,
    InputError,
    ModelUnavailableError,
    NotFoundError,
)

log = logging.getLogger(__name__)


HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}


class TooDeep(InputError):
    """JSON nested past the deployment's limit (``max_json_depth``): a 400, like JSON that does
    not parse, since no field of it can be named."""


class ErrorDetail(BaseModel):
    """OpenAI's error object: the clients read ``message`` and branch on ``type``/``code``."""

    message: str
    type: str
    param: str | None = Field(description="The request field at fault, when there is one.")
    code: str | None


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx answer of the service has this body."""

    error: ErrorDetail


# What each status means here; routes list the ones they can answer (api/openapi.py adds the
# ones middleware and body parsing answer on every route).
ERROR_TEXT = {
    400: "The body is not valid JSON, or nests deeper than THRESHER_MAX_JSON_DEPTH.",
    401: "Missing or unknown API key.",
    404: "A named resource (model, pool, job, file) does not exist.",
    413: "The body is over THRESHER_MAX_BODY_BYTES.",
    422: "A field has the wrong type or value; error.param names it.",
    429: "The key's rate limit is reached, or its tenant has too many requests waiting; see "
    "Retry-After.",
    502: "The backend failed after retries.",
    503: "A model this request needs is not available here.",
    504: "The backend timed out after retries.",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these statuses, each with the OpenAI error body."""
    return {code: {"model": ErrorResponse, "description": ERROR_TEXT[code]} for code in codes}


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(
    status: int,
    message: str,
    type_: str,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        error_body(message, type_, param, code), status_code=status, headers=headers
    )


async def answer_exception(
    app: FastAPI, exc: Exception, scope: Scope, receive: Receive, send: Send
) -> None:
    """Answer ``exc`` through ``app``'s own exception handlers, from ASGI code that runs before
    FastAPI's (the guard's neighbours: the proxy lane, the JSON check)."""
    handlers = app.exception_handlers
    for cls in type(exc).__mro__:
        if cls in handlers:
            response = await handlers[cls](Request(scope), exc)
            await response(scope, receive, send)
            return
    raise exc  # no handler at all: the server's error middleware answers 500


def _loc(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


def install_error_handlers(app: FastAPI) -> None:
    """One place where exceptions become HTTP answers; nothing leaks a traceback."""

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = _loc(tuple(first.get("loc", ())))
        if first.get("type") == "json_invalid":
            return error_response(
                400,
                "The request body is not valid JSON.",
                "invalid_request_error",
                None,
                "invalid_json",
            )
        message = str(first.get("msg"))
        if "Expected UploadFile" in message:  # a form part sent without a file name
            message = "send a file here (a multipart part with a file name), not a text field"
        return error_response(
            422, f"{param}: {message}", "invalid_request_error", param, "invalid_value"
        )

    @app.exception_handler(TooDeep)
    async def _too_deep(_: Request, exc: TooDeep) -> JSONResponse:
        return error_response(400, str(exc), "invalid_request_error", exc.field, "json_too_deep")

    @app.exception_handler(InputError)
    async def _input(_: Request, exc: InputError) -> JSONResponse:
        return error_response(422, str(exc), "invalid_request_error", exc.field, "invalid_value")

    @app.exception_handler(NotFoundError)
    async def _not_found(_: Request, exc: NotFoundError) -> JSONResponse:
        return error_response(404, str(exc), "invalid_request_error", exc.field, "not_found")

    @app.exception_handler(ModelUnavailableError)
    async def _model(_: Request, exc: ModelUnavailableError) -> JSONResponse:
        # The reason names files and packages of this machine: the log has it, not the body.
        return logged(
            exc, 503, "A model this request needs is not available on this server.",
            "server_error", "model_unavailable",
        )  # fmt: skip

    @app.exception_handler(BackendError)
    async def _backend(_: Request, exc: BackendError) -> JSONResponse:
        if isinstance(exc, BackendResponseError) and 400 <= exc.status_code < 500:
            # The backend's own words are about the request (a context length, a parameter).
            return error_response(
                exc.status_code,
                f"The backend refused the request (HTTP {exc.status_code}): "
                f"{backend_detail(exc.body)}",
                "invalid_request_error", None, "backend_rejected",
            )  # fmt: skip
        if isinstance(exc, BackendTimeoutError):
            return logged(
                exc, 504, "The backend did not answer in time.", "api_error", "backend_timeout"
            )
        if isinstance(exc, BackendProtocolError):
            return logged(
                exc, 502, "The backend answered outside the OpenAI protocol.", "api_error",
                "backend_protocol_error",
            )  # fmt: skip
        if isinstance(exc, BackendResponseError):
            what = f"The backend failed with HTTP {exc.status_code}."
        else:
            what = "The backend could not be reached or broke off."
        return logged(exc, 502, what, "api_error", "backend_error")

    @app.exception_handler(Busy)
    async def _busy(_: Request, exc: Busy) -> JSONResponse:
        # Work that did not run (api/work.py): the tenant's own load, its client gone, or the
        # service stopping (a route answers a passed deadline itself, as the proxy does).
        if exc.reason == "full":
            return error_response(
                429, f"Too many requests of this tenant in progress: {exc}. Retry shortly.",
                "rate_limit_error", None, "too_many_requests_waiting", headers={"retry-after": "1"},
            )  # fmt: skip
        if exc.reason == "gone":  # nobody reads it; the metrics count the client's close
            return error_response(
                499, str(exc), "client_closed_request", None, "client_disconnected"
            )
        return error_response(503, f"{exc}; retry shortly.", "server_error", None, "busy")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return error_response(
            exc.status_code,
            str(exc.detail),
            type_,
            None,
            HTTP_CODES.get(exc.status_code),
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        return logged(exc, 500, "Internal error.", "server_error", None, trace=True)


def request_id() -> str:
    return uuid.uuid4().hex[:16]


def logged(
    exc: Exception,
    status: int,
    message: str,
    type_: str,
    code: str | None,
    *,
    trace: bool = False,
) -> JSONResponse:
    """An answer that says what failed but not where or why inside the server (no backend URL,
    path or exception text): those go to the log under a request id the answer carries."""
    rid = request_id()
    if trace:
        log.error("request %s: unhandled error", rid, exc_info=exc)
    else:
        log.warning("request %s: %s: %s", rid, type(exc).__name__, exc)
    return error_response(
        status, f"{message} Request id {rid} (the server log has the details).", type_, None,
        code, headers={"x-request-id": rid},
    )  # fmt: skip


def backend_detail(body: object) -> str:
    """The message of a backend's error body (OpenAI's shape, or the text it sent)."""
    detail = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(detail, dict):
        detail = detail.get("message", detail)
    return str(detail)[:500]
