"""Code compressed by whole lines: never a token inside a line.

A code segment (a fenced block, or lines :func:`thresher.compression.markup.code_blocks`
reads as code) loses, in this order and only until it fits its target: blank lines, then runs
of comment lines (``#``, ``//``, ``--``, block comments, docstrings standing alone), longest
first, then long literal lines (a data string or array on one line), longest first. Every
line that stays is byte-identical to the original's. A run of dropped comments or literals is
replaced by one comment line in the code's own syntax naming the count and a handle
(``# … 12 lines elided [thr:ab12cd34] …``); blank lines go without one. A run shorter than
two markers is kept (dropping it would save little).

Code whose identifiers the question names stays verbatim (the question is about it), as do
the fence lines of a fenced block.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from thresher.compression.elision import Shrunk, elide, marker
from thresher.compression.scan import FENCE_MARKERS
from thresher.compression.terms import STOPWORDS, Terms, tokens

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
HASH_LANGS = frozenset(
    "python py sh bash shell zsh ruby rb perl r yaml yml toml make makefile dockerfile "
    "powershell ps1 nim julia elixir ex".split()
)
DASH_LANGS = frozenset("sql lua haskell hs ada".split())
KEYWORDS = frozenset(
    """def class import from return if elif else for while try except finally with raise
    yield const let var function fn func package public private protected static void int
    string bool true false null none self this new async await struct enum impl pub use
    print len str dict list range type interface export default lambda""".split()
)
LONG_LINE = 160
MARKER_LINE = 48  # about what a marker line costs


@dataclass(slots=True)
class _Run:
    kind: str  # "comment" or "literal"
    first: int
    last: int
    chars: int


def compress_code(
    text: str,
    target_tokens: int,
    count: Callable[[str], int],
    question: str = "",
    tokens_now: int | None = None,
) -> Shrunk:
    """Drop whole lines of ``text`` (a code segment) until it fits ``target_tokens``, or as
    far as the rules allow; see the module doc. ``tokens_now`` is ``count(text)`` if known."""
    tokens_now = count(text) if tokens_now is None else tokens_now
    if tokens_now <= target_tokens or names_identifier(text, question):
        return Shrunk(text)
    lines = text.split("\n")
    head, tail, comment = _layout(lines)
    drop = [False] * len(lines)
    per_char = tokens_now / max(len(text), 1)
    excess = (tokens_now - target_tokens) / per_char  # characters to lose
    for i in range(head, tail):
        if not lines[i].strip() and excess > 0:
            drop[i] = True
            excess -= len(lines[i]) + 1
    runs = sorted(_runs(lines, head, tail, comment), key=lambda r: (r.kind != "comment", -r.chars))
    chosen: list[_Run] = []
    for run in runs:
        if excess <= 0:
            break
        if run.chars < 2 * MARKER_LINE:
            continue  # a marker would cost about what it saves
        chosen.append(run)
        excess -= run.chars - MARKER_LINE
    return _render(lines, drop, chosen, comment)


def names_identifier(code: str, question: str) -> bool:
    """Whether ``question`` names an identifier that occurs in ``code`` (a word of three or
    more characters that is neither a keyword nor a stopword, or any named value)."""
    if not question.strip():
        return False
    terms = Terms.of(question)
    wanted = {t for t in terms.weak if len(t) >= 3 and t not in KEYWORDS and t not in STOPWORDS}
    wanted |= {p for p in terms.phrases() if " " not in p and len(p) >= 2}
    if not wanted:
        return False
    lines = code.split("\n")
    head, tail, comment = _layout(lines)
    for line in lines[head:tail]:
        if line.lstrip().startswith((comment, '"""', "'''", "/*", "*")):
            continue  # words in comments and docstrings name nothing
        for m in _IDENT.finditer(line):
            word = m.group().lower()
            if word in wanted or any(part in wanted for part in tokens(word.replace("_", " "))):
                return True
    return False


def _layout(lines: list[str]) -> tuple[int, int, str]:
    """The body's line range (inside the fence of a fenced block) and the comment syntax."""
    first = lines[0].lstrip(" \t")
    if len(lines) >= 2 and first[:3] in FENCE_MARKERS:
        head, tail, lang = 1, len(lines) - 1, first[3:].strip().lower()
    else:
        head, tail, lang = 0, len(lines), ""
    return head, tail, _comment_syntax(lang, lines[head:tail])


def _comment_syntax(lang: str, lines: list[str]) -> str:
    if lang in HASH_LANGS:
        return "#"
    if lang in DASH_LANGS:
        return "--"
    if lang:
        return "//"
    hashes = sum(1 for line in lines if line.lstrip().startswith("#"))
    slashes = sum(1 for line in lines if line.lstrip().startswith("//"))
    preprocessor = any(line.startswith(("#include", "#define")) for line in lines)
    return "#" if hashes > slashes and not preprocessor else "//"


def _runs(lines: list[str], head: int, tail: int, comment: str) -> list[_Run]:
    """Runs of comment lines (blank lines between them join the run) and single long
    literal lines, as candidates to drop."""
    out: list[_Run] = []
    current: _Run | None = None
    block: str | None = None  # the closing mark of an open block comment or docstring
    for i in range(head, tail):
        line = lines[i]
        body = line.strip()
        is_comment = block is not None
        if block is not None:
            if block in body:
                block = None
        elif body.startswith(comment) or (comment == "#" and body.startswith("#")):
            is_comment = True
        elif body.startswith("/*") and comment == "//":
            is_comment = True
            block = None if "*/" in body[2:] else "*/"
        elif body[:3] in ('"""', "'''") and comment == "#":
            is_comment = True  # a docstring standing alone
            block = None if body[3:].rstrip().endswith(body[:3]) and len(body) >= 6 else body[:3]
        if is_comment or (not body and current is not None):
            if current is None:
                current = _Run("comment", i, i, 0)
            current.last = i if body else current.last
            current.chars += len(line) + 1
            continue
        if current is not None:
            out.append(current)
            current = None
        if len(line) > LONG_LINE and _literal(body):
            out.append(_Run("literal", i, i, len(line) + 1))
    if current is not None:
        out.append(current)
    return out


def _literal(body: str) -> bool:
    """A line that is mostly one string or number literal (data rather than logic)."""
    quoted = 0
    inside = False
    for ch in body:
        if ch in "\"'":
            inside = not inside
        elif inside:
            quoted += 1
    digits = sum(ch.isdigit() or ch in ",. " for ch in body)
    return quoted > 0.6 * len(body) or digits > 0.7 * len(body) or " " not in body[:120]


def _render(lines: list[str], drop: list[bool], runs: list[_Run], comment: str) -> Shrunk:
    starts = {r.first: r for r in runs}
    out: list[str] = []
    elided = []
    i = 0
    while i < len(lines):
        run = starts.get(i)
        if run is not None:
            original = "\n".join(lines[run.first : run.last + 1])
            gone = elide("lines", f"lines {run.first + 1}-{run.last + 1}", original)
            elided.append(gone)
            indent = lines[run.first][: len(lines[run.first]) - len(lines[run.first].lstrip())]
            count = run.last - run.first + 1
            out.append(f"{indent}{comment} {marker(count, 'lines', gone.handle)}")
            i = run.last + 1
            continue
        if not drop[i]:
            out.append(lines[i])
        i += 1
    return Shrunk("\n".join(out), elided)
