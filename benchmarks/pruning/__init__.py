"""Pruning benchmarks: perplexity and zero-shot quality, prune time and its profile.

GPU; run each as `python -m benchmarks.pruning.X`.
"""
