"""The structure of Markdown, transcripts and code inside prose: the spans compression keeps.

Only the prose inside a structure is compressed; its frame passes through byte for byte:

- **Markdown** (:func:`markdown_spans`): ATX and setext headings (whole lines), list and
  blockquote markers, table rows' pipes and separator rows, link brackets with their targets
  (``[`` and ``](https://...)``; the link text is prose), whole images (``![alt](url)``),
  reference definitions, inline code spans, horizontal rules.
- **Dialogue** (:func:`speaker_labels`): a speaker label at the start of a line (``Alice:``,
  ``[10:02] Bob:``, ``Dr. Smith:``, ``USER:``, ``**Alice**:``), in a text with at least two
  such lines (one ``Note:`` is not a transcript).
- **Code without a fence** (:func:`code_blocks`): runs of lines that read as code (keywords,
  assignments, calls, lines ending in a bracket or semicolon), at least
  :data:`MIN_CODE_LINES` of them.

Every scanner looks at each line once (and a link's brackets once), so the work is linear in
the text whatever it holds.
"""

from __future__ import annotations

import re

from thresher.compression.scan import line_starts

MIN_CODE_LINES = 3
_LINK_MARKS = re.compile(r"!?\[|\]\(|\)|\n")
_CODE_START = frozenset(
    """def class import from return if elif else for while try except finally with raise
    yield const let var function fn func package public private protected static void int
    using namespace struct enum impl pub async await switch case break continue assert
    #include #define #import print printf console.log echo export interface type select
    insert update delete create""".split()
)
_CODE_ENDS = ("{", "}", ";", "):", "=>", "->", "[", "(", "];", "});", "},", "),")
# An operator or a call (a name right before a bracket): literal alternatives, no backtracking.
_CODE_MARK = re.compile(r"==|!=|\+=|-=|->|=>|::|&&|\|\||\b[A-Za-z_]\w*\(| = ")


def _lines(text: str) -> list[tuple[int, int]]:
    starts = line_starts(text)
    ends = [s - 1 for s in starts[1:]] + [len(text)]
    return list(zip(starts, ends, strict=True))


# -- Markdown --------------------------------------------------------------------------------


def markdown_spans(text: str) -> list[tuple[int, int]]:
    """Spans of Markdown structure in ``text`` (see the module doc)."""
    out: list[tuple[int, int]] = []
    lines = _lines(text)
    previous_blank = True
    table_open = False
    for n, (a, b) in enumerate(lines):
        line = text[a:b]
        body = line.lstrip(" ")
        indent = len(line) - len(body)
        blank = not body.strip()
        if indent <= 3 and not blank:
            if _underline(body) and not previous_blank and n:
                out += [lines[n - 1], (a, b)]  # a setext heading: both lines
            elif _heading(body) or _rule(body):
                out.append((a, b))
            elif body.startswith("[") and "]:" in body[:200]:
                out.append((a, b))  # a reference definition
            else:
                marker = _list_marker(body)
                if marker:
                    out.append((a, a + indent + marker))
        if "|" in line:
            if _table_separator(line):
                out.append((a, b))
                if n and "|" in text[lines[n - 1][0] : lines[n - 1][1]]:
                    out += _pipes(text, *lines[n - 1])
                table_open = True
            elif table_open:
                out += _pipes(text, a, b)
        else:
            table_open = False
        previous_blank = blank
    out += _links(text)
    out += _inline_code(text)
    return out


def _heading(body: str) -> bool:
    hashes = len(body) - len(body.lstrip("#"))
    return 1 <= hashes <= 6 and (len(body) == hashes or body[hashes] in " \t")


def _rule(body: str) -> bool:
    chars = body.replace(" ", "").rstrip("\r")
    return len(chars) >= 3 and len(set(chars)) == 1 and chars[0] in "-*_"


def _underline(body: str) -> bool:
    chars = body.rstrip(" \t\r")
    return len(chars) >= 2 and len(set(chars)) == 1 and chars[0] in "=-"


def _list_marker(body: str) -> int:
    """Characters of a list or blockquote marker at the start of ``body`` (0 if none)."""
    if body[:1] in "-*+" and body[1:2] in (" ", "\t"):
        size = 2
    elif body[:1] == ">":
        size = 1
    else:
        head = body[:10]
        digits = len(head) - len(head.lstrip("0123456789"))
        if not digits or body[digits : digits + 1] not in (".", ")"):
            return 0
        if body[digits + 1 : digits + 2] not in (" ", "\t"):
            return 0
        size = digits + 2
    if body[size : size + 3] in ("[ ]", "[x]", "[X]"):
        size += 3  # a task list's box
    return size


def _table_separator(line: str) -> bool:
    cells = line.strip().strip("|").split("|")
    return len(cells) >= 1 and all(
        (c := cell.strip()) and c.strip(":") and set(c.strip(":")) == {"-"} for cell in cells
    )


def _pipes(text: str, a: int, b: int) -> list[tuple[int, int]]:
    out = []
    p = text.find("|", a, b)
    while p >= 0:
        out.append((p, p + 1))
        p = text.find("|", p + 1, b)
    return out


