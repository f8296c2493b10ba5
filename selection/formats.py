"""Record shapes: how a row of Alpaca, ShareGPT, OpenAI messages or plain text becomes a Record.

The original row always travels in ``record.metadata["row"]``, so writers put it back unchanged
(plus scores); the mapping below only decides what ``text``/``messages`` the steps see.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from thresher.core.errors import InputError
from thresher.core.record import Message, Record

Row = dict[str, Any]

_SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "system": "system",
    "tool": "tool",
    "function_call": "assistant",
    "observation": "tool",
}


def detect_shape(row: Row, text_field: str) -> str:
    """The shape of ``row`` from its keys (used when a recipe says ``shape: auto``)."""
    if "messages" in row and isinstance(row["messages"], list):
        return "openai"
    if "conversations" in row and isinstance(row["conversations"], list):
        return "sharegpt"
    if "instruction" in row and "output" in row:
        return "alpaca"
    if text_field in row:
        return "text"
    raise InputError(
        f"Cannot tell the shape of a row with keys {sorted(row)[:8]}; set 'shape' "
        f"(text with text_field, alpaca, sharegpt or openai).",
        field="shape",
    )


def _text(row: Row, text_field: str) -> tuple[str | None, list[Message] | None]:
    value = row.get(text_field)
    if not isinstance(value, str):
        raise InputError(
            f"missing text field {text_field!r} (set 'text_field' to the field holding the text)"
            if value is None
            else f"field {text_field!r} is {type(value).__name__}, not a string",
            field=text_field,
        )
    return value, None


def _alpaca(row: Row, text_field: str) -> tuple[str | None, list[Message] | None]:
    instruction = row.get("instruction")
    output = row.get("output")
    if not isinstance(instruction, str) or not isinstance(output, str):
        raise InputError(
            "an Alpaca row needs string 'instruction' and 'output'",
            field="instruction" if not isinstance(instruction, str) else "output",
        )
    extra = row.get("input")
    has_input = isinstance(extra, str) and extra.strip()
    prompt = f"{instruction}\n\n{extra}" if has_input else instruction
    return None, [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]


def _sharegpt(row: Row, text_field: str) -> tuple[str | None, list[Message] | None]:
    turns = row.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise InputError(
            "a ShareGPT row needs a non-empty 'conversations' list", field="conversations"
        )
    messages: list[Message] = []
    for i, turn in enumerate(turns):
        speaker = turn.get("from") if isinstance(turn, dict) else None
        role = _SHAREGPT_ROLES.get(str(speaker).lower()) if speaker is not None else None
        if role is None or not isinstance(turn.get("value"), str):
            raise InputError(
                f"conversations[{i}] needs 'from' (human/gpt/system) and a string "
                f"'value', got {turn!r:.80}",
                field=f"conversations[{i}]",
            )
        messages.append({"role": role, "content": turn["value"]})
    return None, messages


def _openai(row: Row, text_field: str) -> tuple[str | None, list[Message] | None]:
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InputError("an OpenAI row needs a non-empty 'messages' list", field="messages")
    return None, messages


SHAPES: dict[str, Callable[[Row, str], tuple[str | None, list[Message] | None]]] = {
    "text": _text,
    "alpaca": _alpaca,
    "sharegpt": _sharegpt,
    "openai": _openai,
}


def row_to_record(
    row: Any,
    *,
    shape: str,
    text_field: str,
    id_field: str,
    default_id: str,
    pos: int,
    source: str,
    line: int,
) -> Record:
    """Map one row onto a Record; raises :class:`InputError` if the row does not fit the shape."""
    if not isinstance(row, dict):
        raise InputError(f"a row must be a JSON object, got {type(row).__name__}", field="row")
    if shape == "auto":
        shape = detect_shape(row, text_field)
    text, messages = SHAPES[shape](row, text_field)
    raw_id = row.get(id_field)
    rid = default_id if raw_id is None or raw_id == "" else str(raw_id)
    return Record(
        id=rid,
        text=text,
        messages=messages,
        metadata={"row": row, "pos": pos, "source": source, "line": line, "shape": shape},
    )
