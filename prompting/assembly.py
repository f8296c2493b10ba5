"""Prompt assembly: demonstrations in a template, fitted under a token budget.

Tokens are counted with the target model's own tokenizer (a
:class:`thresher.core.tokens.TokenCounter`). When the demonstrations do not fit, the least similar
to the query goes first, and the rest keep their order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from thresher.core.errors import InputError
from thresher.core.record import Message
from thresher.core.tokens import TokenCounter
from thresher.prompting.result import Demonstration, RetrievalResult

TemplateName = Literal["classification", "generation"]
OutputFormat = Literal["prompt", "messages"]


@dataclass(frozen=True, slots=True)
class Template:
    """How one demonstration and the query are written.

    A demonstration renders as ``{input_prefix}{text}\\n{output_prefix} {answer}``; the query
    as the same line with the answer left for the model, so a label scored as the continuation
    ``" " + label`` reads exactly like the demonstrations.
    """

    answer: Literal["label", "output"]
    input_prefix: str = "Input: "
    output_prefix: str = "Output:"
    separator: str = "\n\n"

    def answer_of(self, demo: Demonstration) -> str:
        first, second = (
            (demo.label, demo.output) if self.answer == "label" else (demo.output, demo.label)
        )
        value = first if first is not None else second
        if value is None:
            raise InputError(
                f"Demonstration {demo.id!r} has neither a label nor an output to show.",
                field="records",
            )
        return value

    def render_demo(self, demo: Demonstration) -> str:
        return f"{self.input_prefix}{demo.text}\n{self.output_prefix} {self.answer_of(demo)}"

    def render_query(self, query: str) -> str:
        return f"{self.input_prefix}{query}\n{self.output_prefix}"

    def prompt(
        self, query: str, demos: Sequence[Demonstration], instruction: str | None = None
    ) -> str:
        parts = ([instruction] if instruction else []) + [self.render_demo(d) for d in demos]
        return self.separator.join([*parts, self.render_query(query)])

    def messages(
        self, query: str, demos: Sequence[Demonstration], instruction: str | None = None
    ) -> list[Message]:
        out: list[Message] = [{"role": "system", "content": instruction}] if instruction else []
        out.extend(self.demo_messages(demos))
        out.append({"role": "user", "content": query})
        return out

    def demo_messages(self, demos: Sequence[Demonstration]) -> list[Message]:
        """Each demonstration as a user turn and the assistant's answer."""
        out: list[Message] = []
        for d in demos:
            out.append({"role": "user", "content": d.text})
            out.append({"role": "assistant", "content": self.answer_of(d)})
        return out


TEMPLATES: dict[TemplateName, Template] = {
    "classification": Template(answer="label", output_prefix="Label:"),
    "generation": Template(answer="output", output_prefix="Output:"),
}


def get_template(template: TemplateName | Template) -> Template:
    if isinstance(template, Template):
        return template
    if template not in TEMPLATES:
        raise InputError(
            f"Unknown template {template!r}; use one of {sorted(TEMPLATES)}.", field="template"
        )
    return TEMPLATES[template]


@dataclass(slots=True)
class AssembledPrompt:
    """The prompt in both shapes, what went in, what was dropped, and the token count."""

    prompt: str
    messages: list[Message]
    demonstrations: list[Demonstration]
    dropped: list[str] = field(default_factory=list)
    tokens: int = 0
    budget_tokens: int | None = None

    @property
    def demo_messages(self) -> list[Message]:
        """Only the demonstration turns, for splicing into an existing chat request."""
        start = 1 if self.messages and self.messages[0]["role"] == "system" else 0
        return self.messages[start:-1]


def _tokens(counter: TokenCounter, prompt: str, messages: list[Message]) -> int:
    # The budget holds for both shapes; role markup is backend-specific and not counted.
    in_messages = sum(counter.count(str(m["content"])) for m in messages)
    return max(counter.count(prompt), in_messages)


def assemble(
    query: str,
    demonstrations: RetrievalResult | Sequence[Demonstration],
    *,
    counter: TokenCounter,
    budget_tokens: int | None = None,
    template: TemplateName | Template = "classification",
    instruction: str | None = None,
) -> AssembledPrompt:
    """Write ``demonstrations`` (in their given order) and the query into a prompt.

    Args:
        query: the input to answer.
        demonstrations: a retrieval result or demonstrations, already ordered.
        counter: the target model's token counter.
        budget_tokens: the most tokens the prompt may take; demonstrations with the lowest
            similarity to the query are dropped until it fits.
        template: ``classification``, ``generation`` or a :class:`Template`.
        instruction: a task line written before the demonstrations (a system message in chat).

    Raises:
        InputError: ``budget_tokens`` cannot hold the query with even one demonstration.
    """
    if not isinstance(query, str) or not query.strip():
        raise InputError("query is empty; give the text to answer.", field="query")
    demos = list(
        demonstrations.demonstrations
        if isinstance(demonstrations, RetrievalResult)
        else demonstrations
    )
    tpl = get_template(template)
    if budget_tokens is not None and budget_tokens <= 0:
        raise InputError(
            f"budget_tokens must be positive, got {budget_tokens}.", field="budget_tokens"
        )
    kept = list(demos)
    dropped: list[str] = []
    while True:
        prompt = tpl.prompt(query, kept, instruction)
        messages = tpl.messages(query, kept, instruction)
        tokens = _tokens(counter, prompt, messages)
        if budget_tokens is None or tokens <= budget_tokens or not kept:
            break
        weakest = min(range(len(kept)), key=lambda i: (kept[i].similarity, -i))
        dropped.append(kept.pop(weakest).id)
    if budget_tokens is not None and (tokens > budget_tokens or (demos and not kept)):
        best = max(demos, key=lambda d: d.similarity) if demos else None
        need = _tokens(
            counter,
            tpl.prompt(query, [best] if best else [], instruction),
            tpl.messages(query, [best] if best else [], instruction),
        )
        raise InputError(
            f"budget_tokens={budget_tokens} is too small for the query and one demonstration "
            f"({need} tokens with {counter.name}); raise it to at least {need}.",
            field="budget_tokens",
        )
    return AssembledPrompt(prompt, messages, kept, dropped, tokens, budget_tokens)
