"""Heuristic quality rules for instruction data, in the spirit of Gopher, C4 and FineWeb.

Rae et al., 2021 ("Scaling Language Models: Methods, Analysis & Insights from Training Gopher"),
Raffel et al., 2020 (C4) and Penedo et al., 2024 (FineWeb) filter web documents with cheap text
statistics. Instruction rows are short, so each rule here is gated by the amount of text its
statistic needs, and the rules run on the request (instruction + input) and on every response
separately. Every rule that fires is recorded as its own reason; nothing is scored by default.
Length rules are relative to the other responses to the same instruction (a one-word answer is
normal for a classification task and a defect for question generation).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from core.errors import ConfigError
from core.record import Record
from selection.quality.charlm import CharNgramLM
from selection.quality.turns import Turn, group_key, turns

Part = Literal["instruction", "input", "response"]
WORD = re.compile(r"\S+")
EDGE_PUNCT = "\"'()[]{}<>.,;:!?*`“”‘’«»"
GOPHER_STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
# Answers that say nothing: acknowledgements, placeholders and refusals to answer.
NON_ANSWERS = frozenset(
    {
        "ok", "okay", "k", "kk", "sure", "done", "fine", "good", "great", "nice", "noted",
        "agreed", "thanks", "thank you", "ty", "answer", "the answer", "response", "output",
        "none", "nothing", "null", "nil", "na", "n/a", "n a", "idk", "i don't know",
        "unknown", "whatever", "test", "todo", "tbd", "placeholder", "same", "see above",
        "yes", "no", "yeah", "yep", "nope", "true", "false", "correct", "incorrect", "right",
        "wrong",
    }
)  # fmt: skip
POLAR = frozenset({"yes", "no", "yeah", "yep", "nope", "true", "false", "correct", "incorrect"})
# Characters that only appear in text through a decoding error (U+FFFD) or as UTF-8 read as
# Latin-1/cp1252 (mojibake): "Ã©", "Â ", "â€™".
MOJIBAKE = re.compile("\ufffd|Ã[\u0080-\u00bf]|Â[\u0080-\u00bf ]|â€[\u0080-\u00bf™œ“”]")
TRIPLED = re.compile(r"([^\W\d_])\1\1", re.IGNORECASE)
IN_WORD_OK = set("-'’./&_@:+#%,")


def words(text: str) -> list[str]:
    return WORD.findall(text)


def normalise(text: str) -> str:
    """Case-folded, NFKC, punctuation-stripped, single-spaced text for comparisons."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(c if c.isalnum() or c.isspace() or c == "/" else " " for c in text)
    return " ".join(text.split())


def minimal_period(text: str) -> int:
    """Length of the shortest unit whose repetition spells ``text`` (KMP failure function)."""
    n = len(text)
    fail = [0] * n
    k = 0
    for i in range(1, n):
        while k and text[i] != text[k]:
            k = fail[k - 1]
        if text[i] == text[k]:
            k += 1
        fail[i] = k
    return n - fail[-1] if n else 0


def ngram_fractions(tokens: list[str], n: int) -> tuple[float, float]:
    """Gopher's repetition statistics for word n-grams of ``tokens``.

    Returns (characters in the most frequent duplicated n-gram, characters covered by any
    duplicated n-gram), both as fractions of the characters of all words.
    """
    total = sum(len(w) for w in tokens)
    if total == 0 or len(tokens) < n:
        return 0.0, 0.0
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    counts = Counter(grams)
    gram, top = counts.most_common(1)[0]
    top_frac = sum(len(w) for w in gram) * top / total if top > 1 else 0.0
    covered = np.zeros(len(tokens), dtype=bool)
    for i, g in enumerate(grams):
        if counts[g] > 1:
            covered[i : i + n] = True
    dup_frac = sum(len(w) for w, c in zip(tokens, covered, strict=True) if c) / total
    return top_frac, dup_frac


@dataclass(slots=True)
class GroupStats:
    """Response lengths (in words) seen for one instruction template."""

    count: int
    median: float
    q05: float


@dataclass(slots=True)
class Context:
    """What a rule may look at besides the text itself."""

    turn: Turn
    group: GroupStats | None
    language: CharNgramLM | None = None


Check = Callable[[str, Context], str | None]


@dataclass(frozen=True, slots=True)
class Rule:
    """One named check on the request or the response; returns the reason it fires, or None."""

    name: str
    part: Part
    check: Check


