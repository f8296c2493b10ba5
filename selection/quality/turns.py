"""Instruction/response pairs of a record: one per assistant turn.

Alpaca rows (``instruction``/``input``/``output``, kept in ``metadata`` by the readers or given
as the record's messages), ShareGPT and OpenAI messages all reduce to a list of :class:`Turn`.
Quality steps score each turn and aggregate, so a multi-turn conversation is judged by all of
its answers, not only the last one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.record import Record, message_text

ALPACA_KEYS = ("instruction", "output")
"""Fields that mark a row (or ``metadata``) as Alpaca-shaped."""


@dataclass(frozen=True, slots=True)
class Turn:
    """One answer and what it answers.

    ``instruction`` is the task (an Alpaca instruction, or the system prompt and first user
    message of a chat); ``input`` the row-specific part of the request (Alpaca ``input``, or the
    user message a chat answer replies to); ``response`` the answer itself.
    """

    instruction: str
    input: str
    response: str
    index: int = 0

    @property
    def prompt(self) -> str:
        """Everything the response is conditioned on, instruction first."""
        return "\n\n".join(p for p in (self.instruction, self.input) if p.strip())


def alpaca_fields(record: Record) -> Mapping[str, Any] | None:
    """The Alpaca fields of a record, if its metadata (or its kept original row) has them."""
    for candidate in (record.metadata, record.metadata.get("row"), record.metadata.get("raw")):
        if isinstance(candidate, Mapping) and all(k in candidate for k in ALPACA_KEYS):
            return candidate
    return None


def turns(record: Record) -> list[Turn]:
    """Every (instruction, input, response) of ``record``; empty if it has no answer at all.

    A record with ``text`` only and no Alpaca metadata is a document: it becomes one turn whose
    response is the text, so document-level rules still apply to it.
    """
    fields = alpaca_fields(record)
    if fields is not None:
        return [
            Turn(
                str(fields.get("instruction") or ""),
                str(fields.get("input") or ""),
                str(fields.get("output") or ""),
            )
        ]
    if record.messages is None:
        return [Turn("", "", record.text or "")]
    system = [message_text(m) for m in record.messages if m.get("role") in ("system", "developer")]
    out: list[Turn] = []
    first_user: str | None = None
    last_user = ""
    for message in record.messages:
        role = message.get("role")
        if role == "user":
            last_user = message_text(message)
            first_user = last_user if first_user is None else first_user
        elif role == "assistant":
            # The task is the system prompt, else the opening request; a follow-up turn's own
            # request is its input.
            instruction = "\n\n".join(system) if system else (first_user or "")
            given = last_user if (system or len(out) > 0) else ""
            out.append(Turn(instruction, given, message_text(message), index=len(out)))
    if not out and first_user is not None:
        # A request with no answer: one turn with an empty response, flagged by the rules.
        out.append(Turn("\n\n".join(system) if system else first_user, "", ""))
    return out


def group_key(record: Record) -> str:
    """Rows that share an instruction template (same task) share this key."""
    found = turns(record)
    instruction = found[0].instruction if found else ""
    return " ".join(instruction.split()).casefold()
