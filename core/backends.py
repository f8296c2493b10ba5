"""LLM backends behind one protocol: any OpenAI-compatible server, or a local HF model.

Both speak the OpenAI wire shapes (request and response dicts, stream chunks as dicts), so the
proxy can forward a request unchanged and answer in the shape the official client expects.
:func:`make_backend` is the one factory; the remote client lives in :mod:`thresher.core.remote`,
over a transport of :mod:`thresher.core.transport`, with the retry policy of
:mod:`thresher.core.retry`.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Protocol, runtime_checkable

from thresher.core.errors import ConfigError, InputError
from thresher.core.record import message_text, validate_messages
from thresher.core.remote import OpenAICompatibleBackend
from thresher.core.retry import ErrorObserver
from thresher.core.transport import TransportName

Body = dict[str, Any]
__all__ = ["ChatBackend", "LocalBackend", "OpenAICompatibleBackend", "make_backend"]


@runtime_checkable
class ChatBackend(Protocol):
    """What the proxy needs from a backend."""

    name: str

    async def chat(self, body: Body) -> Body: ...

    def stream_chat(self, body: Body) -> AsyncIterator[Body]: ...

    async def complete(self, body: Body) -> Body: ...

    def stream_complete(self, body: Body) -> AsyncIterator[Body]: ...

    async def models(self) -> list[str]: ...

    async def aclose(self) -> None: ...


def make_backend(
    url: str,
    *,
    provider: Any = None,
    local_model: str | None = None,
    max_new_tokens: int = 256,
    api_key: str | None = None,
    timeout: float = 120.0,
    retries: int = 2,
    backoff: float = 0.25,
    deadline: float | None = None,
    max_connections: int = 100,
    transport: TransportName = "httpx",
    on_error: ErrorObserver | None = None,
    name: str | None = None,
) -> ChatBackend:
    """The one way from "``local`` or a URL" to a backend; the proxy's routes, selection's
    judge and the step context all call it. The arguments after ``max_new_tokens`` go to
    :class:`thresher.core.remote.OpenAICompatibleBackend` as it takes them.

    Args:
        url: ``local`` (a transformers model on this machine) or an OpenAI base URL.
        provider: The :class:`thresher.core.models.ModelProvider` that loads the local model.
        local_model: Which local model (default: the provider's default causal LM).
        max_new_tokens: The local model's default generation length.
    """
    if url == "local":
        if provider is None:
            raise ConfigError(
                "A local backend needs a model provider; pass provider=ModelProvider(...).",
                field="backend",
            )
        lm = provider.causal_lm(local_model) if local_model else provider.causal_lm()
        return LocalBackend(lm, max_new_tokens=max_new_tokens, name=name)
    return OpenAICompatibleBackend(
        url, api_key=api_key, timeout=timeout, name=name, transport=transport,
        max_connections=max_connections, retries=retries, backoff=backoff, deadline=deadline,
        on_error=on_error,
    )  # fmt: skip


GREEDY_BELOW_TEMPERATURE = 1e-4


class LocalBackend:
    """A Hugging Face causal LM on this machine (CUDA when present), in OpenAI shapes.

    Generation runs in a worker thread, one request at a time: a small model on a few CPU cores
    gains nothing from interleaving, and the lock keeps memory flat.
    """

    def __init__(self, lm: Any, *, max_new_tokens: int = 256, name: str | None = None) -> None:
        self.lm = lm
        self.name = name or lm.name
        self.max_new_tokens = max_new_tokens
        self._lock = threading.Lock()

    async def models(self) -> list[str]:
        return [self.name]

    async def aclose(self) -> None:
        return None

    async def chat(self, body: Body) -> Body:
        prompt = self._chat_prompt(body)
        text, finish, n_in, n_out = await self._generate_until_cancelled(prompt, body)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish,
                    "logprobs": None,
                }
            ],
            "usage": _usage(n_in, n_out),
        }

    async def complete(self, body: Body) -> Body:
        prompt = self._completion_prompt(body)
        text, finish, n_in, n_out = await self._generate_until_cancelled(prompt, body)
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.name,
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
            "usage": _usage(n_in, n_out),
        }

    async def stream_chat(self, body: Body) -> AsyncIterator[Body]:
        prompt = self._chat_prompt(body)
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(delta: Body, finish: str | None) -> Body:
            return {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        yield chunk({"role": "assistant", "content": ""}, None)
        counts: list[int] = []
        async for piece, finish in self._stream(prompt, body, counts):
            yield chunk({"content": piece} if piece else {}, finish)
        if _include_usage(body) and counts:
            # OpenAI's last chunk under stream_options.include_usage: no choices, the usage.
            yield {**chunk({}, None), "choices": [], "usage": _usage(*counts)}

    async def stream_complete(self, body: Body) -> AsyncIterator[Body]:
        prompt = self._completion_prompt(body)
        ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        head = {"id": ident, "object": "text_completion", "created": created, "model": self.name}
        counts: list[int] = []
        async for piece, finish in self._stream(prompt, body, counts):
            yield {
                **head,
                "choices": [{"index": 0, "text": piece, "finish_reason": finish, "logprobs": None}],
            }
        if _include_usage(body) and counts:
            yield {**head, "choices": [], "usage": _usage(*counts)}

    def _chat_prompt(self, body: Body) -> str:
        messages = validate_messages(body.get("messages"), field_name="messages")
        plain = [{"role": m["role"], "content": message_text(m)} for m in messages]
        return str(
            self.lm.tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=True)
        )

    @staticmethod
    def _completion_prompt(body: Body) -> str:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str) or not prompt:
            raise InputError("prompt must be a non-empty string.", field="prompt")
        return prompt

    def _generation_kwargs(self, body: Body) -> dict[str, Any]:
        max_tokens = (
            body.get("max_completion_tokens") or body.get("max_tokens") or self.max_new_tokens
        )
        if not isinstance(max_tokens, int) or max_tokens <= 0:
            raise InputError(
                f"max_tokens must be a positive integer, got {max_tokens!r}.", field="max_tokens"
            )
        context = getattr(self.lm.model.config, "max_position_embeddings", None)
        if context is not None and max_tokens > context:
            # One request must not occupy a local deployment generating past the model's window.
            raise InputError(
                f"max_tokens is {max_tokens}, above {self.name}'s context of {context} tokens; "
                "ask for fewer.",
                field="max_tokens",
            )
        seed = body.get("seed")
        if seed is not None and (not isinstance(seed, int) or not 0 <= seed < 2**63):
            raise InputError(f"seed must be an integer in [0, 2**63), got {seed!r}.", field="seed")
        top_p = body.get("top_p")
        if top_p is not None and (
            not isinstance(top_p, int | float) or isinstance(top_p, bool) or not 0 < top_p <= 1
        ):
            raise InputError(f"top_p must be a number in (0, 1], got {top_p!r}.", field="top_p")
        stop = body.get("stop")
        if stop is not None and not (
            isinstance(stop, str)
            or (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
        ):
            raise InputError("stop must be a string or a list of strings.", field="stop")
        temperature = body.get("temperature", 1.0)
        temperature = 1.0 if temperature is None else float(temperature)
        # Below this, sampling is argmax in all but name, and dividing float32 logits by a
        # near-zero temperature overflows them to inf (NaN probabilities), so decode greedily.
        sample = temperature >= GREEDY_BELOW_TEMPERATURE
        kwargs: dict[str, Any] = {"max_new_tokens": max_tokens, "do_sample": sample}
        if sample:
            kwargs["temperature"] = temperature
            kwargs["top_p"] = float(body.get("top_p") or 1.0)
        stop = body.get("stop")
        if stop:
            kwargs["stop_strings"] = [stop] if isinstance(stop, str) else list(stop)
            kwargs["tokenizer"] = self.lm.tokenizer
        return kwargs

    def _encode(self, prompt: str) -> Any:
        tok = self.lm.tokenizer
        return tok(prompt, return_tensors="pt", add_special_tokens=False).to(self.lm.device)

    async def _generate_until_cancelled(self, prompt: str, body: Body) -> tuple[str, str, int, int]:
        """:meth:`_generate` in a worker thread that a cancelled caller stops within one token
        (the proxy cancels when its client disconnects), so an abandoned request neither holds
        the model's lock for its whole ``max_tokens`` nor makes every other request wait."""
        stop = threading.Event()
        try:
            return await asyncio.to_thread(self._generate, prompt, body, stop)
        except asyncio.CancelledError:
            stop.set()
            raise

    def _generate(
        self, prompt: str, body: Body, stop: threading.Event | None = None
    ) -> tuple[str, str, int, int]:
        import torch

        kwargs = self._generation_kwargs(body)
        if stop is not None:
            kwargs["stopping_criteria"] = _stopping(stop)
        inputs = self._encode(prompt)
        with self._lock, torch.inference_mode():
            if stop is not None and stop.is_set():  # cancelled while waiting for the lock
                return "", "stop", int(inputs["input_ids"].shape[1]), 0
            if body.get("seed") is not None:
                torch.manual_seed(int(body["seed"]))
            out = self.lm.model.generate(
                **inputs, pad_token_id=self.lm.tokenizer.eos_token_id, **kwargs
            )
        new = out[0, inputs["input_ids"].shape[1] :]
        text = self.lm.tokenizer.decode(new, skip_special_tokens=True)
        text, stopped = _cut_at_stop(text, kwargs.get("stop_strings"))
        finish = "length" if len(new) >= kwargs["max_new_tokens"] and not stopped else "stop"
        return text, finish, int(inputs["input_ids"].shape[1]), int(len(new))

    async def _stream(
        self, prompt: str, body: Body, counts: list[int] | None = None
    ) -> AsyncIterator[tuple[str, str | None]]:
        """The text as it is generated; ``counts`` gets the prompt's and the answer's tokens
        once done. A consumer that stops early (its client left) stops the generation."""
        from transformers import TextIteratorStreamer

        kwargs = self._generation_kwargs(body)
        stop = threading.Event()
        kwargs["stopping_criteria"] = _stopping(stop)
        inputs = self._encode(prompt)
        streamer = TextIteratorStreamer(
            self.lm.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=300
        )
        counted: list[int] = []

        def run() -> None:
            import torch

            with self._lock, torch.inference_mode():
                if stop.is_set():  # the consumer left while this waited for the lock
                    streamer.end()
                    return
                out = self.lm.model.generate(
                    **inputs,
                    streamer=streamer,
                    pad_token_id=self.lm.tokenizer.eos_token_id,
                    **kwargs,
                )
            counted.append(int(out.shape[1] - inputs["input_ids"].shape[1]))

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        sentinel = object()
        iterator = iter(streamer)
        try:
            while True:
                piece = await asyncio.to_thread(next, iterator, sentinel)
                if piece is sentinel:
                    break
                if piece:
                    yield str(piece), None
            await asyncio.to_thread(worker.join)
        finally:
            stop.set()  # closed or cancelled before the end: the generation stops too
        finish = "length" if counted and counted[0] >= kwargs["max_new_tokens"] else "stop"
        if counts is not None and counted:
            counts += [int(inputs["input_ids"].shape[1]), counted[0]]
        yield "", finish


def _include_usage(body: Body) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _stopping(stop: threading.Event) -> Any:
    """A stopping criterion that ends a generation once ``stop`` is set."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Stop(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full(
                (input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device
            )

    return StoppingCriteriaList([_Stop()])


def _cut_at_stop(text: str, stops: list[str] | None) -> tuple[str, bool]:
    if not stops:
        return text, False
    cuts = [text.find(s) for s in stops if s and s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


def _usage(prompt_tokens: int, completion_tokens: int) -> Body:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