# --- rules on any text -------------------------------------------------------------------------


def empty(text: str, ctx: Context) -> str | None:
    return "is empty" if not text.strip() else None


def repeated_unit(
    text: str, ctx: Context, *, min_repeats: int = 3, min_chars: int = 6
) -> str | None:
    """The whole text is one short unit said again and again ("......", "hahaha", "ok ok ok")."""
    flat = " ".join(text.split())
    if len(flat) < min_chars:
        return None
    period = minimal_period(flat)
    repeats = len(flat) / period
    if repeats >= min_repeats:
        return f"is {flat[:period]!r} repeated {repeats:.0f} times"
    return None


def elongated_words(text: str, ctx: Context, *, min_words: int = 2) -> str | None:
    """Letters stretched within words ("thhhhe", "YYYes"): English spelling never triples a
    letter, so two such words (or a text made only of them) are a corruption, not a style.
    All-capital words are skipped: Roman numerals and acronyms ("XIII", "KKK") triple letters."""
    tokens = words(text)
    stretched = [w for w in tokens if TRIPLED.search(w) and not w.isupper() and "www" not in w]
    if stretched and (len(stretched) >= min_words or len(stretched) == len(tokens)):
        return f"has {len(stretched)} words with letters stretched ({stretched[0][:20]!r})"
    return None


