"""wandapp: prune LLMs block by block with Wanda++, Wanda, SparseGPT and magnitude."""

__version__ = "0.1.0"
