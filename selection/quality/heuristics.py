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

import ast
import json
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

from thresher.core.errors import ConfigError
from thresher.selection.quality.charlm import CharNgramLM
from thresher.selection.quality.repetition import minimal_period, ngram_fractions
from thresher.selection.quality.turns import Turn

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
# Of those, the words that are also labels of some task (polar questions, sentiment, "none of
# the above", unanswerable): placeholders only where this task's answers are long.
LABEL_LIKE = frozenset(
    {
        "yes", "no", "yeah", "yep", "nope", "true", "false", "correct", "incorrect", "right",
        "wrong", "none", "nothing", "unknown", "good", "great", "nice", "fine", "same", "agreed",
        "i don't know", "null",
    }
)  # fmt: skip
# Characters that only appear in text through a decoding error (U+FFFD) or as UTF-8 read as
# Latin-1/cp1252 (mojibake): "Ã©", "Â ", "â€™".
MOJIBAKE = re.compile("\ufffd|Ã[\u0080-\u00bf]|Â[\u0080-\u00bf ]|â€[\u0080-\u00bf™œ“”]")
TRIPLED = re.compile(r"([^\W\d_])\1\1", re.IGNORECASE)
IN_WORD_OK = set("-'’./&_@:+#%,")
NON_WORD = re.compile(r"[^\w\s/]|_")
LETTER_RUN = re.compile(r"[^\W\d_]+")
LIST_LINE = re.compile(r"\s*(?:[-*•+>#]|\d+[.):]|[a-zA-Z][.)]\s)")
CODE_CHARS = "{}[]()<>;=$\\^~`"
# A character that is neither a letter, a digit nor a symbol words carry ("e-mail", "5'9").
SYMBOL = re.compile("[^\\w" + re.escape("".join(sorted(IN_WORD_OK))) + "]")
_OK = re.escape("".join(sorted(IN_WORD_OK)))
# A symbol with a character on both sides, or in a two-character word: every garbled word has
# one ("g{7ng", "(a$)", "$a"), and prose mostly has none ("game?", "(hello)").
_SYM = f"[^\\w\\s{_OK}]"
INNER_SYMBOL = re.compile(f"\\S{_SYM}\\S|(?<!\\S)\\S{_SYM}(?!\\S)|(?<!\\S){_SYM}\\S(?!\\S)")
SYMBOL_CHAR = re.compile(_SYM)


def has_inner_symbol(text: str) -> bool:
    """Whether ``INNER_SYMBOL`` matches ``text``, found from the symbols' neighbours: a scan
    for one character class, then a look at a few characters around each symbol found (the
    three-way pattern tried at every position costs several times more on long inputs)."""
    n = len(text)
    for match in SYMBOL_CHAR.finditer(text):
        i = match.start()
        left = i > 0 and not text[i - 1].isspace()
        right = i + 1 < n and not text[i + 1].isspace()
        if left and right:
            return True  # a symbol inside a word
        if left and (i < 2 or text[i - 2].isspace()):
            return True  # the second of a two-character word
        if right and not left and (i + 2 >= n or text[i + 2].isspace()):
            return True  # the first of a two-character word
    return False


def words(text: str) -> list[str]:
    return WORD.findall(text)


@lru_cache(maxsize=64)  # the rules on one response all ask for its words
def _tokens(text: str) -> tuple[str, ...]:
    return tuple(WORD.findall(text))


@lru_cache(maxsize=4096)  # templates recur on every row of their task
def normalise(text: str) -> str:
    """Case-folded, NFKC, punctuation-stripped, single-spaced text for comparisons."""
    # ASCII is its own NFKC form, and its case folding is lower-casing.
    text = text.lower() if text.isascii() else unicodedata.normalize("NFKC", text).casefold()
    return " ".join(NON_WORD.sub(" ", text).split())


def normalise_lines(parts: Sequence[str]) -> str:
    """``normalise("\\n".join(parts))``, from each part's own normalised form (cached: the
    rules and the dedup keys normalise the same inputs and responses). A line break is a
    boundary that normalisation, case folding and word splitting never cross."""
    return " ".join(n for n in map(normalise, parts) if n)


def letters(text: str, limit: int = 2000) -> str:
    """The text's runs of letters, space-separated: what a character model of language prices
    (braces, digits and punctuation of structured answers are not language to judge)."""
    return " ".join(LETTER_RUN.findall(text[: 2 * limit]))[:limit]


