"""Near-copies of real lines: one definition for the sim-to-real benchmark's copy rate and for the
redraws' guard against a tuned simulator reciting the lines it was trained on.

A line near-copies a set of real lines when, after normalising (lower case, words only), it equals
one of them, or at least 80% of its word 4-grams occur in one of them. Only lines of at least
`MIN_WORDS` words count: people repeat their short lines ("Hi!", "Thanks, bye!") all the time, and
so may a simulator.

A `CopyIndex` keeps 64-bit hashes of the normalised lines and of their 4-grams, never the text, so
a `simgen tune` folder can carry the index of its training lines (`COPY_INDEX`) wherever the
corpus cannot go.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from simgen.errors import DataError

MIN_WORDS = 4  # shorter lines are never copies: people say "Thanks for the help" too
N = 4  # word n-grams
SHARE = 0.8  # a line with this share of its n-grams in one real line near-copies it
COPY_INDEX = "trained_lines.npz"  # in a `simgen tune` folder: the index of the lines it learned


def words(text: str) -> list[str]:
    """A line's words, normalised: lower case, punctuation dropped."""
    return re.findall(r"\w+", text.lower())


def normal(text: str) -> str:
    """A line normalised for comparing with another (here, and the stop rules' repeated line)."""
    return " ".join(words(text))


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def _grams(ws: list[str]) -> list[int]:
    return sorted({_hash(" ".join(ws[i:i + N])) for i in range(len(ws) - N + 1)})


class CopyIndex:
    """The hashed lines and 4-grams of a set of real lines; `copies(text)` says whether a line near-copies one."""

    def __init__(self, exact: np.ndarray, gram: np.ndarray, line: np.ndarray) -> None:
        self.exact = np.unique(exact.astype(np.uint64))
        order = np.argsort(gram, kind="stable")
        self.gram, self.line = gram.astype(np.uint64)[order], line.astype(np.int64)[order]

    @classmethod
    def from_lines(cls, lines: Iterable[str]) -> CopyIndex:
        exact, gram, line = [], [], []
        for j, text in enumerate(lines):
            ws = words(text)
            if not ws:
                continue
            exact.append(_hash(" ".join(ws)))
            for g in _grams(ws):
                gram.append(g)
                line.append(j)
        return cls(np.array(exact, dtype=np.uint64), np.array(gram, dtype=np.uint64), np.array(line, dtype=np.int64))

    @classmethod
    def union(cls, indices: Iterable[CopyIndex]) -> CopyIndex:
        """One index of every line of `indices` (a line near-copies the union when it near-copies one of them)."""
        exact, gram, line, offset = [], [], [], 0
        for index in indices:
            exact.append(index.exact)
            gram.append(index.gram)
            line.append(index.line + offset)
            offset += int(index.line.max()) + 1 if index.line.size else 0
        return cls(np.concatenate(exact), np.concatenate(gram), np.concatenate(line))

    def copies(self, text: str, min_words: int = MIN_WORDS) -> bool:
        ws = words(text)
        if not ws or len(ws) < min_words:
            return False
        key = np.uint64(_hash(" ".join(ws)))
        at = np.searchsorted(self.exact, key)
        if at < len(self.exact) and self.exact[at] == key:
            return True
        grams = np.array(_grams(ws), dtype=np.uint64)
        lo, hi = np.searchsorted(self.gram, grams, "left"), np.searchsorted(self.gram, grams, "right")
        hits = np.concatenate([self.line[a:b] for a, b in zip(lo, hi)]) if len(grams) else np.empty(0, np.int64)
        return bool(hits.size) and np.bincount(hits).max() / len(grams) >= SHARE

    def rate(self, lines: Iterable[str], min_words: int = 0) -> float:
        """Share of `lines` (those of >= `min_words` words) that near-copy a line of the index."""
        kept = [t for t in lines if len(words(t)) >= min_words]
        return sum(self.copies(t, min_words=0) for t in kept) / max(len(kept), 1)

    def save(self, path: str | Path) -> None:
        np.savez_compressed(path, exact=self.exact, gram=self.gram, line=self.line)

    @classmethod
    def load(cls, path: str | Path) -> CopyIndex:
        try:
            with np.load(path) as z:
                return cls(z["exact"], z["gram"], z["line"])
        except (OSError, KeyError, ValueError) as e:
            raise DataError(f"{path}: not a copy index ({e}); rebuild it with `python scripts/copy_index.py`.") from None
