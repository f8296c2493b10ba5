"""The heuristic filter: fitted over a whole dataset from mergeable statistics, then applied.

What the rules compare against is learned from the data: the response lengths of each
instruction template (for ``non_answer`` and ``short_outlier``) and a character model of the
requests (for ``language_likeness``). Both are functions of counts that add up across shards,
so a job that reads its input in one batch or in a thousand, in one process or on a cluster,
fits the same filter and keeps the same rows.

Statistics are rows ``(kind, a, b, count)`` of an int64 array:

- kind 0: ``a`` a template's hash, ``b`` a response length in words; summed.
- kind n in 1..4: ``b`` the code of a character n-gram of an input (of the text itself, for
  a document with no request); summed.
- kind 4+n: ``a`` a template's hash, ``b`` an n-gram code of that template's instruction; a
  template's counts are the same wherever it is seen, so shards merge them by maximum (each
  template counts once, not once per row, as it is one text).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from thresher.core.record import Record
from thresher.selection.quality.charlm import CharNgramLM, count_ngrams, merge_counts
from thresher.selection.quality.heuristics import (
    DEFAULT_RULES,
    MIN_TRAIN_CHARS,
    Context,
    GroupStats,
    Rule,
    build_rules,
    letters,
    words,
)
from thresher.selection.quality.turns import Turn, alpaca_fields, group_key, turns

ORDER = 4
INPUT_CHARS = 2000  # of each input, enough to learn its language's letters
FLUENCY_CHARS = 500  # of a row, enough to price a near-duplicate's typos
LENGTH_CAP = (1 << 20) - 1
INSTRUCTION_CACHE = 4096  # instructions whose verdicts are remembered (templates recur)


@lru_cache(maxsize=4096)  # one key per template, asked for on each of its rows
def template_hash(key: str) -> int:
    """A 40-bit hash of a template key (exact in the statistics' int64 columns)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=5).digest(), "big")


def merge_rule_stats(*tables: np.ndarray) -> np.ndarray:
    """Merge :meth:`HeuristicFilter.fit_stats` arrays: sorted, summed (templates: maximum)."""
    table = np.concatenate([t for t in tables if len(t)] or [np.zeros((0, 4), np.int64)])
    if not len(table):
        return table.astype(np.int64)
    table = table[np.lexsort((table[:, 2], table[:, 1], table[:, 0]))]
    keys = table[:, :3]
    starts = np.flatnonzero(np.r_[True, (keys[1:] != keys[:-1]).any(axis=1)])
    summed = np.add.reduceat(table[:, 3], starts)
    biggest = np.maximum.reduceat(table[:, 3], starts)
    kind = keys[starts, 0]
    return np.column_stack([keys[starts], np.where(kind > ORDER, biggest, summed)])


@dataclass
class HeuristicFilter:
    """Applies the rules to every turn of every record; a row is dropped if any rule fires.

    ``fit`` (or ``fit_from_stats`` over merged ``fit_stats``) learns what the length and
    language rules compare against. Calling ``keep`` on a filter that was never fitted fits it
    on the records given (convenient for one in-memory batch; jobs always fit on everything
    first). Each record gets ``scores["<name>.flags"]`` (rules fired).

    Args:
        rules: names from :data:`thresher.selection.quality.heuristics.CHECKS` (all by default).
        name: the step's name in recipes and reports.
    """

    rules: Sequence[str] = DEFAULT_RULES
    name: str = "heuristics"
    group_stats_: dict[int, GroupStats] | None = field(default=None, init=False, repr=False)
    language_: CharNgramLM | None = field(default=None, init=False, repr=False)
    _instruction_cache: dict[str, list[str]] = field(default_factory=dict, init=False, repr=False)
    _by_part: tuple[tuple[str, ...], tuple[list[Rule], ...]] | None = field(
        default=None, init=False, repr=False
    )

    # --- fit -------------------------------------------------------------------------------

    def fit(self, records: Sequence[Record]) -> HeuristicFilter:
        """Learn per-template response lengths and the requests' character model."""
        self.fit_from_stats(self.fit_stats(records))
        return self

    def fit_stats(self, records: Sequence[Record]) -> np.ndarray:
        """This batch's statistics (see the module docstring); :func:`merge_rule_stats` merges."""
        build_rules(self.rules)
        lengths: list[tuple[int, int]] = []
        inputs: list[str] = []
        instructions: dict[int, str] = {}
        for record in records:
            found = turns(record)
            key = template_hash(group_key(record))
            if found and found[0].instruction.strip():
                instructions.setdefault(key, found[0].instruction)
            if record.messages is None and alpaca_fields(record) is None:
                inputs.append(record.content[:INPUT_CHARS])  # documents: a model of them all
            for turn in found:
                if turn.input.strip():
                    inputs.append(turn.input[:INPUT_CHARS])
                if turn.response.strip():
                    lengths.append((key, min(len(words(turn.response)), LENGTH_CAP)))
        parts = [np.zeros((0, 4), np.int64)]
        if lengths:
            pairs, counts = np.unique(np.array(lengths, dtype=np.int64), axis=0, return_counts=True)
            parts.append(np.column_stack([np.zeros(len(pairs), np.int64), pairs, counts]))
        if "language_likeness" in self.rules:
            grams = count_ngrams(inputs, ORDER)
            zero = np.zeros(len(grams), np.int64)
            parts.append(np.column_stack([grams[:, 0], zero, grams[:, 1:]]))
            for key, text in instructions.items():
                grams = count_ngrams([text], ORDER)
                column = np.full(len(grams), key, dtype=np.int64)
                parts.append(np.column_stack([grams[:, 0] + ORDER, column, grams[:, 1:]]))
        return merge_rule_stats(*parts)

    def fit_from_stats(self, total: np.ndarray) -> None:
        """Build the template statistics and the character model from merged statistics."""
        total = merge_rule_stats(np.asarray(total, dtype=np.int64).reshape(-1, 4))
        lengths = total[total[:, 0] == 0]
        self.group_stats_ = {}
        if len(lengths):
            keys = lengths[:, 1]
            starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
            ends = np.r_[starts[1:], len(keys)]
            for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
                values = np.repeat(lengths[s:e, 2], lengths[s:e, 3])
                self.group_stats_[int(keys[s])] = GroupStats(
                    len(values), float(np.median(values)), float(np.quantile(values, 0.05))
                )
        chars = total[total[:, 0] > 0]
        self.language_ = None
        if len(chars) and "language_likeness" in self.rules:
            n = np.where(chars[:, 0] > ORDER, chars[:, 0] - ORDER, chars[:, 0])
            table = merge_counts(np.column_stack([n, chars[:, 2], chars[:, 3]]))
            if (table[:, 0] == 1).any():
                self.language_ = CharNgramLM(order=ORDER).from_counts(table)
        self._instruction_cache = {}

    def fit_notes(self) -> list[str]:
        """What the fitted statistics leave unjudged, for the job's summary."""
        if "language_likeness" not in self.rules:
            return []
        chars = 0 if self.language_ is None else self.language_.train_chars
        if chars >= MIN_TRAIN_CHARS:
            return []
        return [
            f"{self.name}: language_likeness judged no row: the requests hold {chars:,} "
            f"characters, fewer than the {MIN_TRAIN_CHARS:,} it needs to model their language"
        ]

    # --- apply -----------------------------------------------------------------------------

    def fluency(self, records: Sequence[Record]) -> np.ndarray:
        """Bits per character of each row's input and responses (raw: typos count) under the
        requests' character model: lower reads more like the data's language (NaN: no model)."""
        if self.language_ is None:
            return np.full(len(records), np.nan)
        texts = [
            "\n".join(p for t in turns(r) for p in (t.input, t.response))[:FLUENCY_CHARS]
            for r in records
        ]
        return self.language_.bits_per_char(texts)

    def _language(self, found: list[list[Turn]]) -> tuple[np.ndarray, np.ndarray]:
        """Bits per character and known share of every response's letters, batch at once."""
        texts = [letters(t.response) for ts in found for t in ts]
        if self.language_ is None or not texts:
            nan = np.full(len(texts), np.nan)
            return nan, nan
        texts = [t if len(t) >= 20 else "" for t in texts]
        return self.language_.bits_per_char(texts), self.language_.known_share(texts)

    def _rules_by_part(self) -> tuple[list[Rule], ...]:
        """The rules on the instruction, the input and the response (built once per rule set,
        not once per row)."""
        names = tuple(self.rules)
        if self._by_part is None or self._by_part[0] != names:
            rules = build_rules(names)
            parts = tuple(
                [r for r in rules if r.part == p] for p in ("instruction", "input", "response")
            )
            self._by_part = (names, parts)
        return self._by_part[1]

    def reasons(self, record: Record, found: list[Turn] | None = None,
                bits: Sequence[float] = (), known: Sequence[float] = ()) -> list[str]:  # fmt: skip
        """Every rule that fires on ``record``, as ``"<rule>: <part> <why>"``."""
        if found is None:
            found = turns(record)
            bits, known = (v.tolist() for v in self._language([found]))
        if not found:
            return ["empty: response is missing (the row has no answer)"]
        group = (self.group_stats_ or {}).get(template_hash(group_key(record)))
        instruction_rules, input_rules, response_rules = self._rules_by_part()
        out: list[str] = []
        first = found[0]
        document = record.messages is None and alpaca_fields(record) is None
        if not first.prompt.strip() and not document:  # a document has no request to miss
            out.append("empty: request is empty")
        if first.instruction not in self._instruction_cache:
            if len(self._instruction_cache) >= INSTRUCTION_CACHE:
                self._instruction_cache.clear()  # memory bounded by templates seen lately
            ctx = Context(first, group, self.language_)
            self._instruction_cache[first.instruction] = [
                f"{r.name}: instruction {why}"
                for r in instruction_rules
                if (why := r.check(first.instruction, ctx))
            ]
        out.extend(self._instruction_cache[first.instruction])
        for j, turn in enumerate(found):
            ctx = Context(turn, group, self.language_, bits[j], known[j])
            where = "response" if len(found) == 1 else f"response {turn.index + 1}"
            out.extend(
                f"{r.name}: input {why}" for r in input_rules if (why := r.check(turn.input, ctx))
            )
            for rule in response_rules:
                why = rule.check(turn.response, ctx)
                if why:
                    out.append(f"{rule.name}: {where} {why}")
                    if rule.name == "empty":
                        break  # nothing else to say about an empty answer
        return out

    def keep(self, records: Sequence[Record]) -> tuple[np.ndarray, list[str | None]]:
        """Keep mask and, for each dropped record, every reason joined by '; '."""
        if self.group_stats_ is None:
            self.fit(records)
        found = [turns(r) for r in records]
        bits, known = (v.tolist() for v in self._language(found))
        mask = np.ones(len(records), dtype=bool)
        why: list[str | None] = []
        at = 0
        for i, record in enumerate(records):
            n = len(found[i])
            reasons = self.reasons(record, found[i], bits[at : at + n], known[at : at + n])
            at += n
            record.scores[f"{self.name}.flags"] = float(len(reasons))
            mask[i] = not reasons
            why.append("; ".join(reasons) if reasons else None)
        return mask, why
