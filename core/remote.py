"""Any OpenAI-compatible server (OpenAI, vLLM, llama.cpp server, TGI) as a backend: the OpenAI
calls written once over an injected transport (:mod:`thresher.core.transport`), with the one error
mapping of an answer and the one retry policy (:mod:`thresher.core.retry`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from thresher.core.errors import BackendProtocolError, BackendResponseError
from thresher.core.retry import ErrorObserver, RetryPolicy
from thresher.core.transport import Transport, TransportName, make_transport
from thresher.core.wire import check_sendable

Body = dict[str, Any]

try:  # the api and selection extras bring orjson: ten times faster on the proxy's hot path
    import orjson

    _dumps, _loads, DecodeError = orjson.dumps, orjson.loads, orjson.JSONDecodeError
except ImportError:  # pragma: no cover - a core-only install

    def _dumps(value: Any) -> bytes:
        check_sendable(value)  # json writes what orjson refuses (huge ints, lone surrogates)
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()

    _loads, DecodeError = json.loads, ValueError  # type: ignore[assignment]


class OpenAICompatibleBackend:
    """OpenAI, vLLM, llama.cpp server, TGI: anything that serves ``/v1/chat/completions``.

    Args:
        base_url: The server's OpenAI base URL (``.../v1``).
        api_key: Sent as ``Authorization: Bearer``.
        client: A ready ``httpx.AsyncClient`` (the caller closes it); else one is made.
        timeout: Seconds for each read; also the total deadline of a call with its retries
            unless ``deadline`` says otherwise.
        name: Shown in errors and metrics (default: the URL).
        transport: A ready transport, or the name of one (``httpx``, ``http1``, ``auto``).
        max_connections: Connections open to this server at once.
        retries: Attempts after the first, for what is safe to resend (see core/retry.py).
        backoff: Seconds before the first retry, doubled each time.
        deadline: Seconds for one call and all its retries together (a stream: until its
            first event).
        on_error: Called with ``(name, error)`` for every failed attempt (metrics).
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        client: Any = None,
        timeout: float = 120.0,
        name: str | None = None,
        transport: Transport | TransportName = "httpx",
        max_connections: int = 100,
        retries: int = 2,
        backoff: float = 0.25,
        deadline: float | None = None,
        on_error: ErrorObserver | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.name = name or self.base_url
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.transport: Transport = (
            make_transport(
                self.base_url,
                transport,
                headers=headers,
                timeout=timeout,
                max_connections=max_connections,
                client=client,
                name=self.name,
            )  # fmt: skip
            if isinstance(transport, str)
            else transport
        )
        self.retry = RetryPolicy(retries, backoff, deadline or timeout, on_error, timeout)

    async def chat(self, body: Body) -> Body:
        return await self._call("/chat/completions", {**body, "stream": False})

    async def complete(self, body: Body) -> Body:
        return await self._call("/completions", {**body, "stream": False})

    def stream_chat(self, body: Body) -> AsyncIterator[Body]:
        return self._open("/chat/completions", {**body, "stream": True})

    def stream_complete(self, body: Body) -> AsyncIterator[Body]:
        return self._open("/completions", {**body, "stream": True})

    async def models(self) -> list[str]:
        data = await self.retry.call(self.name, lambda: self._request("GET", "/models", None))
        return [m["id"] for m in data.get("data", []) if isinstance(m, dict) and "id" in m]

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def _call(self, path: str, body: Body) -> Body:
        data = encode(body)
        return await self.retry.call(self.name, lambda: self._request("POST", path, data))

    async def _open(self, path: str, body: Body) -> AsyncIterator[Body]:
        """The stream, retried until its first event; a failure after it ends the stream."""
        data = encode(body)
        first, rest = await self.retry.open_stream(self.name, lambda: self._events(path, data))
        if first is None:
            return
        try:
            yield first
            async for event in rest:
                yield event
        finally:
            await rest.aclose()  # type: ignore[attr-defined]

    async def _request(self, method: str, path: str, data: bytes | None) -> Body:
        answer = await self.transport.request(method, path, data)
        if answer.status >= 400:
            raise response_error(self.name, answer.status, answer.content)
        try:
            body = _loads(answer.content)
        except DecodeError as exc:
            raise BackendProtocolError(
                f"Backend {self.name} answered {path} with a body that is not JSON."
            ) from exc
        if not isinstance(body, dict):
            raise BackendProtocolError(f"Backend {self.name} answered {path} with no object.")
        return body

    async def _events(self, path: str, data: bytes) -> AsyncIterator[Body]:
        async with self.transport.stream(path, data) as answer:
            if answer.status >= 400:
                raise response_error(self.name, answer.status, await answer.read())
            check_event_stream(self.name, answer.content_type)
            events = 0
            async for raw in answer.lines:  # one SSE line at a time
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                event = line[5:].strip()
                if event == b"[DONE]":
                    return
                events += 1
                try:
                    yield _loads(event)
                except DecodeError as exc:
                    raise BackendProtocolError(
                        f"Backend {self.name} sent a stream event that is not JSON: {event[:80]!r}"
                    ) from exc
            if not events:
                raise no_events(self.name)


def encode(body: Body) -> bytes:
    """The request body as JSON; a value no server takes is the caller's 4xx naming it."""
    try:
        return _dumps(body)
    except TypeError:  # an integer past 64 bits, a lone surrogate
        check_sendable(body)
        raise


def check_event_stream(name: str, content_type: str | None) -> None:
    """A stream's answer must be server-sent events: a JSON body relayed as a stream would reach
    the client as an empty success."""
    if content_type is not None and not content_type.lower().startswith("text/event-stream"):
        raise BackendProtocolError(
            f"Backend {name} answered a stream request with {content_type.split(';')[0]}, not "
            "text/event-stream; check that the server supports stream: true."
        )


def no_events(name: str) -> BackendProtocolError:
    return BackendProtocolError(
        f"Backend {name} ended a stream without sending an event; check that the server "
        "supports stream: true."
    )


def response_error(name: str, status: int, content: bytes) -> BackendResponseError:
    """An HTTP error answer, with the server's own message when it sent one."""
    try:
        body: Any = json.loads(content)
        detail = body.get("error", body) if isinstance(body, dict) else body
        if isinstance(detail, dict):
            detail = detail.get("message", detail)
    except ValueError:
        body = content.decode("utf-8", "replace")
        detail = body[:200]
    return BackendResponseError(
        f"Backend {name} answered HTTP {status}: {detail}", status_code=status, body=body
    )