@lru_cache(maxsize=1024)  # several rules ask about the same response
def is_structured(text: str) -> bool:
    """A JSON or Python literal, code, a table, a list, or mostly digits and symbols.

    Structured answers are legitimate (a dict of date parts, a function, a table of results);
    the web-text rules of Gopher were not made for them."""
    flat = text.strip()
    if not flat:
        return False
    if "```" in flat:
        return True
    if flat[0] in "{[(" and len(flat) < 20000:
        body = flat.rstrip(".;, \n")
        try:
            json.loads(body)
            return True
        except ValueError:
            pass
        try:
            ast.literal_eval(body)
            return True
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
            pass
    lines = [line for line in flat.splitlines() if line.strip()]
    if len(lines) >= 2:
        shaped = sum(bool(LIST_LINE.match(line)) or "|" in line or "\t" in line for line in lines)
        if shaped >= 0.5 * len(lines):
            return True
    visible = sum(map(len, flat.split()))
    code = sum(flat.count(c) for c in CODE_CHARS)
    alpha = sum(map(len, LETTER_RUN.findall(flat)))
    return code > 0.05 * visible or alpha < 0.5 * visible


def is_prose(text: str, ctx: object = None) -> bool:
    return not is_structured(text)


def is_english(text: str) -> bool:
    """Latin-script, space-separated text (where Gopher's English statistics mean something)."""
    alpha = "".join(LETTER_RUN.findall(text))
    return bool(alpha) and len(alpha.encode("ascii", "ignore")) >= 0.9 * len(alpha)


@dataclass(slots=True)
class GroupStats:
    """Response lengths (in words) seen for one instruction template."""

    count: int
    median: float
    q05: float


@dataclass(slots=True)
class Context:
    """What a rule may look at besides the text itself.

    ``bits`` and ``known`` are the response's bits per character under the character model of
    the requests (over its letters only) and the share of its letters the model knows; the
    filter computes them for a whole batch at once.
    """

    turn: Turn
    group: GroupStats | None
    language: CharNgramLM | None = None
    bits: float = float("nan")
    known: float = float("nan")


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
    # A unit repeated 3+ times makes the first third recur within the first third: a C-speed
    # search rules most texts out before the exact (KMP) period.
    third = len(flat) // min_repeats
    at = flat.find(flat[:third], 1)
    if at < 0 or at > third:
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
    if not TRIPLED.search(text):  # a tripled letter in a word is one in the text, and back
        return None
    tokens = _tokens(text)
    stretched = [w for w in tokens if TRIPLED.search(w) and not w.isupper() and "www" not in w]
    if stretched and (len(stretched) >= min_words or len(stretched) == len(tokens)):
        return f"has {len(stretched)} words with letters stretched ({stretched[0][:20]!r})"
    return None


