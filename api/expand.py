"""The ``thresher_expand`` tool: a model that needs an elided span asks for it, and the proxy
answers the call itself before answering the client.

When a request opts in (``thresher.compression.expand``, per request or in the deployment's
``pipeline``) and the messages it forwards hold elision markers, the proxy adds one function
tool, ``thresher_expand(handle)``, to the request. When the backend's answer calls it, the
proxy looks the handle up in the originals store (the request's tenant only), appends the
assistant turn and one tool message per call, and asks the backend again, up to
``compress_expand_rounds`` times; the last round goes without the tool, so the model answers.
The client never sees a ``thresher_expand`` call: its own tools' calls pass through (a turn
that calls both loses only ours), usage is summed over the rounds, and a stream relays each
round's text as it comes, holding back only our calls. A backend that refuses the first
round (400 or 422: it takes no tools) is asked once more without the tool.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from thresher.compression.elision import handles_in, originals_key, parse_handle
from thresher.core.backends import ChatBackend
from thresher.core.errors import BackendResponseError
from thresher.core.record import message_text

Body = dict[str, Any]
# A backend refusing the request with the tool added (it takes no tools): asked again without.
REFUSED = (400, 422)
TOOL_NAME = "thresher_expand"
TOOL: Body = {
    "type": "function",
    "function": {
        "name": TOOL_NAME,
        "description": "Return the original content that was elided from the conversation. "
        "Call it with the handle written in an elision marker such as "
        "'… 37 items elided [thr:ab12cd34] …' when the answer may be in what was left out.",
        "parameters": {
            "type": "object",
            "properties": {
                "handle": {"type": "string", "description": "The marker's handle, thr:xxxxxxxx."}
            },
            "required": ["handle"],
        },
    },
}


def expandable(body: Body) -> bool:
    """Whether a chat request's forwarded messages hold elision markers to offer, with one
    choice asked for (``n`` above 1 is forwarded as it is)."""
    if body.get("n") not in (None, 1):
        return False
    return any(handles_in(message_text(m)) for m in body.get("messages", []))


class Expander:
    """Answers ``thresher_expand`` calls from ``store`` (a get/put store of originals) for
    ``tenant``, for up to ``rounds`` rounds per request."""

    def __init__(self, store: Any, tenant: str, rounds: int) -> None:
        self.store = store
        self.tenant = tenant
        self.rounds = rounds
        self.expanded: list[str] = []

    def answer(self, call: Body) -> str:
        """The tool message's content for one call: the original, or why there is none."""
        try:
            args = json.loads(call.get("function", {}).get("arguments") or "{}")
        except ValueError:
            args = {}
        raw = args.get("handle") if isinstance(args, dict) else None
        handle = parse_handle(raw) if isinstance(raw, str) else None
        if handle is None:
            return "thresher_expand needs a handle such as thr:ab12cd34 (from a marker)."
        found = self.store.get(originals_key(self.tenant, handle))
        if found is None:
            return f"No original is kept for {handle}: it is unknown or has expired."
        self.expanded.append(handle)
        return f"Original of {handle} ({found['where']}):\n{found['content']}"

    def _round_body(self, body: Body, last: bool) -> Body:
        tools = [t for t in body.get("tools") or [] if _name(t) != TOOL_NAME]
        out = dict(body)
        if not last:
            out["tools"] = [*tools, TOOL]
        elif tools:
            out["tools"] = tools
        else:
            out.pop("tools", None)
            out.pop("tool_choice", None)
        return out

    def _continue(self, body: Body, content: Any, calls: list[Body]) -> Body:
        turn: Body = {"role": "assistant", "content": content, "tool_calls": calls}
        answers = [
            {"role": "tool", "tool_call_id": c.get("id", ""), "content": self.answer(c)}
            for c in calls
        ]
        return {**body, "messages": [*body["messages"], turn, *answers]}

    async def chat(self, backend: ChatBackend, body: Body) -> Body:
        """The backend's final answer, ``thresher_expand`` calls answered along the way."""
        usage: Body | None = None
        for round_ in range(self.rounds + 1):
            try:
                answer = await backend.chat(self._round_body(body, round_ == self.rounds))
            except BackendResponseError as exc:
                if round_ or exc.status_code not in REFUSED:
                    raise
                answer = await backend.chat(self._round_body(body, True))  # takes no tools
                round_ = self.rounds
            usage = _add_usage(usage, answer.get("usage"))
            message = (answer.get("choices") or [{}])[0].get("message") or {}
            calls = message.get("tool_calls") or []
            ours = [c for c in calls if _name(c) == TOOL_NAME]
            theirs = [c for c in calls if _name(c) != TOOL_NAME]
            if not ours or theirs or round_ == self.rounds:
                if ours:
                    _drop_calls(answer, theirs)
                break
            body = self._continue(body, message.get("content"), ours)
        if usage is not None:
            answer["usage"] = usage
        return answer

    async def stream(self, backend: ChatBackend, body: Body) -> AsyncIterator[Body]:
        """The backend's chunks, round after round; ``thresher_expand`` calls are held back
        and answered, every other chunk is relayed as it comes."""
        usage: Body | None = None
        ident: str | None = None
        for round_ in range(self.rounds + 1):
            last = round_ == self.rounds
            held: list[Body] = []  # usage-only chunks: summed, sent once at the end
            calls = _Calls()
            finish: Body | None = None
            stream = backend.stream_chat(self._round_body(body, last))
            try:
                opening = await anext(aiter(stream), None)
            except BackendResponseError as exc:
                if round_ or exc.status_code not in REFUSED:
                    raise
                last = True  # a backend that takes no tools: go on without ours
                stream = backend.stream_chat(self._round_body(body, last))
                opening = await anext(aiter(stream), None)
            async for chunk in _chain(opening, stream):
                ident = ident or chunk.get("id")
                if ident is not None:
                    chunk = {**chunk, "id": ident}
                choices = chunk.get("choices") or []
                if not choices:
                    usage = _add_usage(usage, chunk.get("usage"))
                    held.append(chunk)
                    continue
                out = calls.filter(chunk)
                if choices[0].get("finish_reason") and not last and calls.only_ours():
                    finish = chunk
                    continue
                if out is not None and not (round_ and _role_only(out)):
                    yield out
            if finish is None:
                break
            body = self._continue(body, calls.content, calls.ours())
        if held:
            yield {**held[-1], "usage": usage}


