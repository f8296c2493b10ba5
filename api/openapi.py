"""The OpenAPI spec: FastAPI's generated one, plus what middleware and the error handlers do.

Every 4xx/5xx a route can answer is declared with the OpenAI error body, so clients (and the
schemathesis run in tests/api) can rely on the spec: 401 and 429 from the guard on every route
but health, 400/413/422 wherever a body is parsed, 422 wherever a parameter is, and each route's
own statuses (404, 502, ...) from its decorator.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from thresher.api.errors import ERROR_TEXT, ErrorResponse
from thresher.api.guard import OPEN_PATHS

ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}


def openapi(app: FastAPI) -> dict[str, Any]:
    """The app's spec, built once (install as ``app.openapi``)."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        components = schema.setdefault("components", {})
        components["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "THRESHER_API_KEYS"}
        }
        schema["security"] = [{"bearer": []}]
        for path, item in schema["paths"].items():
            for operation in item.values():
                _declare_errors(operation, open_path=path in OPEN_PATHS)
        # FastAPI's own 422 body is replaced by the OpenAI error body everywhere.
        schemas = components.setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        error = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(error.pop("$defs", {}))
        schemas["ErrorResponse"] = error
        app.openapi_schema = schema
    return app.openapi_schema


def _declare_errors(operation: dict[str, Any], *, open_path: bool) -> None:
    codes: set[int] = set()
    if open_path:
        operation["security"] = []
    else:
        codes |= {401, 429}
    if "requestBody" in operation:
        codes |= {400, 413, 422}
    if operation.get("parameters"):
        codes.add(422)
    responses = operation.setdefault("responses", {})
    for code in codes:
        responses.setdefault(str(code), {"description": ERROR_TEXT[code]})
    for status, response in responses.items():
        if status[0] in "45":
            response["content"] = {"application/json": {"schema": ERROR_REF}}
    operation["responses"] = dict(sorted(responses.items()))
