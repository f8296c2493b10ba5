"""LiteLLM proxy guardrail: :class:`ThresherGuardrail` runs Thresher's request pipeline
(demonstrations, budget, compression) on chat and text completions before LiteLLM routes them.

Enable it in LiteLLM's ``config.yaml`` (see the README)::

    guardrails:
      - guardrail_name: thresher
        litellm_params:
          guardrail: thresher.api.integrations.litellm.ThresherGuardrail
          mode: pre_call
          default_on: true
          thresher: {compression: {method: llmlingua, rate: 0.5}}

The options are the ``thresher`` object of Thresher's own proxy, overlaid in this order: the
guardrail's ``thresher`` param, the team's and then the key's metadata ``thresher``, the
request's ``metadata.thresher``, and a top-level ``thresher`` field (the OpenAI SDK's
``extra_body``; removed before LiteLLM routes the request). A bad option is the caller's mistake
(HTTP 400 naming the field; an unknown pool, 404); anything that fails once the pipeline runs
forwards the request unchanged (fail open). What Thresher did goes into the request's
``metadata["thresher_report"]`` and, when a stage ran or failed, into LiteLLM's guardrail
information, which its loggers and spend logs record.

Needs LiteLLM, which conflicts with two of Thresher's pins: ``make litellm`` builds its venv.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from thresher.api.integrations.embedded import EmbeddedPipeline, missing_extra
from thresher.core.errors import InputError, NotFoundError

try:
    from fastapi import HTTPException
    from litellm.integrations.custom_guardrail import CustomGuardrail
except ImportError as exc:  # pragma: no cover - the extra lives in the litellm venv
    raise missing_extra("litellm", "litellm", exc) from exc

log = logging.getLogger(__name__)
OPTIONS_KEY = "thresher"
REPORT_KEY = "thresher_report"
# LiteLLM's call types -> the pipeline's kind and the body field it rewrites.
CALLS = {
    "completion": ("chat", "messages"),
    "acompletion": ("chat", "messages"),
    "text_completion": ("completion", "prompt"),
    "atext_completion": ("completion", "prompt"),
}
PROVIDER = "thresher"


class ThresherGuardrail(CustomGuardrail):
    """A LiteLLM ``pre_call`` guardrail that applies Thresher's pipeline to completions.

    Args:
        thresher: Default ``thresher`` options (the same shape as a Thresher proxy request's).
        tokenizer: Token counter for budgets and reports (default: ``THRESHER_TOKENIZER``).
        settings: Thresher service settings, or a mapping of overrides of them (default: the
            ``THRESHER_*`` environment).
        provider: A loaded ``ModelProvider`` to share.
        **kwargs: LiteLLM's guardrail params (``guardrail_name``, ``event_hook``,
            ``default_on``, ...).
    """

    def __init__(
        self,
        thresher: dict[str, Any] | None = None,
        tokenizer: str | None = None,
        settings: Any = None,
        provider: Any = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("guardrail_name", PROVIDER)
        kwargs.setdefault("event_hook", "pre_call")
        # The models load when LiteLLM starts, not in the first request (unless
        # THRESHER_PRELOAD_MODELS is off).
        self.pipeline = EmbeddedPipeline(
            thresher, settings=settings, provider=provider, tokenizer=tokenizer, preload=True
        )
        super().__init__(**kwargs)

    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict, call_type: str
    ) -> dict:
        """Rewrite ``data["messages"]`` (``data["prompt"]`` of a text completion) by the
        pipeline; return ``data`` (LiteLLM's contract)."""
        extra = data.pop(OPTIONS_KEY, None)
        kind, key = CALLS.get(getattr(call_type, "value", call_type), (None, ""))
        if kind is None or not data.get(key):
            return data  # embeddings, images, ...: nothing for the pipeline
        start = time.time()
        try:
            options = self.pipeline.options(*request_options(user_api_key_dict, data, extra))
            body: dict[str, Any] = {key: data[key]}
            report = await self.pipeline.arun(kind, body, options)
        except (InputError, NotFoundError) as exc:  # the caller's: a bad option, no such pool
            status = 404 if isinstance(exc, NotFoundError) else 400
            raise HTTPException(status_code=status, detail={"error": str(exc)}) from None
        except Exception as exc:  # noqa: BLE001 - the guardrail must never fail a request
            log.exception("Thresher's pipeline failed; LiteLLM forwards the request unchanged")
            detail = {"failed_stage": "pipeline", "error": f"{type(exc).__name__}: {exc}"[:300]}
            self._log(data, detail, "guardrail_failed_to_respond", start)
            return data
        if not report.stages:  # no stage configured: nothing done, nothing to log
            return data
        data[key] = body[key]
        ran = any(s.status == "ran" for s in report.stages)
        status = "guardrail_failed_to_respond" if report.failed else "success"
        # LiteLLM's guardrail record costs about half a millisecond of CPU: only when a stage
        # did something; a skipped pipeline's report goes to the metadata alone.
        self._log(data, report.as_dict(), status, start, record=ran or bool(report.failed))
        return data

    def _log(
        self, data: dict, detail: dict[str, Any], status: Any, start: float, record: bool = True
    ) -> None:
        metadata = data.get("metadata")
        if not isinstance(metadata, dict):
            metadata = data["metadata"] = {}
        metadata[REPORT_KEY] = detail
        if not record:
            return
        end = time.time()
        self.add_standard_logging_guardrail_information_to_request_data(
            guardrail_json_response=detail,
            request_data=data,
            guardrail_status=status,
            guardrail_provider=PROVIDER,
            start_time=start,
            end_time=end,
            duration=end - start,
        )


def request_options(user_api_key_dict: Any, data: dict, extra: Any) -> list[dict[str, Any]]:
    """The per-team, per-key and per-request ``thresher`` objects, in the order they overlay."""
    layers = [
        getattr(user_api_key_dict, "team_metadata", None),
        getattr(user_api_key_dict, "metadata", None),
        data.get("metadata"),
        data.get("litellm_metadata"),
    ]
    found = [m.get(OPTIONS_KEY) for m in layers if isinstance(m, dict)] + [extra]
    for layer in found:
        if layer is not None and not isinstance(layer, dict):
            raise InputError(
                f"thresher must be an object of pipeline options, got {type(layer).__name__}.",
                field="thresher",
            )
    return [layer for layer in found if layer]


__all__ = ["ThresherGuardrail", "request_options"]
