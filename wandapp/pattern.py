"""Sparsity patterns: the one codec for a sparsity's spellings. Standard library only (the workflow imports it
at parse time, without torch).

    SparsityPattern.parse("2:4")           the CLI and config spelling: a ratio in [0, 1) or N:M
    pattern.label           -> "2:4"       how reports and logs print it
    pattern.path_label      -> "2-4"       its folder name in result paths (':' is awkward in paths)
    SparsityPattern.from_path_label("2-4") back from a folder name
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from .errors import WandappError


@dataclass(frozen=True)
class SparsityPattern:
    ratio: float  # fraction of weights pruned
    n: int = 0  # kept per group (N:M only)
    m: int = 0  # group size (N:M only)
    count: int | None = None  # unstructured only: exact number of weights to prune in the matrix (a profile's)

    @property
    def is_nm(self) -> bool:
        return self.m > 0

    @property
    def label(self) -> str:
        """'N:M', or the ratio in plain decimals, every digit kept: '0.50' and '.5' -> '0.5', '1e-5' -> '0.00001'
        (so the label parses back to the same ratio, and a config spelling and its result folder agree)."""
        if self.is_nm:
            return f"{self.n}:{self.m}"
        return format(Decimal(repr(self.ratio)).normalize(), "f")

    @property
    def path_label(self) -> str:
        return self.label.replace(":", "-")

    @classmethod
    def parse(cls, text: str) -> "SparsityPattern":
        """'0.5' (unstructured ratio in [0, 1)) or 'N:M' (keep N of every M, N < M)."""
        text = str(text).strip()
        if match := re.fullmatch(r"(\d+):(\d+)", text):
            n, m = int(match[1]), int(match[2])
            if m < 1 or n < 1 or n >= m:
                raise WandappError(f"invalid N:M sparsity {text!r}: need 1 <= N < M (keep N of every M weights)")
            return cls(ratio=1 - n / m, n=n, m=m)
        try:
            ratio = float(text)
        except ValueError:
            raise WandappError(f"invalid sparsity {text!r}: give a ratio in [0, 1) or N:M such as 2:4") from None
        if not 0 <= ratio < 1:
            raise WandappError(f"sparsity {ratio:g} is outside [0, 1)")
        return cls(ratio=ratio)

    @classmethod
    def from_path_label(cls, text: str) -> "SparsityPattern":
        """The pattern a result folder is named after ("2-4", "0.5"; "0" is the dense baseline)."""
        if re.fullmatch(r"\d+-\d+", text):
            return cls.parse(text.replace("-", ":"))
        if "-" in text or ":" in text:
            raise WandappError(f"invalid sparsity folder {text!r}: expected a ratio such as 0.5 or N-M such as 2-4")
        return cls.parse(text)

    def mask(self, score):
        """Bool mask, True where pruned, of a (rows, cols) score tensor."""
        from .masks import count_mask, nm_mask, unstructured_mask

        if self.is_nm:
            return nm_mask(score, self.n, self.m)
        if self.count is not None:  # a sparsity profile's exact count (wandapp/profile.py)
            return count_mask(score, self.count)
        return unstructured_mask(score, self.ratio)
