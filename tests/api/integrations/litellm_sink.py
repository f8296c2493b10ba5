"""A LiteLLM logger for the guardrail tests: each successful call's standard logging payload
(its guardrail information and metadata) appended as a JSON line to ``$THRESHER_LITELLM_SINK``.
Loaded by LiteLLM's proxy from its config (``litellm_settings.callbacks``)."""

from __future__ import annotations

import json
import os

from litellm.integrations.custom_logger import CustomLogger


class Sink(CustomLogger):
    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        payload = kwargs.get("standard_logging_object") or {}
        row = {
            "guardrail_information": payload.get("guardrail_information"),
            "metadata": payload.get("metadata"),
        }
        with open(os.environ["THRESHER_LITELLM_SINK"], "a", encoding="utf-8") as out:
            out.write(json.dumps(row, default=str) + "\n")


sink = Sink()