def _links(text: str) -> list[tuple[int, int]]:
    """``[`` and ``](target)`` of each link, whole ``![alt](target)`` images: one pass over
    the brackets, a link's text and target each within one line."""
    out: list[tuple[int, int]] = []
    opens: list[tuple[int, bool]] = []  # "[" positions on this line, and whether an image
    pending: tuple[int, int, bool] | None = None  # (open, "](" position, image)
    for m in _LINK_MARKS.finditer(text):
        mark, p = m.group(), m.start()
        if mark == "\n":
            opens.clear()
            pending = None
        elif mark in ("[", "!["):
            if pending is None:
                opens.append((p, mark == "!["))
        elif mark == "](":
            if pending is None and opens:
                start, image = opens.pop()
                pending = (start, p, image)
                opens.clear()
        elif pending is not None:  # ")" closes the target
            start, middle, image = pending
            out += [(start, p + 1)] if image else [(start, start + 1), (middle, p + 1)]
            pending = None
    return out


def _inline_code(text: str) -> list[tuple[int, int]]:
    out = []
    for a, b in _lines(text):
        p = text.find("`", a, b)
        while p >= 0:
            q = text.find("`", p + 1, b)
            if q < 0:
                break
            if q > p + 1:
                out.append((p, q + 1))
            p = text.find("`", q + 1, b)
    return out


# -- dialogue --------------------------------------------------------------------------------


def speaker_labels(text: str) -> list[tuple[int, int]]:
    """Speaker labels at the starts of lines, when at least two lines have one."""
    found = []
    for a, b in _lines(text):
        end = label_end(text[a : min(b, a + 80)])
        if end:
            found.append((a, a + end))
    return found if len(found) >= 2 else []


def label_end(line: str) -> int:
    """Characters of the speaker label that opens ``line`` (with its colon), or 0."""
    i = len(line) - len(line.lstrip(" \t"))
    i = _timestamp_end(line, i)
    while line[i : i + 1] in (" ", "\t") and i < len(line):
        i += 1
    for wrap in ("**", "<"):
        if line.startswith(wrap, i):
            i += len(wrap)
            break
    words = 0
    start = i
    if not line[i : i + 1].isalpha():
        return 0
    while words < 4:
        while i < len(line) and (line[i].isalnum() or line[i] in ".'’-_"):
            i += 1
        words += 1
        if line[i : i + 1] == " " and (line[i + 1 : i + 2].isalnum()):
            i += 1
            continue
        break
    if i - start > 40:
        return 0
    for wrap in ("**", ">"):
        if line.startswith(wrap, i):
            i += len(wrap)
            break
    if line[i : i + 1] != ":" or line[i + 1 : i + 2] not in ("", " ", "\t", "\r"):
        return 0
    return i + 1


def _timestamp_end(line: str, i: int) -> int:
    """After a timestamp such as ``[10:02]``, ``(00:01:30)`` or ``10:02:05.5`` at ``i``."""
    j = i + 1 if line[i : i + 1] in ("[", "(") else i
    digits = 0
    colons = 0
    while j < len(line) and (line[j].isdigit() or line[j] in ":."):
        colons += line[j] == ":"
        digits += line[j].isdigit()
        j += 1
    if not colons or digits < 3 or line[j - 1 : j] == ":":
        return i
    if j > i and line[i : i + 1] in ("[", "("):
        if line[j : j + 1] not in ("]", ")"):
            return i
        j += 1
    return j


# -- code without a fence --------------------------------------------------------------------


def code_blocks(text: str) -> list[tuple[int, int]]:
    """Runs of at least :data:`MIN_CODE_LINES` lines that read as code (blank and comment
    lines inside a run belong to it), as whole lines."""
    out: list[tuple[int, int]] = []
    run_start = run_end = -1
    codeish = 0
    for a, b in _lines(text):
        kind = _line_kind(text[a:b])
        if kind == "code":
            if run_start < 0:
                run_start = a
            run_end = b
            codeish += 1
        elif kind == "prose":
            if codeish >= MIN_CODE_LINES:
                out.append((run_start, run_end))
            run_start = run_end = -1
            codeish = 0
    if codeish >= MIN_CODE_LINES:
        out.append((run_start, run_end))
    return out


def _line_kind(line: str) -> str:
    """``code``, ``prose``, or ``neutral`` (blank lines and comments join either)."""
    body = line.strip()
    if not body or body.startswith(("//", "/*", "*", "#!")):
        return "neutral"
    if body.startswith("#") and not body.startswith(("#include", "#define", "#import")):
        return "neutral"  # a comment or a Markdown heading
    first = body.split(None, 1)[0].rstrip(":(")
    if first in _CODE_START and (" " in body or body.endswith((":", ";", "{"))):
        return "code"
    if body.endswith(_CODE_ENDS) or body in ("}", ")", "]", "end"):
        return "code"
    if body[-1:] in ".?!" and " " in body:
        return "prose"
    if _CODE_MARK.search(body):
        return "code"
    return "prose"
