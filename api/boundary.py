"""The JSON check in front of the routes: a body Python's ``json`` would accept but no backend
or tokenizer can take (a lone surrogate, an integer past 64 bits, ``NaN``) is a 422 naming its
field (:func:`thresher.core.wire.check_sendable`), and a body nested deeper than
``max_json_depth`` is a 400 naming the limit, before any route, model or backend sees it (deep
nesting would otherwise exhaust Python's recursion in a parser, a copy or a walk: a 500).

The proxy lane (api/lane.py) never sends a valid request here: a lone surrogate already fails
its strict parse, it checks depth itself (:func:`check_depth`, nearly free for the common body),
and the backend layer checks what the lane forwards.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from thresher.api.errors import TooDeep, answer_exception
from thresher.core.errors import InputError
from thresher.core.wire import check_sendable

CHECKED_METHODS = frozenset({"POST", "PUT", "PATCH"})


def depth(value: Any) -> int:
    """How deeply arrays and objects nest in ``value`` (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        level += 1
        deepest = max(deepest, level)
        stack.extend((child, level) for child in item if isinstance(child, dict | list))
    return deepest


def too_deep(limit: int, field: str | None = None) -> TooDeep:
    where = f"{field} nests" if field else "The JSON body nests"
    return TooDeep(
        f"{where} arrays and objects deeper than {limit} levels (THRESHER_MAX_JSON_DEPTH); "
        "send flatter JSON.",
        field=field,
    )


def parse_json(raw: bytes | str, limit: int, field: str | None = None) -> Any:
    """``raw`` parsed by Python's ``json`` (so lone surrogates and huge integers survive for
    :func:`check_sendable` to name), refusing nesting deeper than ``limit`` with
    :class:`TooDeep`; ``ValueError`` when it is not JSON."""
    try:
        value = json.loads(raw)
    except RecursionError:  # the C scanner's own guard: raised cleanly, nothing half-built
        raise too_deep(limit, field) from None
    if depth(value) > limit:
        raise too_deep(limit, field)
    return value


def check_depth(body: bytes, limit: int) -> None:
    """Raise :class:`TooDeep` when ``body`` nests deeper than ``limit`` (the proxy lane's check,
    before its own parse). A body with fewer brackets than the limit cannot: two counts at C
    speed. Others are parsed by orjson, which is quick and stops at 1,024 levels by itself."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc) or "recursion" in str(exc):
            raise too_deep(limit) from None
        try:
            parse_json(body, limit)  # what orjson refuses and json takes (lone surrogates)
        except TooDeep:
            raise
        except ValueError:
            pass  # not JSON: whoever parses it next answers that
        return
    if depth(value) > limit:
        raise too_deep(limit)


def load_json_text(text: str, field: str, limit: int) -> Any:
    """JSON text sent outside a JSON body (a form field): the body's checks, naming ``field``."""
    try:
        value = parse_json(text, limit, field)
    except TooDeep:
        raise
    except ValueError:
        raise InputError(f"{field} must be JSON text.", field=field) from None
    check_sendable(value, field)
    return value


def is_json(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"application/json"
    return False


async def read_body(receive: Receive) -> bytes | None:
    """The whole body, or None when the client disconnects first."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes, rest: Receive) -> Receive:
    """A ``receive`` that hands over the body once more, then what the client sends next."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await rest()

    return receive


class StrictJSON:
    """ASGI middleware; non-JSON requests and bodies that are not JSON at all pass unchanged
    (FastAPI answers those 400).

    Args:
        app: The next ASGI app (the routes).
        service: The FastAPI app whose exception handlers answer.
        max_depth: The deepest nesting a body may have.
    """

    def __init__(self, app: ASGIApp, *, service: FastAPI, max_depth: int = 64) -> None:
        self.app = app
        self.service = service
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in CHECKED_METHODS or not is_json(scope):
            await self.app(scope, receive, send)
            return
        try:
            body = await read_body(receive)  # the guard's limit may refuse it (413)
            if body is None:  # the client left
                return
            try:
                value = parse_json(body, self.max_depth)
            except TooDeep:
                raise
            except ValueError:
                value = None  # not JSON: the routes answer their own 400
            check_sendable(value)
        except Exception as exc:  # noqa: BLE001 - the app's handlers decide every answer
            await answer_exception(self.service, exc, scope, receive, send)
            return
        await self.app(scope, replay(body, receive), send)
