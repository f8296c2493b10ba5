"""The Compressor protocol and the flow every LLMLingua-family method shares.

validate -> count -> (skip short prompts) -> cut contexts into units -> method-specific
selection under the budget -> fit to the target with the target model's tokenizer -> assemble.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np

from thresher.compression.budget import fit_masks, resolve_target
from thresher.compression.prompt import Prompt, RolePolicy, build_prompt
from thresher.compression.result import CompressionResult
from thresher.compression.units import ProtectOptions, Units, split_units, unit_of_chars
from thresher.core.errors import InputError
from thresher.core.record import Message
from thresher.core.tokens import TokenCounter

DEFAULT_MIN_TOKENS = 200


@runtime_checkable
class Compressor(Protocol):
    """Compresses a prompt to a rate or a token target (see :class:`BaseCompressor`)."""

    name: str

    def compress(
        self,
        context: str | Sequence[str] | None = None,
        *,
        instruction: str | None = None,
        question: str | None = None,
        messages: list[Message] | None = None,
        rate: float | None = None,
        target_tokens: int | None = None,
        policy: RolePolicy | None = None,
    ) -> CompressionResult: ...


@dataclass(slots=True)
class Doc:
    """A compressible part: its units, their target-token costs, and its scorer tokens."""

    part: int
    units: Units
    costs: np.ndarray
    forced: np.ndarray
    ids: list[int] = field(default_factory=list)
    tok_unit: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def unit_sums(self, token_values: np.ndarray) -> np.ndarray:
        """Per-unit sums of a per-token array (self-information, say)."""
        return np.bincount(self.tok_unit, weights=token_values, minlength=len(self.units))


@dataclass(slots=True)
class Selection:
    """A method's decision: a keep mask and a score per unit of each doc, an output order."""

    masks: list[np.ndarray]
    scores: list[np.ndarray]
    order: list[int] | None = None  # doc indices in output order (LongLLMLingua reorders)
    note: str | None = None


def join_kept(pieces: Sequence[str], mask: Sequence[bool]) -> str:
    """The kept pieces joined; where a dropped gap held whitespace and the next kept piece has
    none of its own (a word after a dropped quote mark), one space keeps the words apart."""
    out: list[str] = []
    gap_space = False
    for piece, kept in zip(pieces, mask, strict=True):
        if not kept:
            gap_space = gap_space or any(ch.isspace() for ch in piece)
            continue
        if gap_space and out and piece[:1] and not piece[0].isspace():
            out.append(" ")
        out.append(piece)
        gap_space = False
    return "".join(out)


ModelKind = Literal["scoring-lm", "token-classifier"]


