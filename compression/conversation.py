"""Conversation-aware compression: each message compressed on its own terms and remembered.

A chat client resends the whole conversation every turn, and a backend's prefix cache (vLLM,
llama.cpp, OpenAI and Anthropic prompt caching) discounts only an identical prefix. So a
message is compressed from its content and role, the method, rate and target model, and the
question that ranks it (below), never from the rest of the conversation, and the forwarded form
is remembered under a hash of those (:class:`MessageCache`): on every later turn it goes out in
the same bytes, and only messages not seen before cost compression time.

Per message: system and developer prompts, messages the request marks as kept and short texts
stay verbatim; a user message's question (its last line, or the last sentence of a long last
line) is never compressed; JSON and code are compressed by structure
(:func:`thresher.compression.structured.shrink_segments`; what they elide is listed in
:attr:`ConversationResult.elided`), prose by the token compressor at the message's own rate with
a floor, many short pieces in one batched pass. A message is cut into segments only when the
work reaches it, under the request's deadline and size cap, never while planning.

Question-aware compression ranks a message's content by the question of the next user message
(for the last user message its own; for tool results and assistant turns after it, that
message's), the first time the message is compressed.

The cache key holds everything that decides a form (:meth:`ConversationCompressor.key`): the
tenant (a form never crosses tenants, nor says to one what another sent), the method, how the
rate was set (a rate, a token target or a budget) and the rate, the target model and its
tokenizer, the question that ranked it, and the message. A message forwarded within the latest
step of the conversation was ranked by that step's question (a user message by its own, a tool
result by the user message it answers); on later turns that form is looked up first, so it goes
out in the same bytes for good (the prefix stays byte-identical) rather than being ranked again
by the question that now follows it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from thresher.compression.base import BaseCompressor, Compressor, join_kept
from thresher.compression.budget import check_rate, greedy_keep
from thresher.compression.elision import Elided
from thresher.compression.message_cache import LRUMessageCache as LRUMessageCache
from thresher.compression.message_cache import MessageCache as MessageCache
from thresher.compression.structured import Prose, shrink_segments
from thresher.compression.units import split_units, unit_of_chars
from thresher.core.record import Message, content_texts, is_text_part
from thresher.core.text import sentence_ends
from thresher.core.tokens import TokenCounter

VERSION = 3  # part of every cache key: bump it when the per-message rules or the key change
KEPT_ROLES = frozenset({"system", "developer"})

Outcome = Literal["cached", "compressed", "verbatim", "skipped"]


class Stopped(Exception):
    """Raised from inside the work (a model call) when the request's deadline has passed or
    its client is gone; what was done so far is kept."""


def split_question(text: str) -> tuple[str, str]:
    """``(body, question)`` of a user turn, joining back to ``text``: the question is the last
    line, or the last sentence when that line is a long paragraph or the whole text (a
    one-paragraph message is not all question)."""
    body = text.rstrip()
    cut = body.rfind("\n") + 1
    if cut == 0 or len(body) - cut > 300:
        ends = [end for end in sentence_ends(body, cut) if end < len(body)]
        if ends:
            cut = ends[-1]
    return text[:cut], text[cut:]


@dataclass(slots=True)
class ProseJob:
    """A prose piece to compress to ``target`` tokens; ``out`` is filled in."""

    message: int
    text: str
    tokens: int
    target: int
    question: str = ""
    out: str | None = None


@dataclass(slots=True)
class Pending:
    """A message not in the cache: its key, tokens and question; once the work reaches it, its
    prose jobs, the spans structure compression elided and how to put it back together."""

    index: int
    key: str
    tokens: int
    question: str = ""
    text_tokens: list[int] = field(default_factory=list)
    build: Callable[[], Any] | None = None
    jobs: list[ProseJob] = field(default_factory=list)
    elided: list[Elided] = field(default_factory=list)
    any_key: str = ""  # its key at any rate (what a token target reuses)


@dataclass
class ConversationPlan:
    """What a request needs: cached forms to reuse and the messages still to compress."""

    messages: list[Message]
    cached: dict[int, Any]
    pending: list[Pending]
    fixed: set[int]  # verbatim by rule: kept roles, kept indices, no text

    @property
    def new_tokens(self) -> int:
        return sum(p.tokens for p in self.pending)


@dataclass
class ConversationResult:
    """The messages to forward and what happened to each (one :data:`Outcome` per message
    that could be compressed; verbatim-by-rule messages are not counted)."""

    messages: list[Message]
    outcomes: dict[int, Outcome]
    new_tokens: int = 0
    compressed_new_tokens: int = 0
    seconds: float = 0.0
    stopped: str | None = None
    elided: list[Elided] = field(default_factory=list)  # spans left out of what is forwarded

    def count(self, outcome: Outcome) -> int:
        return sum(1 for o in self.outcomes.values() if o == outcome)


class ConversationCompressor:
    """Per-message compression of chat messages through any :class:`Compressor`.

    Args:
        compressor: Built with ``min_tokens=0``; its ``name`` is part of the cache key.
        counter: The target model's token counter (rates are met in its tokens).
        cache: Where forwarded forms are remembered.
        target: The target model or tokenizer name (part of the cache key).
        rate: Fraction of each message's prose tokens kept.
        min_message_tokens: Texts shorter than this stay verbatim (little to gain).
        floor_tokens: No compressed prose piece keeps fewer tokens than this (or all of it).
        batch_tokens: Prose pieces up to this many tokens are scored together in one batch.
        options_key: Anything else the compressor's output depends on (protected strings).
        tenant: Whose forms these are (the cache never serves one tenant another's).
        mode: How ``rate`` was set: ``rate`` (asked for), ``target_tokens`` or ``budget``
            (fitted to a token target); forms made one way never serve another.
    """

    def __init__(
        self,
        compressor: Compressor,
        counter: TokenCounter,
        *,
        cache: MessageCache,
        target: str,
        rate: float = 0.5,
        min_message_tokens: int = 48,
        floor_tokens: int = 24,
        batch_tokens: int = 384,
        options_key: str = "",
        tenant: str = "anonymous",
        mode: str = "rate",
    ) -> None:
        self.compressor = compressor
        self.counter = counter
        self.cache = cache
        self.target = target
        self.rate = check_rate(rate)
        self.min_message_tokens = min_message_tokens
        self.floor_tokens = floor_tokens
        self.batch_tokens = batch_tokens
        self.options_key = options_key
        self.tenant = tenant
        self.mode = mode

    # -- planning ----------------------------------------------------------------------------

    def key(self, message: Message, *, any_rate: bool = False, question: str = "") -> str:
        """The cache key of a message's forwarded form when ranked by ``question``;
        ``any_rate``: the key of its latest form at whatever rate (what a token target reuses,
        see :meth:`plan`). Everything that decides the form is in it (see the module)."""
        spec = [
            VERSION, self.tenant, self.compressor.name, self.mode,
            "any" if any_rate else round(self.rate, 4), self.target,
            getattr(self.counter, "name", type(self.counter).__name__),
            self.min_message_tokens, self.floor_tokens, self.options_key, question,
            message.get("role"), message.get("content"),
        ]  # fmt: skip
        raw = json.dumps(spec, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()

    def _lookup(self, message: Message, questions: list[str], sticky: bool) -> Any | None:
        """The remembered form of ``message`` under the first key that has one: any rate's
        first when ``sticky``, and for each the questions in order."""
        rates = (True, False) if sticky else (False,)
        for any_rate in rates:
            for question in questions:
                found = self.cache.get(self.key(message, any_rate=any_rate, question=question))
                if found is not None:
                    return found
        return None

    def plan(
        self, messages: Sequence[Message], keep: Iterable[int] = (), *, sticky: bool = False
    ) -> ConversationPlan:
        """Look every compressible message up in the cache; ``keep`` are message indices.

        With ``sticky`` a message forwarded before at another rate is reused as it was: under a
        token target the rate that fits moves as the conversation grows, and only the new
        messages take the new one (the caller drops ``sticky`` when the target does not hold).
        """
        kept = set(keep)
        out = ConversationPlan([dict(m) for m in messages], {}, [], set())
        rankings, steps = _questions(out.messages)
        for i, m in enumerate(out.messages):
            if i in kept or m.get("role") in KEPT_ROLES or not _has_text(m.get("content")):
                out.fixed.add(i)
                continue
            ranking = rankings[i]
            # Its form from the latest step (ranked by that step's question) first: see the
            # module.
            found = self._lookup(m, list(dict.fromkeys([steps[i], ranking])), sticky)
            if found is not None:
                out.cached[i] = found
                continue
            texts = content_texts(m.get("content"))
            counts = [self.counter.count(t) for t in texts]
            pending = Pending(i, self.key(m, question=ranking), sum(counts), ranking, counts)
            pending.any_key = self.key(m, any_rate=True, question=ranking)
            out.pending.append(pending)
        return out

    def _prepare(self, pending: Pending, message: Message) -> None:
        """Cut a message into segments when the work reaches it (under its deadline and size
        cap): prose becomes jobs for the compressor, JSON and code are compressed now."""
        content, role = message["content"], message.get("role")
        texts = content_texts(content)
        last = len(texts) - 1
        built: list[list[Any]] = []
        for n, (text, tokens) in enumerate(zip(texts, pending.text_tokens, strict=True)):
            if tokens < self.min_message_tokens:
                built.append([text])
                continue
            body, question = split_question(text) if role == "user" and n == last else (text, "")
            ask = pending.question or question.strip()
            count, least = self.counter.count, self.min_message_tokens
            try:
                segments, elided = shrink_segments(body, ask, count, self._goal, least)
            except RecursionError:  # structure too deep to walk: this text goes as it is
                segments, elided = [body], []
            pending.elided += elided
            pieces: list[Any] = [
                ProseJob(pending.index, s.text, s.tokens, s.target, ask)
                if isinstance(s, Prose)
                else s
                for s in segments
            ]
            pending.jobs += [p for p in pieces if isinstance(p, ProseJob)]
            built.append([*pieces, question])

        def build() -> Any:
            joined = [
                "".join(_edged(p) if isinstance(p, ProseJob) else p for p in ps) for ps in built
            ]
            if isinstance(content, str):
                return joined[0]
            parts, it = [], iter(joined)
            for p in content:
                parts.append({**p, "text": next(it)} if is_text_part(p) else p)
            return parts

        pending.build = build

    def _goal(self, tokens: int) -> int:
        return max(round(self.rate * tokens), min(tokens, self.floor_tokens))

    # -- running -----------------------------------------------------------------------------

    def remember_verbatim(self, plan: ConversationPlan) -> None:
        """Record the pending messages as forwarded unchanged (compression did not pay): on
        later turns they go out in the same bytes instead of changing under the cache."""
        for p in plan.pending:
            self._remember(p, plan.messages[p.index]["content"])

    def _remember(self, pending: Pending, content: Any) -> None:
        self.cache.put(pending.key, content)
        self.cache.put(pending.any_key, content)

    def run(
        self,
        plan: ConversationPlan,
        *,
        should_stop: Callable[[], str | None] | None = None,
        max_new_tokens: int | None = None,
    ) -> ConversationResult:
        """Compress the pending messages oldest first, in batches, and remember each.

        Args:
            plan: From :meth:`plan`.
            should_stop: Asked between batches; a reason string stops the work (deadline,
                client gone). A :class:`Stopped` raised from inside a model call does too.
            max_new_tokens: A size cap: pending messages past this many tokens go verbatim.
        """
        start = time.perf_counter()
        result = ConversationResult(plan.messages, {i: "cached" for i in plan.cached})
        for i, content in plan.cached.items():
            plan.messages[i] = {**plan.messages[i], "content": content}
        queue = list(plan.pending)
        budget = max_new_tokens
        while queue:
            reason = should_stop() if should_stop is not None else None
            if reason is not None:
                result.stopped = reason
                break
            group = self._next_group(queue)
            if budget is not None and sum(p.tokens for p in group) > budget:
                result.stopped = f"size cap of {max_new_tokens} new tokens reached"
                break
            try:
                for p in group:
                    self._prepare(p, plan.messages[p.index])
                self._compress_jobs([j for p in group for j in p.jobs])
            except Stopped as exc:
                result.stopped = str(exc) or "stopped"
                break
            del queue[: len(group)]
            for p in group:
                assert p.build is not None
                content = p.build()
                original = plan.messages[p.index]["content"]
                if _text_tokens(content, self.counter) >= p.tokens:
                    content = original  # nothing gained: forward (and remember) the original
                self._remember(p, content)
                plan.messages[p.index] = {**plan.messages[p.index], "content": content}
                compressed = content != original
                result.outcomes[p.index] = "compressed" if compressed else "verbatim"
                if compressed:
                    result.elided += p.elided
                result.new_tokens += p.tokens
                if budget is not None:
                    budget -= p.tokens
        for p in queue:
            result.outcomes[p.index] = "skipped"
        result.compressed_new_tokens = sum(
            _text_tokens(plan.messages[i]["content"], self.counter)
            for i, o in result.outcomes.items()
            if o in ("compressed", "verbatim")
        )
        result.seconds = time.perf_counter() - start
        return result

    def _next_group(self, queue: list[Pending]) -> list[Pending]:
        """The next messages to do together: short ones up to one batch, a long one alone."""
        group: list[Pending] = []
        held = 0
        for p in queue:
            held += p.tokens
            if group and held > 4 * self.batch_tokens:
                break
            group.append(p)
        return group

    def _compress_jobs(self, jobs: list[ProseJob]) -> None:
        # A method whose rule on one segment is self-information scores short pieces together.
        batchable = isinstance(self.compressor, BaseCompressor) and (
            self.compressor.self_information
        )
        short = [j for j in jobs if batchable and j.tokens <= self.batch_tokens]
        if short:
            self._batch(short)
        for job in jobs:
            if job.out is None:
                job.out = self._compress_one(job)

    def _compress_one(self, job: ProseJob) -> str:
        """One piece at its target, as a message of its own: question-aware methods condition
        on the job's question, which is not part of the piece's output or budget."""
        result = self.compressor.compress(
            messages=[{"role": "user", "content": job.text}],
            question=job.question,
            policy={"last_user": "compress"},
            target_tokens=job.target,
        )
        assert result.messages is not None  # messages in, messages out
        return str(result.messages[0]["content"])

    def _batch(self, jobs: list[ProseJob]) -> None:
        """One batched pass of the scoring LM over many short pieces; each keeps the units of
        most self-information per token within its own target (LLMLingua's rule for a text of
        one segment)."""
        compressor = self.compressor
        assert isinstance(compressor, BaseCompressor)
        scorer = compressor.scorer
        units, ids, tok_units, costs = [], [], [], []
        memo: dict[str, int] = {}
        for job in jobs:
            u = split_units(job.text, compressor.protect)
            piece_costs = []
            for piece in u.pieces:
                if piece not in memo:
                    memo[piece] = self.counter.count(piece)
                piece_costs.append(memo[piece])
            token_ids, offsets = scorer.encode_with_offsets(job.text)
            units.append(u)
            ids.append(token_ids)
            tok_units.append(np.asarray(unit_of_chars(u, offsets), dtype=np.int64))
            costs.append(np.asarray(piece_costs, dtype=np.float64))
        logprobs = scorer.logprobs_ids(ids)
        for job, u, lp, tu, c in zip(jobs, units, logprobs, tok_units, costs, strict=True):
            si = np.bincount(tu, weights=-np.asarray(lp, dtype=np.float64), minlength=len(u))
            forced = np.asarray(u.forced, dtype=bool)
            keep = greedy_keep(si[: len(u)], c, forced, float(job.target))
            if not keep.any() and len(keep):
                keep[int(np.argmax(si[: len(u)]))] = True
            job.out = join_kept(u.pieces, keep)


def _questions(messages: Sequence[Message]) -> tuple[list[str], list[str]]:
    """Per message, ``(ranking, step)``. ``step``: the question it was ranked by while it
    belonged to the latest step of the conversation (a user message's own; another message's,
    the user message before it). ``ranking``: what it is ranked by now, the question of the
    next user message, or ``step`` when no user message follows (the last user message asks
    its own; the tool results and assistant turns after it answer it)."""
    asks = [_question_of(m) if m.get("role") == "user" else None for m in messages]
    step, current = [], ""
    for ask in asks:
        current = current if ask is None else ask
        step.append(current)
    ranking, upcoming = list(step), ""
    for i in range(len(messages) - 1, -1, -1):
        if upcoming:
            ranking[i] = upcoming
        upcoming = upcoming if asks[i] is None else asks[i]
    return ranking, step


def _question_of(message: Message) -> str:
    texts = content_texts(message.get("content"))
    last = texts[-1] if texts else ""
    return split_question(last)[1].strip() or last.strip()


def _edged(job: ProseJob) -> str:
    """A job's output with the whitespace its text began and ended with, so that it never runs
    into the piece beside it (a compressor may drop a trailing line break: "fewWhat happens?")."""
    out = str(job.out).strip()
    text = job.text
    lead, trail = text[: len(text) - len(text.lstrip())], text[len(text.rstrip()) :]
    return lead + out + trail if out else lead or trail


def _has_text(content: Any) -> bool:
    return any(text.strip() for text in content_texts(content))


def _text_tokens(content: Any, counter: TokenCounter) -> int:
    return sum(counter.count(text) for text in content_texts(content))
