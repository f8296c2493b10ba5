"""What every compressor returns: the compressed prompt and an account of what was kept."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

from thresher.core.record import Message


@dataclass(slots=True)
class CompressionResult:
    """A compressed prompt and how it relates to the original.

    ``tokens`` are the compression units of the original prompt (words, punctuation runs, CJK
    characters, protected spans, separators) and join back to it exactly; ``kept_mask[i]`` says
    whether ``tokens[i]`` is in the compressed prompt. Counts are in the target model's tokens.

    Attributes:
        text: The compressed prompt (for ``messages`` input, the compressed contents joined by
            newlines).
        origin_tokens: Tokens of the original prompt.
        compressed_tokens: Tokens of the compressed prompt.
        ratio: ``origin_tokens / compressed_tokens`` (3.0 is 3x compression; 1.0 unchanged).
        tokens: The original prompt's units.
        kept_mask: One flag per unit.
        messages: The compressed messages, roles and order preserved, for ``messages`` input.
        method: The compressor that produced this.
        note: Why the prompt was returned unchanged, or what limited the compression.
    """

    text: str
    origin_tokens: int
    compressed_tokens: int
    ratio: float
    tokens: list[str]
    kept_mask: list[bool]
    messages: list[Message] | None = None
    method: str = ""
    note: str | None = None
    scores: list[float] = field(default_factory=list, repr=False)

    @property
    def original(self) -> str:
        return "".join(self.tokens)

    @property
    def rate(self) -> float:
        """The fraction of tokens kept (``1 / ratio``)."""
        return self.compressed_tokens / self.origin_tokens if self.origin_tokens else 1.0

    def kept_spans(self) -> list[tuple[int, int]]:
        """``[start, end)`` character ranges of the original that survive, merged."""
        spans: list[tuple[int, int]] = []
        pos = 0
        for piece, kept in zip(self.tokens, self.kept_mask, strict=True):
            end = pos + len(piece)
            if kept and piece:
                if spans and spans[-1][1] == pos:
                    spans[-1] = (spans[-1][0], end)
                else:
                    spans.append((pos, end))
            pos = end
        return spans

    def recover(self, response: str) -> str:
        """Restore original wording in a model answer given the compressed prompt (LongLLMLingua's
        subsequence recovery); see :func:`thresher.compression.recover.recover`."""
        from thresher.compression.recover import recover

        return recover(self, response)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape the CLI and REST API print."""
        out: dict[str, Any] = {
            "compressed": self.text,
            "origin_tokens": self.origin_tokens,
            "compressed_tokens": self.compressed_tokens,
            "ratio": round(self.ratio, 4),
            "method": self.method,
            "note": self.note,
        }
        if self.messages is not None:
            out["messages"] = self.messages
        return out

    def _repr_html_(self) -> str:
        """Kept units in black, dropped ones greyed and struck through (for notebooks)."""
        parts = []
        for piece, kept in zip(self.tokens, self.kept_mask, strict=True):
            text = html.escape(piece)
            if kept:
                parts.append(text)
            else:
                parts.append(f'<span style="color:#aaa;text-decoration:line-through">{text}</span>')
        head = (
            f"<div><b>{html.escape(self.method)}</b>: {self.origin_tokens} &rarr; "
            f"{self.compressed_tokens} tokens ({self.ratio:.2f}x)</div>"
        )
        return f'{head}<div style="white-space:pre-wrap">{"".join(parts)}</div>'