def gopher_repetition(text: str, ctx: Context, *, min_words: int = 50) -> str | None:
    """Gopher's duplicate-line and n-gram repetition thresholds."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) >= 3:
        dup = len(lines) - len(set(lines))
        if dup / len(lines) > 0.3:
            return f"repeats {dup} of {len(lines)} lines"
    tokens = [w.lower() for w in words(text)]
    if len(tokens) < min_words:
        return None
    for n, limit in ((2, 0.20), (3, 0.18), (4, 0.16)):
        top, _ = ngram_fractions(tokens, n)
        if top > limit:
            return f"top {n}-gram covers {top:.0%} of characters (limit {limit:.0%})"
    for n, limit in zip(range(5, 11), (0.15, 0.14, 0.13, 0.12, 0.11, 0.10), strict=True):
        _, dup = ngram_fractions(tokens, n)
        if dup > limit:
            return f"duplicated {n}-grams cover {dup:.0%} of characters (limit {limit:.0%})"
    return None


def alphabetic_words(text: str, ctx: Context, *, min_words: int = 50) -> str | None:
    """Gopher: at least 80% of words contain a letter."""
    tokens = words(text)
    if len(tokens) < min_words:
        return None
    share = sum(any(c.isalpha() for c in w) for w in tokens) / len(tokens)
    return f"only {share:.0%} of words have a letter (need 80%)" if share < 0.8 else None


def symbol_ratio(text: str, ctx: Context, *, min_words: int = 50) -> str | None:
    """Gopher: hash marks and ellipses per word at most 0.1."""
    tokens = words(text)
    if len(tokens) < min_words:
        return None
    symbols = text.count("#") + text.count("...") + text.count("…")
    ratio = symbols / len(tokens)
    return f"{ratio:.2f} symbols per word (limit 0.10)" if ratio > 0.1 else None


def stop_words(text: str, ctx: Context, *, min_words: int = 50) -> str | None:
    """Gopher: running English text of some length uses at least two common stop words."""
    tokens = [w.strip(EDGE_PUNCT).lower() for w in words(text)]
    if len(tokens) < min_words:
        return None
    found = GOPHER_STOP_WORDS.intersection(tokens)
    return (
        f"has {len(found)} of Gopher's stop words in {len(tokens)} words"
        if len(found) < 2
        else None
    )


def mean_word_length(text: str, ctx: Context, *, min_words: int = 50) -> str | None:
    """Gopher: mean word length between 3 and 10 characters."""
    tokens = [w.strip(EDGE_PUNCT) for w in words(text)]
    tokens = [w for w in tokens if w]
    if len(tokens) < min_words:
        return None
    mean = sum(len(w) for w in tokens) / len(tokens)
    return f"mean word length {mean:.1f} outside [3, 10]" if not 3 <= mean <= 10 else None


def encoding_errors(text: str, ctx: Context) -> str | None:
    """Replacement characters and mojibake only come from broken decoding."""
    found = MOJIBAKE.findall(text)
    return f"has {len(found)} encoding errors ({found[0]!r})" if found else None


def garbled_words(text: str, ctx: Context, *, min_share: float = 0.2) -> str | None:
    """Words with symbols inside them ("g{7ng", "m]e") mark keyboard or byte noise."""
    tokens = [w.strip(EDGE_PUNCT) for w in words(text)]
    tokens = [w for w in tokens if len(w) >= 2]
    if len(tokens) < 2:
        return None
    bad = [
        w
        for w in tokens
        if any(c.isalpha() for c in w)
        and any(not (c.isalnum() or c in IN_WORD_OK) for c in w[1:-1] or w)
    ]
    share = len(bad) / len(tokens)
    if len(bad) >= 2 and share >= min_share:
        return f"{share:.0%} of words have symbols inside ({bad[0][:20]!r})"
    return None


# --- rules on the response given its request -----------------------------------------------------


def repeats_input(text: str, ctx: Context, *, min_share: float = 0.9) -> str | None:
    """The response copies the request instead of answering it."""
    source = ctx.turn.input if ctx.turn.input.strip() else ctx.turn.instruction
    response, given = normalise(text), normalise(source)
    if not response or not given:
        return None
    if response == given:
        return "repeats the input verbatim"
    r_words, g_words = response.split(), given.split()
    if len(r_words) < 3 or len(r_words) < 0.5 * len(g_words):
        return None
    r_grams = {tuple(r_words[i : i + 3]) for i in range(len(r_words) - 2)}
    g_grams = {tuple(g_words[i : i + 3]) for i in range(len(g_words) - 2)}
    copied = len(r_grams & g_grams) / max(len(r_grams), 1)
    covered = len(r_grams & g_grams) / max(len(g_grams), 1)
    if copied >= min_share and covered >= min_share:
        return f"copies {covered:.0%} of the input"
    return None


def non_answer(text: str, ctx: Context) -> str | None:
    """A placeholder ("OK", "N/A", "Sure") where this instruction gets real answers.

    Yes/no-like words are answers for polar questions, so they count only when the responses to
    the same instruction are usually three words or more.
    """
    said = normalise(text)
    if said not in NON_ANSWERS:
        return None
    if ctx.group is not None and ctx.group.count >= 2:
        if ctx.group.median >= 3:
            return (
                f"is a non-answer ({text.strip()!r}) where answers run {ctx.group.median:.0f} words"
            )
        return None
    return f"is a non-answer ({text.strip()!r})" if said not in POLAR else None


def short_outlier(
    text: str, ctx: Context, *, min_group: int = 30, factor: float = 0.5
) -> str | None:
    """Shorter than half the 5th percentile of the responses to the same instruction."""
    group = ctx.group
    if group is None or group.count < min_group:
        return None
    n = len(words(text))
    if 0 < n < factor * group.q05:
        return (
            f"has {n} words; 95% of the {group.count} responses to this instruction have "
            f"{group.q05:.0f} or more"
        )
    return None


def language_likeness(text: str, ctx: Context, *, min_chars: int = 20) -> str | None:
    """Costs more bits per character, under a character model of the requests, than characters
    drawn independently at their frequencies: noise, mojibake or pseudo-words, not language."""
    model = ctx.language
    flat = text.strip()
    if model is None or len(flat) < min_chars:
        return None
    bits = float(model.bits_per_char([flat[:2000]])[0])
    limit = model.unigram_entropy_
    if bits > limit:
        return (
            f"reads as no language ({bits:.1f} bits/char, above {limit:.1f} for the "
            "requests' letters alone)"
        )
    return None


RuleName = Literal[
    "empty", "repeated_unit", "elongated_words", "gopher_repetition", "alphabetic_words",
    "symbol_ratio", "stop_words", "mean_word_length", "encoding_errors", "garbled_words",
    "language_likeness", "repeats_input", "non_answer", "short_outlier",
]  # fmt: skip
# Which parts each rule reads. Gopher's repetition rules stay off the instruction: templates
# repeat their own task statement on purpose ("Definition: ... Prompt: ..."). An input is the
# user's material (a tokenised blog post, a passage with "ummm"), so only corruption rules
# read it; its style is not the row's defect.
CHECKS: dict[str, tuple[Check, tuple[Part, ...]]] = {
    "empty": (empty, ("response",)),
    "repeated_unit": (repeated_unit, ("instruction", "input", "response")),
    "elongated_words": (elongated_words, ("instruction", "response")),
    "gopher_repetition": (gopher_repetition, ("response",)),
    "alphabetic_words": (alphabetic_words, ("instruction", "response")),
    "symbol_ratio": (symbol_ratio, ("instruction", "response")),
    "stop_words": (stop_words, ("instruction", "response")),
    "mean_word_length": (mean_word_length, ("instruction", "response")),
    "encoding_errors": (encoding_errors, ("instruction", "input", "response")),
    "garbled_words": (garbled_words, ("instruction", "input", "response")),
    "language_likeness": (language_likeness, ("response",)),
    "repeats_input": (repeats_input, ("response",)),
    "non_answer": (non_answer, ("response",)),
    "short_outlier": (short_outlier, ("response",)),
}
DEFAULT_RULES: tuple[str, ...] = tuple(CHECKS)


def build_rules(names: Sequence[str]) -> list[Rule]:
    """Rules by name, each on every part it applies to."""
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise ConfigError(
            f"Unknown heuristic rule(s) {unknown}; use some of {sorted(CHECKS)}.", field="rules"
        )
    return [Rule(name, part, CHECKS[name][0]) for name in names for part in CHECKS[name][1]]


@dataclass
class HeuristicFilter:
    """Applies the rules to every turn of every record; a row is dropped if any rule fires.

    ``fit`` learns what the length and language rules compare against: the response lengths
    per instruction template, and a character model of the requests. A filter that was not
    fitted learns them from the batch it is given. Each record gets
    ``scores["<name>.flags"]`` (rules fired) and ``scores["<name>.bits_per_char"]``.

    Args:
        rules: names from :data:`CHECKS` (all by default).
        name: the step's name in recipes and reports.
    """

    rules: Sequence[str] = DEFAULT_RULES
    name: str = "heuristics"
    group_stats_: dict[str, GroupStats] | None = field(default=None, init=False, repr=False)
    language_: CharNgramLM | None = field(default=None, init=False, repr=False)
    _instruction_cache: dict[str, list[str]] = field(default_factory=dict, init=False, repr=False)

    def fit(self, records: Sequence[Record]) -> HeuristicFilter:
        """Learn per-template response lengths and the requests' character model."""
        build_rules(self.rules)
        lengths: dict[str, list[int]] = defaultdict(list)
        requests: set[str] = set()
        for record in records:
            key = group_key(record)
            for turn in turns(record):
                requests.update(t for t in (turn.instruction, turn.input) if t.strip())
                if turn.response.strip():
                    lengths[key].append(len(words(turn.response)))
        self.group_stats_ = {
            key: GroupStats(len(v), float(np.median(v)), float(np.quantile(v, 0.05)))
            for key, v in lengths.items()
        }
        if requests and "language_likeness" in self.rules:
            self.language_ = CharNgramLM().fit(sorted(requests))
        self._instruction_cache = {}
        return self

    def reasons(self, record: Record) -> list[str]:
        """Every rule that fires on ``record``, as ``"<rule>: <part> <why>"``."""
        found = turns(record)
        if not found:
            return ["empty: response is missing (the row has no answer)"]
        group = (self.group_stats_ or {}).get(group_key(record))
        rules = build_rules(self.rules)
        instruction_rules = [r for r in rules if r.part == "instruction"]
        input_rules = [r for r in rules if r.part == "input"]
        out: list[str] = []
        first = found[0]
        if not first.prompt.strip():
            out.append("empty: request is empty")
        if first.instruction not in self._instruction_cache:
            ctx = Context(first, group, self.language_)
            self._instruction_cache[first.instruction] = [
                f"{r.name}: instruction {why}"
                for r in instruction_rules
                if (why := r.check(first.instruction, ctx))
            ]
        out.extend(self._instruction_cache[first.instruction])
        for turn in found:
            ctx = Context(turn, group, self.language_)
            where = "response" if len(found) == 1 else f"response {turn.index + 1}"
            out.extend(
                f"{r.name}: input {why}" for r in input_rules if (why := r.check(turn.input, ctx))
            )
            for rule in (r for r in rules if r.part == "response"):
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
        mask = np.ones(len(records), dtype=bool)
        why: list[str | None] = []
        for i, record in enumerate(records):
            found = self.reasons(record)
            record.scores[f"{self.name}.flags"] = float(len(found))
            mask[i] = not found
            why.append("; ".join(found) if found else None)
        return mask, why
