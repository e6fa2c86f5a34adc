"""Evaluation: perplexity, zero-shot accuracy and latency."""
