"""LLMLingua-family prompt compression driven by a small causal LM's token scores."""
