"""The one record type that flows through every Thresher step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from thresher.core.errors import InputError

Message = dict[str, Any]
"""An OpenAI chat message: ``{"role": ..., "content": ...}`` (tool and name keys allowed)."""

ROLES = frozenset({"system", "user", "assistant", "tool", "developer", "function"})


@dataclass(slots=True)
class Record:
    """A document, instruction row, demonstration or pool entry.

    Exactly one of ``text`` and ``messages`` is normally set; readers map their formats onto
    this shape and keep the original row in ``metadata`` so writers can map back losslessly.
    Scorers write ``scores[name]``; filters and selectors only read them.
    """

    id: str
    text: str | None = None
    messages: list[Message] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise InputError(f"Record id must be a non-empty string, got {self.id!r}.", field="id")
        if self.text is None and self.messages is None:
            raise InputError(
                f"Record {self.id!r} has neither text nor messages; give one of them.",
                field="text",
            )
        if self.messages is not None:
            validate_messages(self.messages, field_name=f"record {self.id!r} messages")

    @property
    def content(self) -> str:
        """The text of the record; for chat records, the message contents joined by newlines."""
        if self.text is not None:
            return self.text
        return "\n".join(message_text(m) for m in self.messages or [])


def message_text(message: Message) -> str:
    """The plain text of a message, whose content may be a string or a list of parts: its
    :func:`content_texts` joined by line breaks."""
    return "\n".join(content_texts(message.get("content")))


def content_texts(content: Any) -> list[str]:
    """A message content's texts in order: the string itself, or the text of each text part
    (:func:`is_text_part`); none for no content."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    return [part["text"] for part in content if is_text_part(part)]


def is_text_part(part: Any) -> bool:
    """Whether a content part is text (``{"type": "text", "text": "..."}``), not an image,
    audio or a malformed part."""
    return (
        isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
    )


def validate_messages(messages: Any, *, field_name: str = "messages") -> list[Message]:
    """Check OpenAI-style messages; raise :class:`InputError` naming the bad item."""
    if not isinstance(messages, list) or not messages:
        raise InputError(f"{field_name} must be a non-empty list of messages.", field=field_name)
    for i, m in enumerate(messages):
        where = f"{field_name}[{i}]"
        if not isinstance(m, dict):
            raise InputError(f"{where} must be an object with role and content.", field=where)
        role = m.get("role")
        if role not in ROLES:
            raise InputError(
                f"{where}.role is {role!r}; use one of {sorted(ROLES)}.", field=f"{where}.role"
            )
        content = m.get("content")
        if content is None and not m.get("tool_calls") and not m.get("function_call"):
            raise InputError(f"{where} has no content.", field=f"{where}.content")
        if content is not None and not isinstance(content, str | list):
            raise InputError(
                f"{where}.content must be a string or a list of parts.", field=f"{where}.content"
            )
    return messages
