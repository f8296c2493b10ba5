"""The proxy routes' fast lane: ``POST /v1/chat/completions`` and ``/v1/completions`` served
straight from ASGI, without the router's per-request machinery.

FastAPI's middleware, routing, dependency solving and request parsing cost more CPU per request
than everything else the proxy does for a pass-through (``bench/proxy.py`` measures the CPU per
proxied request; see also :func:`thresher.api.app.tune_gc`); at 50 concurrent clients that is
queueing time every client waits through.
The lane reads the body, validates it with the same pydantic models and runs the same
:func:`thresher.api.proxy.forward`; errors become answers through the app's own exception
handlers. A body that does not validate goes on to the routes unchanged, so
a bad request gets exactly the answer it always did. FastAPI's own OpenTelemetry hooks do not
see the lane (the service's Prometheus metrics do).
"""

from __future__ import annotations

import asyncio
import threading
import time

from fastapi import FastAPI
from pydantic import BaseModel, ValidationError
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from thresher.api.boundary import check_depth, is_json, read_body, replay
from thresher.api.errors import answer_exception
from thresher.api.proxy import forward
from thresher.api.routes.chat import ChatCompletionRequest, CompletionRequest, router
from thresher.api.state import tenant_of

LANES: dict[str, tuple[str, type[BaseModel]]] = {
    "/v1/chat/completions": ("chat", ChatCompletionRequest),
    "/v1/completions": ("completion", CompletionRequest),
}
# The proxy's routes as the router would have matched them: what the metrics label requests by.
ROUTES = {r.path: r for r in router.routes if isinstance(r, Route) and r.path in LANES}


class ProxyLane:
    """ASGI middleware; every other request goes on to ``app`` untouched.

    Args:
        app: The next ASGI app (the routes).
        service: The FastAPI app: its state, routes (for metric labels) and exception handlers.
    """

    def __init__(self, app: ASGIApp, *, service: FastAPI, max_depth: int = 64) -> None:
        self.app = app
        self.service = service
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lane = LANES.get(scope["path"]) if scope["type"] == "http" else None
        if lane is None or scope["method"] != "POST" or not is_json(scope):
            await self.app(scope, receive, send)
            return
        scope["route"] = ROUTES[scope["path"]]
        # A compression deadline counts from the front door: reading and validating count too.
        arrived = scope.get("thresher.arrived") or time.monotonic()
        try:
            body = await read_body(receive)  # the guard's limit may refuse it (413)
        except Exception as exc:  # noqa: BLE001 - the app's handlers decide every answer
            await self._answer_error(exc, scope, receive, send)
            return
        if body is None:  # the client left before its body was sent
            return
        kind, model = lane
        try:
            check_depth(body, self.max_depth)
        except Exception as exc:  # noqa: BLE001
            await self._answer_error(exc, scope, receive, send)
            return
        try:
            request = model.model_validate_json(body)
        except ValidationError:
            # The routes answer it, with the error shape and wording of every other route.
            await self.app(scope, replay(body, receive), send)
            return
        gone = threading.Event()
        watcher = asyncio.create_task(watch_disconnect(receive, gone))
        try:
            response = await forward(
                self.service.state.thresher, kind, request, gone.is_set, arrived,
                tenant_of(scope),
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001
            await self._answer_error(exc, scope, receive, send)
            return
        finally:
            watcher.cancel()
        # A client that left gets its 499 too: the server drops it, the metrics count it.
        await response(scope, receive, send)

    async def _answer_error(
        self, exc: Exception, scope: Scope, receive: Receive, send: Send
    ) -> None:
        await answer_exception(self.service, exc, scope, receive, send)


async def watch_disconnect(receive: Receive, gone: threading.Event) -> None:
    """Set ``gone`` when the client disconnects (the pipeline's stages then stop their work).
    Cancelled before the response is sent, which listens for the disconnect itself."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            return
