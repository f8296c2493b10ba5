"""The ways in: the FastAPI service (REST + OpenAI-compatible proxy) and the ``thresher`` CLI."""
