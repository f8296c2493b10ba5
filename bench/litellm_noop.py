"""A LiteLLM guardrail that does nothing: ``bench/proxy.py --peer litellm`` runs LiteLLM with it to
measure what LiteLLM itself spends on any pre_call guardrail, apart from Thresher's."""

from __future__ import annotations

from typing import Any

from litellm.integrations.custom_guardrail import CustomGuardrail


class NoopGuardrail(CustomGuardrail):
    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict, call_type: str
    ) -> dict:
        return data