def gopher_repetition(text: str, ctx: Context, *, min_words: int = 50) -> str | None:
    """Gopher's duplicate-line and n-gram repetition statistics, at twice Gopher's limits.

    Gopher's limits were set for web pages; an answer is short and reuses its own input's
    names and phrases on purpose (a story about "the old man", a list of "Step N: ..."), so
    only text that is mostly one phrase said again is a defect here."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) >= 5:
        dup = len(lines) - len(set(lines))
        if dup / len(lines) > 0.6:
            return f"repeats {dup} of {len(lines)} lines"
    if len(_tokens(text)) < min_words:
        return None
    tokens = [w.lower() for w in _tokens(text)]
    for n, limit in ((2, 0.40), (3, 0.36), (4, 0.32)):
        top, _ = ngram_fractions(tokens, n, top=True, dup=False)
        if top > limit:
            return f"top {n}-gram covers {top:.0%} of characters (limit {limit:.0%})"
    for n, limit in ((5, 0.45), (10, 0.30)):
        _, dup = ngram_fractions(tokens, n, top=False, dup=True)
        if dup > limit:
            return f"duplicated {n}-grams cover {dup:.0%} of characters (limit {limit:.0%})"
    return None


def alphabetic_words(text: str, ctx: Context, *, min_words: int = 50) -> str | None:
    """Gopher: at least 80% of words contain a letter (prose only: tables and code differ)."""
    tokens = _tokens(text)
    if len(tokens) < min_words or not is_prose(text, ctx):
        return None
    share = sum(any(c.isalpha() for c in w) for w in tokens) / len(tokens)
    return f"only {share:.0%} of words have a letter (need 80%)" if share < 0.8 else None


def symbol_ratio(text: str, ctx: Context, *, min_words: int = 50) -> str | None:
    """Gopher: hash marks and ellipses per word at most 0.1 (prose only)."""
    tokens = _tokens(text)
    if len(tokens) < min_words or not is_prose(text, ctx):
        return None
    symbols = text.count("#") + text.count("...") + text.count("…")
    ratio = symbols / len(tokens)
    return f"{ratio:.2f} symbols per word (limit 0.10)" if ratio > 0.1 else None


def stop_words(text: str, ctx: Context, *, min_words: int = 50) -> str | None:
    """Gopher: running English text of some length uses at least two common stop words."""
    if len(_tokens(text)) < min_words:
        return None
    tokens = [w.strip(EDGE_PUNCT).lower() for w in _tokens(text)]
    if not is_prose(text, ctx) or not is_english(text):
        return None
    found = GOPHER_STOP_WORDS.intersection(tokens)
    return (
        f"has {len(found)} of Gopher's stop words in {len(tokens)} words"
        if len(found) < 2
        else None
    )


def mean_word_length(text: str, ctx: Context, *, min_words: int = 50) -> str | None:
    """Gopher: mean word length between 3 and 10 characters."""
    if len(_tokens(text)) < min_words:  # stripping only removes words
        return None
    tokens = [w.strip(EDGE_PUNCT) for w in _tokens(text)]
    tokens = [w for w in tokens if w]
    if len(tokens) < min_words or not is_prose(text, ctx) or not is_english(text):
        return None
    mean = sum(len(w) for w in tokens) / len(tokens)
    return f"mean word length {mean:.1f} outside [3, 10]" if not 3 <= mean <= 10 else None


def encoding_errors(text: str, ctx: Context) -> str | None:
    """Replacement characters and mojibake only come from broken decoding.

    In an answer any one is a defect; an input is the user's material (a scraped review with
    one broken character is still a fine task), so there it takes three or 1% of the text."""
    found = MOJIBAKE.findall(text)
    if found and text is ctx.turn.input and len(found) < max(3, 0.01 * len(text)):
        return None
    return f"has {len(found)} encoding errors ({found[0]!r})" if found else None


def garbled_words(text: str, ctx: Context, *, min_share: float = 0.2) -> str | None:
    """Words with symbols inside them ("g{7ng", "m]e") mark keyboard or byte noise."""
    if not has_inner_symbol(text):
        return None
    tokens = [w.strip(EDGE_PUNCT) for w in _tokens(text)]
    tokens = [w for w in tokens if len(w) >= 2]
    if len(tokens) < 2:
        return None
    bad = [w for w in tokens if SYMBOL.search(w[1:-1] or w) and LETTER_RUN.search(w)]
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
    return f"is a non-answer ({text.strip()!r})" if said not in LABEL_LIKE else None


def short_outlier(
    text: str, ctx: Context, *, min_group: int = 30, factor: float = 0.5
) -> str | None:
    """Shorter than half the 5th percentile of the responses to the same instruction."""
    group = ctx.group
    if group is None or group.count < min_group:
        return None
    n = len(_tokens(text))
    if 0 < n < factor * group.q05:
        return (
            f"has {n} words, where 95% of the {group.count} responses to this instruction have "
            f"{group.q05:.0f} or more"
        )
    return None


# A model of fewer characters of requests than this cannot tell language from pseudo-words: on
# 8,507 characters of requests in seven languages, clean answers cost up to 8.6 bits/char and a
# pseudo-word answer 8.8.
MIN_TRAIN_CHARS = 10_000


def language_likeness(
    text: str,
    ctx: Context,
    *,
    min_known: float = 0.8,
    margin: float = 1.5,
    min_train_chars: int = MIN_TRAIN_CHARS,
) -> str | None:
    """Its words cost more bits per character, under a character model of the requests, than
    letters drawn independently at their frequencies: noise or pseudo-words, not language.

    Only the letters are priced (a JSON object, code or a date is judged by its words, not its
    braces), only text of at least 20 letters, and only in a script the requests use (a model
    of English requests cannot judge an answer in Japanese: another language is no defect).
    ``margin`` bits above the unigram entropy leave room for a small dataset's thin model:
    clean answers stay below it, letters strung at random cost far more."""
    model = ctx.language
    bits = ctx.bits
    if model is None or not np.isfinite(bits) or not ctx.known >= min_known:
        return None
    if model.train_chars < min_train_chars:
        return None  # too little text to know what this data's language looks like
    limit = model.unigram_entropy_ + margin
    if bits > limit:
        return (
            f"reads as no language ({bits:.1f} bits/char, above {limit:.1f}: the requests' "
            f"letters alone plus {margin:g})"
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
