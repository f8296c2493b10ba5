"""The JSON check in front of the routes: a body Python's ``json`` would accept but no backend
or tokenizer can take (a lone surrogate, an integer past 64 bits, ``NaN``) is a 422 naming its
field (:func:`thresher.core.wire.check_sendable`), before any route, model or backend sees it.

The proxy lane (api/lane.py) never sends a valid request here: a lone surrogate already fails
its strict parse, and the backend layer checks what the lane forwards, so the hot path pays
nothing for this.
"""

from __future__ import annotations

import json

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from thresher.api.errors import answer_exception
from thresher.api.lane import is_json, read_body, replay
from thresher.core.wire import check_sendable

CHECKED_METHODS = frozenset({"POST", "PUT", "PATCH"})


class StrictJSON:
    """ASGI middleware; non-JSON requests and bodies that are not JSON at all pass unchanged
    (FastAPI answers those 400).

    Args:
        app: The next ASGI app (the routes).
        service: The FastAPI app whose exception handlers answer.
    """

    def __init__(self, app: ASGIApp, *, service: FastAPI) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in CHECKED_METHODS or not is_json(scope):
            await self.app(scope, receive, send)
            return
        try:
            body = await read_body(receive)  # the guard's limit may refuse it (413)
            if body is None:  # the client left
                return
            try:
                value = json.loads(body)
            except ValueError:
                value = None  # not JSON: the routes answer their own 400
            check_sendable(value)
        except Exception as exc:  # noqa: BLE001 - the app's handlers decide every answer
            await answer_exception(self.service, exc, scope, receive, send)
            return
        await self.app(scope, replay(body, receive), send)
