"""Reversible elision: what compression leaves out of a structure is named by a short handle.

Every span that structure-aware compression drops (items of a JSON array, entries of an
object, the tail of a long string, lines of code) is replaced by a marker that says how much
went and carries a handle, e.g. ``… 37 items elided [thr:ab12cd34] …``. The handle is derived
from what was elided and where, so the same message compresses to the same bytes on every turn
(a backend's prefix cache keeps working), and the original span is kept in a store
(any :class:`thresher.compression.conversation.MessageCache`: the same get/put seam as the
message cache) under a key that includes the tenant, so one tenant's handle never finds
another's span.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Literal

ElisionKind = Literal["items", "entries", "chars", "lines"]
HANDLE_PREFIX = "thr:"
HANDLE_HEX = 8
# A handle as it appears in a marker: fixed length, so finding them is one linear scan.
HANDLE_IN_TEXT = re.compile(r"\[thr:([0-9a-f]{8})\]")
_BARE_HANDLE = re.compile(r"(?:thr:)?([0-9a-f]{8})")


@dataclass(frozen=True, slots=True)
class Elided:
    """One elided span: ``content`` is the original text, ``where`` says where it was
    (a JSON path with an index range, or a line range of code)."""

    handle: str
    kind: ElisionKind
    where: str
    content: str

    def record(self) -> dict[str, Any]:
        """What the originals store keeps (JSON) and ``GET /v1/compress/originals`` returns."""
        return {
            "handle": self.handle,
            "kind": self.kind,
            "where": self.where,
            "content": self.content,
        }


@dataclass(slots=True)
class Shrunk:
    """A text after structure-aware compression, with the spans it elided."""

    text: str
    elided: list[Elided] = field(default_factory=list)


def elide(kind: ElisionKind, where: str, content: str) -> Elided:
    """An :class:`Elided` whose handle is a digest of ``where`` and ``content``."""
    digest = hashlib.sha256(f"{kind}\0{where}\0{content}".encode("utf-8", "surrogatepass"))
    return Elided(HANDLE_PREFIX + digest.hexdigest()[:HANDLE_HEX], kind, where, content)


_ONE = {"items": "item", "entries": "entry", "chars": "char", "lines": "line"}


def marker(count: int, noun: str, handle: str) -> str:
    """The text that stands for an elided span: ``… 37 items elided [thr:ab12cd34] …``."""
    return f"… {count} {_ONE.get(noun, noun) if count == 1 else noun} elided [{handle}] …"


def handles_in(text: str) -> list[str]:
    """The handles of the markers in ``text``, in order, each once."""
    return list(dict.fromkeys(HANDLE_PREFIX + m.group(1) for m in HANDLE_IN_TEXT.finditer(text)))


def parse_handle(value: str) -> str | None:
    """``thr:ab12cd34`` (or ``ab12cd34``) as a handle, or None when it is not one."""
    m = _BARE_HANDLE.fullmatch(value.strip())
    return HANDLE_PREFIX + m.group(1) if m else None


def originals_key(tenant: str, handle: str) -> str:
    """The store key of a handle's original: the tenant is part of it."""
    return f"originals\0{tenant}\0{handle}"
