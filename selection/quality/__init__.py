"""Quality scores for instruction data: heuristic rules, perplexity and IFD, an LLM judge and a
learned classifier. Heavy dependencies are imported inside the steps that need them."""
