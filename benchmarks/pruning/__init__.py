"""Pruning benchmarks: perplexity and zero-shot quality, prune time and its profile (GPU; python -m benchmarks.pruning.X)."""  # noqa: E501
