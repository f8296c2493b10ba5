"""Instruction/response pairs of a record: one per assistant turn.

Alpaca rows (``instruction``/``input``/``output``, kept in ``metadata`` by the readers or given
as the record's messages), ShareGPT and OpenAI messages all reduce to a list of :class:`Turn`.
Quality steps score each turn and aggregate, so a multi-turn conversation is judged by all of
its answers, not only the last one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from thresher.core.record import Record, message_text

ALPACA_KEYS = ("instruction", "output")
"""Fields that mark a row (or ``metadata``) as Alpaca-shaped."""


@dataclass(frozen=True, slots=True)
class Turn:
    """One answer and what it answers.

    ``instruction`` is the task (an Alpaca instruction, or the first paragraph of a chat's
    opening request); ``input`` the row-specific part of the request (Alpaca ``input``, the rest
    of the opening request, or the user message a follow-up answer replies to); ``response`` the
    answer itself. A system prompt is context, not the task: rows often share one.
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


def split_request(text: str) -> tuple[str, str]:
    """(instruction, input) of a user message: its first paragraph is the task, the rest is
    the row's own material. Alpaca rows rendered as chat ("instruction\\n\\ninput", as the
    readers and most converters write them) split back into their two fields."""
    head, sep, rest = text.strip().partition("\n\n")
    return head.strip(), rest.strip()


_CACHE: dict[int, tuple[Record, list[Turn]]] = {}
_CACHE_SIZE = 4096


def turns(record: Record) -> list[Turn]:
    """Every (instruction, input, response) of ``record`` (see :func:`parse_turns`); several
    steps ask about the same batch's records, so the latest few thousand are remembered."""
    hit = _CACHE.get(id(record))
    if hit is not None and hit[0] is record:
        return hit[1]
    found = parse_turns(record)
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.clear()
    _CACHE[id(record)] = (record, found)
    return found


def parse_turns(record: Record) -> list[Turn]:
    """Every (instruction, input, response) of ``record``; empty if it has no answer at all.

    The same content gives the same turns whether it is read as Alpaca, ShareGPT or OpenAI
    messages: the instruction is the first paragraph of the opening request (an Alpaca
    ``instruction``), never a system prompt shared by every row; the input is the rest of that
    request (an Alpaca ``input``), or a follow-up turn's own user message. A record with
    ``text`` only and no Alpaca metadata is a document: it becomes one turn whose response is
    the text, so document-level rules still apply to it.
    """
    fields = alpaca_fields(record)
    if fields is not None:
        instruction = str(fields.get("instruction") or "")
        given = str(fields.get("input") or "")
        request = f"{instruction}\n\n{given}" if given.strip() else instruction
        return [Turn(*split_request(request), str(fields.get("output") or ""))]
    if record.messages is None:
        return [Turn("", "", record.text or "")]
    out: list[Turn] = []
    task: str | None = None
    last_user: str | None = None
    for message in record.messages:
        role = message.get("role")
        if role == "user":
            last_user = message_text(message)
        elif role == "assistant":
            if task is None:
                task, given = split_request(last_user or "")
            else:
                given = (last_user or "").strip()
            out.append(Turn(task, given, message_text(message), index=len(out)))
            last_user = None
    if not out and last_user is not None:
        # A request with no answer: one turn with an empty response, flagged by the rules.
        out.append(Turn(*split_request(last_user), ""))
    return out


def group_key(record: Record) -> str:
    """Rows that share an instruction template (same task) share this key."""
    found = turns(record)
    return _template_key(found[0].instruction if found else "")


@lru_cache(maxsize=4096)  # a template's rows all ask for the same key
def _template_key(instruction: str) -> str:
    return " ".join(instruction.split()).casefold()
