"""A LiteLLM logger for ``bench/proxy.py --peer litellm --rounds``: for each call, what Thresher's
guardrail recorded in LiteLLM's guardrail information (its report, with each stage's time, and
the hook's own duration), appended as a JSON line to ``$THRESHER_BENCH_REPORTS``. Loaded by a
LiteLLM config's ``litellm_settings.callbacks``; it runs only in the configuration that measures
the guardrail's time inside LiteLLM (it costs LiteLLM some CPU of its own per call)."""

from __future__ import annotations

import json
import os

from litellm.integrations.custom_logger import CustomLogger


class Reports(CustomLogger):
    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        payload = kwargs.get("standard_logging_object") or {}
        info = [
            {"duration": g.get("duration"), "report": g.get("guardrail_response")}
            for g in payload.get("guardrail_information") or []
            if g.get("guardrail_provider") == "thresher"
        ]
        with open(os.environ["THRESHER_BENCH_REPORTS"], "a", encoding="utf-8") as out:
            out.write(json.dumps(info, default=str) + "\n")


reports = Reports()
