"""Thresher inside the tools its users already run, each a thin adapter over the request
pipeline (:mod:`thresher.api.integrations.embedded`), each behind its own extra and imported
only where used: ``thresher.api.integrations.litellm`` (``ThresherGuardrail``,
``thresher[litellm]``), ``thresher.api.integrations.langchain`` (``ThresherCompressor``,
``ThresherExampleSelector``, ``thresher[langchain]``), ``thresher.api.integrations.llama_index``
(``ThresherPostprocessor``, ``thresher[llama-index]``). Importing this package imports none of
them.
"""
