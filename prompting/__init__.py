"""In-context demonstrations: a persisted pool, retrievers, orderers, assembly under a budget."""
