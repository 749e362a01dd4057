"""Evaluation: perplexity (ppl.py) and downstream zero-shot tasks (tasks.py)."""
