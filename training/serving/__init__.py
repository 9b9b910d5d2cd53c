"""Serving a model: the generator seam and its two backends, prompts, citations."""