class BaseCompressor:
    """Shared flow; subclasses implement :meth:`select` and declare what they need.

    Class attributes (capabilities, read by the factory and the conversation compressor instead
    of method names): ``model`` is the kind of model ``scorer`` must be, a causal LM's
    :class:`thresher.core.scoring.TokenScorer` (``scoring-lm``) or a
    :class:`thresher.core.token_classifier.TokenClassifier` (``token-classifier``), and ``ranks_by``
    the other model it takes, ``embedder`` or none; ``self_information`` says that on a text of
    one segment the method keeps the units of most self-information per target token under the
    scoring LM (LLMLingua's rule), so that many short texts can be scored in one batched pass
    with the same result.

    Args:
        scorer: A :class:`thresher.core.scoring.TokenScorer` (the small causal LM).
        counter: The target model's :class:`thresher.core.tokens.TokenCounter`; rates are met in
            its tokens.
        min_tokens: Prompts shorter than this are returned unchanged (ratio 1.0).
        protect: Which spans are kept verbatim.
        segment_tokens: Scorer tokens per segment of iterative compression.
        long_message_tokens: An ``auto`` message (the last user turn by default) longer than
            this is compressed; shorter ones are kept verbatim.
    """

    name: ClassVar[str] = ""
    model: ClassVar[ModelKind] = "scoring-lm"
    ranks_by: ClassVar[Literal["embedder"] | None] = None
    self_information: ClassVar[bool] = False

    def __init__(
        self,
        scorer: Any,
        counter: TokenCounter,
        *,
        min_tokens: int = DEFAULT_MIN_TOKENS,
        protect: ProtectOptions | None = None,
        segment_tokens: int = 256,
        long_message_tokens: int = 1024,
    ) -> None:
        if min_tokens < 0:
            raise InputError(f"min_tokens must be >= 0, got {min_tokens}.", field="min_tokens")
        if segment_tokens <= 0:
            raise InputError(
                f"segment_tokens must be positive, got {segment_tokens}.", field="segment_tokens"
            )
        self.scorer = scorer
        self.counter = counter
        self.min_tokens = min_tokens
        self.protect = protect or ProtectOptions()
        self.segment_tokens = segment_tokens
        self.long_message_tokens = long_message_tokens

    def select(self, docs: list[Doc], budget: int, prompt: Prompt) -> Selection:
        raise NotImplementedError

    def compress(
        self,
        context: str | Sequence[str] | None = None,
        *,
        instruction: str | None = None,
        question: str | None = None,
        messages: list[Message] | None = None,
        rate: float | None = None,
        target_tokens: int | None = None,
        policy: RolePolicy | None = None,
    ) -> CompressionResult:
        """Compress a string, a list of contexts (with instruction and question), or messages.

        Args:
            context: One text or a list of contexts (documents, demonstrations).
            instruction: Kept verbatim before the contexts.
            question: Kept verbatim after them; question-aware methods condition on it.
            messages: OpenAI chat messages instead of ``context``; roles and order are kept.
            rate: Fraction of tokens to keep, in (0, 1]; 0.33 is 3x compression. Default 0.5.
            target_tokens: Token budget for the whole prompt instead of ``rate``.
            policy: Per-role rules for messages (see
                :data:`thresher.compression.prompt.RolePolicy`).

        Returns:
            The compressed prompt; unchanged, with ratio 1.0 and a ``note``, when it is
            shorter than ``min_tokens`` or already within the target.
        """
        prompt = build_prompt(
            context,
            instruction=instruction,
            question=question,
            messages=messages,
            policy=policy,
            count=self.counter.count,
            long_message_tokens=self.long_message_tokens,
        )
        origin = self.counter.count(prompt.text)
        target = resolve_target(origin, rate, target_tokens)
        if origin < self.min_tokens:
            return self._unchanged(
                prompt, origin, f"{origin} tokens is below min_tokens={self.min_tokens}"
            )
        if target >= origin:
            return self._unchanged(prompt, origin, f"target {target} >= the prompt's {origin}")
        costs: dict[str, int] = {}
        docs = [self._doc(i, p.text, costs) for i, p in enumerate(prompt.parts) if p.compress]
        if not docs:
            return self._unchanged(prompt, origin, "nothing is compressible under the policy")
        fixed = origin - sum(int(d.costs.sum()) for d in docs)
        selection = self.select(docs, max(0, target - fixed), prompt)
        forced = [d.forced for d in docs]
        fit_masks(
            selection.masks,
            selection.scores,
            [d.costs for d in docs],
            forced,
            target,
            lambda masks: self.counter.count(self._assemble(prompt, docs, masks, selection)[0]),
        )
        if prompt.messages is not None:  # a compressed message never becomes empty
            for m, s in zip(selection.masks, selection.scores, strict=True):
                if not m.any() and len(m):
                    m[int(np.argmax(s))] = True
        text, messages_out = self._assemble(prompt, docs, selection.masks, selection)
        compressed = self.counter.count(text)
        note = selection.note
        floor = int(sum(d.costs[d.forced].sum() for d in docs)) + fixed
        if compressed > target * 1.1 and floor > target * 0.9:
            note = (note + "; " if note else "") + (
                f"kept text ({floor} tokens: instruction, question, protected spans, kept "
                f"messages) leaves no room for the target {target}"
            )
        tokens, mask, scores = self._account(prompt, docs, selection)
        return CompressionResult(
            text=text,
            origin_tokens=origin,
            compressed_tokens=compressed,
            ratio=origin / max(compressed, 1),
            tokens=tokens,
            kept_mask=mask,
            messages=messages_out,
            method=self.name,
            note=note,
            scores=scores,
        )

    # -- helpers shared by the methods -------------------------------------------------------

    def _doc(self, part: int, text: str, memo: dict[str, int]) -> Doc:
        units = split_units(text, self.protect)
        costs = []
        for piece in units.pieces:
            if piece not in memo:
                memo[piece] = self.counter.count(piece)
            costs.append(memo[piece])
        units.costs = costs
        return Doc(
            part, units, np.asarray(costs, dtype=np.float64), np.asarray(units.forced, dtype=bool)
        )

    def tokenize(self, docs: Sequence[Doc]) -> None:
        """Fill each doc's scorer token ids and the unit each token belongs to."""
        for d in docs:
            if d.ids:
                continue
            ids, offsets = self.scorer.encode_with_offsets(d.units.text)
            d.ids = ids
            d.tok_unit = np.asarray(unit_of_chars(d.units, offsets), dtype=np.int64)

    def _assemble(
        self, prompt: Prompt, docs: list[Doc], masks: list[np.ndarray], selection: Selection
    ) -> tuple[str, list[Message] | None]:
        by_part = {d.part: join_kept(d.units.pieces, m) for d, m in zip(docs, masks, strict=True)}
        outputs = [(i, by_part.get(i, p.text)) for i, p in enumerate(prompt.parts)]
        if selection.order is not None:
            slots = [i for i, _ in outputs if i in by_part]
            order = [docs[k].part for k in selection.order]
            moved = dict(zip(slots, order, strict=True))
            outputs = [(i, by_part[moved[i]] if i in moved else t) for i, t in outputs]
        parts = prompt.parts
        if prompt.messages is not None:
            messages = []
            for i, text in outputs:
                if parts[i].message is not None:
                    message = dict(prompt.messages[parts[i].message])
                    if i in by_part:
                        message["content"] = text
                    messages.append(message)
            joined = "\n".join(t for i, t in outputs if parts[i].kind != "separator")
            return joined, messages
        kept = [t for i, t in outputs if parts[i].kind != "separator" and t.strip()]
        sep = next((p.text for p in parts if p.kind == "separator"), "")
        return sep.join(kept), None

    def _account(
        self, prompt: Prompt, docs: list[Doc], selection: Selection
    ) -> tuple[list[str], list[bool], list[float]]:
        """Units, kept flags and scores over the original prompt, in its order."""
        by_part = {d.part: k for k, d in enumerate(docs)}
        tokens: list[str] = []
        mask: list[bool] = []
        scores: list[float] = []
        for i, part in enumerate(prompt.parts):
            if i in by_part:
                k = by_part[i]
                tokens += docs[k].units.pieces
                mask += [bool(x) for x in selection.masks[k]]
                scores += [float(x) for x in selection.scores[k]]
            else:
                tokens.append(part.text)
                mask.append(True)
                scores.append(float("inf"))
        return tokens, mask, scores

    def _unchanged(self, prompt: Prompt, origin: int, why: str) -> CompressionResult:
        text = prompt.text
        return CompressionResult(
            text=text,
            origin_tokens=origin,
            compressed_tokens=origin,
            ratio=1.0,
            tokens=[p.text for p in prompt.parts],
            kept_mask=[True] * len(prompt.parts),
            messages=[dict(m) for m in prompt.messages] if prompt.messages is not None else None,
            method=self.name,
            note=f"returned unchanged: {why}",
        )
