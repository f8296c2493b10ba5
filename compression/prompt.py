"""The three input shapes, validated and cut into parts that are kept verbatim or compressed.

A string is one context; a list of contexts comes with an optional instruction (before) and
question (after), both kept; OpenAI ``messages`` keep every role and their order, and a
:data:`RolePolicy` says which messages are compressed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from thresher.core.errors import InputError
from thresher.core.record import Message, is_text_part, message_text, validate_messages

Policy = Literal["keep", "compress", "auto"]
RolePolicy = Mapping[str, Policy]
"""Per role: ``keep`` verbatim, ``compress``, or ``auto`` (kept unless longer than
``long_message_tokens``). ``last_user`` names the final user turn, which defaults to ``auto``."""

DEFAULT_POLICY: dict[str, Policy] = {
    "system": "keep",
    "developer": "keep",
    "last_user": "auto",
    "user": "compress",
    "assistant": "compress",
    "tool": "compress",
    "function": "compress",
}
SEPARATOR = "\n\n"


@dataclass(slots=True)
class Part:
    """A piece of the prompt: kept verbatim (instruction, question, separator) or compressed."""

    text: str
    kind: str  # "instruction", "context", "question", "separator", or a message role
    compress: bool
    message: int | None = None  # index into the messages, for messages input


@dataclass(slots=True)
class Prompt:
    """A validated prompt as an ordered list of parts; ``question`` conditions LongLLMLingua."""

    parts: list[Part]
    question: str
    messages: list[Message] | None = None

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts)


def check_text(value: Any, field: str, *, allow_empty: bool = False) -> str:
    """A string that is valid UTF-8 (no lone surrogates) and, unless allowed, not blank."""
    if not isinstance(value, str):
        raise InputError(f"{field} must be a string, got {type(value).__name__}.", field=field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(
            f"{field} is not valid UTF-8 (character {exc.start}: {value[exc.start]!r}); send "
            "UTF-8 text.",
            field=field,
        ) from None
    if not allow_empty and not value.strip():
        raise InputError(f"{field} is empty; give the text to compress.", field=field)
    return value


def build_prompt(
    context: str | Sequence[str] | None,
    *,
    instruction: str | None = None,
    question: str | None = None,
    messages: list[Message] | None = None,
    policy: RolePolicy | None = None,
    count: Any = None,
    long_message_tokens: int = 1024,
) -> Prompt:
    """Validate one of the input shapes and cut it into parts."""
    if messages is not None:
        if context is not None:
            raise InputError("Give context or messages, not both.", field="messages")
        return _from_messages(messages, policy, count, long_message_tokens, question)
    if context is None:
        raise InputError(
            "Give a context (a string or a list of strings) or messages.", field="context"
        )
    contexts = [context] if isinstance(context, str) else context
    if not isinstance(contexts, Sequence) or not contexts:
        raise InputError("context is empty; give the text to compress.", field="context")
    checked = [
        check_text(c, "context" if isinstance(context, str) else f"context[{i}]")
        for i, c in enumerate(contexts)
    ]
    instruction = check_text(instruction or "", "instruction", allow_empty=True)
    question = check_text(question or "", "question", allow_empty=True)
    parts: list[Part] = []

    def add(part: Part) -> None:
        if parts:
            parts.append(Part(SEPARATOR, "separator", False))
        parts.append(part)

    if instruction.strip():
        add(Part(instruction, "instruction", False))
    for c in checked:
        add(Part(c, "context", True))
    if question.strip():
        add(Part(question, "question", False))
    return Prompt(parts, question.strip())


def _from_messages(
    messages: Any, policy: RolePolicy | None, count: Any, long_tokens: int, question: str | None
) -> Prompt:
    validate_messages(messages, field_name="messages")
    if not any(message_text(m).strip() for m in messages):
        raise InputError("Every message is empty; give messages with content.", field="messages")
    rules = {**DEFAULT_POLICY, **(policy or {})}
    for role, rule in rules.items():
        if rule not in ("keep", "compress", "auto"):
            raise InputError(
                f"policy[{role!r}] is {rule!r}; use 'keep', 'compress' or 'auto'.",
                field=f"policy.{role}",
            )
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
    parts: list[Part] = []
    for i, m in enumerate(messages):
        content = m.get("content")
        text = check_text(message_text(m), f"messages[{i}].content", allow_empty=True)
        rule = rules["last_user"] if i == last_user else rules.get(m["role"], "keep")
        if rule == "auto":
            rule = "compress" if count is not None and count(text) > long_tokens else "keep"
        # A string or text parts are compressed (parts become one string); a list with an image
        # or audio part passes untouched.
        text_only = isinstance(content, list) and all(is_text_part(p) for p in content)
        squeeze = (
            rule == "compress" and (isinstance(content, str) or text_only) and bool(text.strip())
        )
        if parts:
            parts.append(Part("\n", "separator", False))
        parts.append(Part(text, m["role"], squeeze, message=i))
    if question is None:
        # The last paragraph of the last user turn is where a request usually puts its ask.
        last = message_text(messages[last_user]).strip() if last_user >= 0 else ""
        question = last.rsplit(SEPARATOR, 1)[-1][-1000:]
    return Prompt(parts, question.strip(), messages=[dict(m) for m in messages])
