"""Training Thresher's embedded LLMLingua-2 classifier (run by hand; imports torch)."""