class _Calls:
    """The tool calls of one streamed round, rebuilt from their deltas; ours are held back
    and the client's renumbered so their indices stay contiguous."""

    def __init__(self) -> None:
        self.mine: dict[int, Body] = {}
        self.theirs: dict[int, int] = {}  # backend index -> index the client sees
        self.content = ""

    def filter(self, chunk: Body) -> Body | None:
        """``chunk`` without our calls' deltas (None when nothing is left to send)."""
        choice = chunk["choices"][0]
        delta = choice.get("delta") or {}
        self.content += delta.get("content") or ""
        deltas = delta.get("tool_calls")
        if not deltas:
            return chunk
        passed = []
        for d in deltas:
            index = d.get("index", 0)
            if index in self.mine or (index not in self.theirs and _name(d) == TOOL_NAME):
                call = self.mine.setdefault(
                    index,
                    {
                        "id": "",
                        "type": "function",
                        "function": {"name": TOOL_NAME, "arguments": ""},
                    },
                )
                call["id"] = d.get("id") or call["id"]
                call["function"]["arguments"] += (d.get("function") or {}).get("arguments") or ""
                continue
            mapped = self.theirs.setdefault(index, len(self.theirs))
            passed.append({**d, "index": mapped})
        rest = {k: v for k, v in delta.items() if k != "tool_calls"}
        if passed:
            rest["tool_calls"] = passed
        if not rest and not choice.get("finish_reason"):
            return None
        return {**chunk, "choices": [{**choice, "delta": rest}]}

    def only_ours(self) -> bool:
        return bool(self.mine) and not self.theirs

    def ours(self) -> list[Body]:
        return [self.mine[i] for i in sorted(self.mine)]


async def _chain(first: Body | None, rest: AsyncIterator[Body]) -> AsyncIterator[Body]:
    if first is not None:
        yield first
    async for chunk in rest:
        yield chunk


def _name(item: Body) -> str | None:
    function = item.get("function")
    return function.get("name") if isinstance(function, dict) else None


def _drop_calls(answer: Body, keep: list[Body]) -> None:
    """Leave only the client's own calls in a final answer (ours are not the client's)."""
    choice = answer["choices"][0]
    message = choice["message"]
    if keep:
        message["tool_calls"] = keep
    else:
        message.pop("tool_calls", None)
        if choice.get("finish_reason") == "tool_calls":
            choice["finish_reason"] = "stop"


def _role_only(chunk: Body) -> bool:
    """A chunk that only announces the assistant's role (sent again at each round's start)."""
    choice = chunk["choices"][0]
    delta = choice.get("delta") or {}
    return (
        not choice.get("finish_reason")
        and not (delta.keys() - {"role", "content"})
        and not (delta.get("content"))
    )


def _add_usage(total: Body | None, more: Any) -> Body | None:
    if not isinstance(more, dict):
        return total
    if total is None:
        return dict(more)
    out = dict(total)
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        if isinstance(more.get(key), int):
            out[key] = (out.get(key) or 0) + more[key]
    return out
