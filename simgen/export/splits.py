"""Splits and duplicates: which dialogues of a run an export keeps, and in which split.

    dedup      exact duplicates: the same normalised text (lower-cased words, punctuation and
               spacing ignored) of every line; near duplicates: Jaccard similarity of word-3-gram
               shingles >= `near_dup_threshold`, found by MinHash with LSH banding (numpy only) and
               confirmed on the exact shingle sets. Dialogues are taken in run order, and one is
               dropped when an earlier kept dialogue is its duplicate, so every dropped dialogue has
               a kept twin (A~B and B~C with A!~C drops B only).
    split      by dialogue, never by turn: dialogue d goes to the split in which a hash of
               (seed, d's id) falls, a uniform number in [0, 1) cut at the cumulative fractions.
               So the split of a dialogue depends only on the seed and its id: a dialogue keeps its
               split when the run grows, and duplicates are dropped before splitting, so a near-copy
               never sits in train while its twin is in test.

The result is a `Selection`: dialogue_id -> split for the kept dialogues, and what was dropped and
why. This module reads a turns frame lazily and writes nothing.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from simgen.errors import ConfigError
from simgen.generation.run import dialogue_spans, read_dialogues

SPLITS = ("train", "validation", "test")
_PRIME = np.uint64((1 << 32) - 5)  # the largest prime below 2^32: MinHash permutations are (a x + b) mod p


@dataclass(frozen=True)
class SplitConfig:
    """How an export splits and deduplicates a run (the CLI's --splits, --seed, --dedup, --near-dup-threshold)."""

    fractions: tuple[float, float, float] = field(default=(0.9, 0.05, 0.05), metadata={"help": "train, validation, test; sum to 1"})
    seed: int = field(default=0, metadata={"help": "seed of the split assignment"})
    dedup: bool = field(default=True, metadata={"help": "drop exact and near-duplicate dialogues"})
    near_dup_threshold: float = field(default=0.85, metadata={"help": "Jaccard similarity of word 3-gram shingles at or above which two dialogues are near duplicates"})
    num_perm: int = field(default=128, metadata={"help": "MinHash permutations"})

    def __post_init__(self) -> None:
        if len(self.fractions) != 3 or any(not isinstance(f, (int, float)) or f < 0 for f in self.fractions):
            raise ConfigError(f"--splits must be three non-negative fractions (train, validation, test), got {self.fractions!r}.")
        if abs(sum(self.fractions) - 1.0) > 1e-6:
            raise ConfigError(f"--splits {','.join(map(str, self.fractions))}: the fractions sum to {sum(self.fractions):g}, not 1.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"--seed must be a non-negative integer, got {self.seed!r}.")
        if not (0.0 < self.near_dup_threshold <= 1.0):
            raise ConfigError(f"--near-dup-threshold must be in (0, 1], got {self.near_dup_threshold}.")

    def to_dict(self) -> dict[str, Any]:
        return {"fractions": dict(zip(SPLITS, self.fractions)), "seed": self.seed, "dedup": self.dedup,
                "near_dup_threshold": self.near_dup_threshold, "shingles": "word 3-grams", "num_perm": self.num_perm}


def parse_splits(text: str) -> tuple[float, float, float]:
    """`"0.9,0.05,0.05"` -> (0.9, 0.05, 0.05); the validation happens in `SplitConfig`."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise ConfigError(f"--splits {text!r}: expected three comma-separated fractions such as 0.9,0.05,0.05.") from None
    if len(values) != 3:
        raise ConfigError(f"--splits {text!r}: expected three fractions (train, validation, test), got {len(values)}.")
    return values  # type: ignore[return-value]


@dataclass(frozen=True)
class Selection:
    """The kept dialogues with their split, and the dropped ones with the dialogue each duplicates."""

    assignments: pl.DataFrame  # dialogue_id, split: one row per kept dialogue, in run order
    dropped: pl.DataFrame  # dialogue_id, duplicate_of, kind ("exact" | "near"), jaccard
    config: SplitConfig

    @property
    def counts(self) -> dict[str, Any]:
        kinds = self.dropped["kind"].to_list()
        by_split = {s: 0 for s in SPLITS} | dict(self.assignments.group_by("split").len().iter_rows())
        return {"dialogues": self.assignments.height + self.dropped.height, "kept": self.assignments.height,
                "exact_duplicates": kinds.count("exact"), "near_duplicates": kinds.count("near"),
                "splits": {s: by_split[s] for s in SPLITS}}

    def summary(self) -> dict[str, Any]:
        """JSON-ready: the config, the counts and the dropped dialogues."""
        return {**self.config.to_dict(), "counts": self.counts, "dropped": self.dropped.to_dicts()}


def normalise(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def dialogue_texts(turns: pl.LazyFrame) -> pl.DataFrame:
    """(dialogue) -> its normalised text, every line as `role: words`, in run order."""
    return (
        turns.sort("dialogue_id", "turn")
        .group_by("dialogue_id", maintain_order=True)
        .agg((pl.col("role") + pl.lit(": ") + pl.col("text").fill_null("")).str.join("\n").alias("text"))
        .collect()
        .with_columns(pl.col("text").map_elements(normalise, return_dtype=pl.String()))
    )


def split_of(dialogue_ids: list[str], config: SplitConfig) -> list[str]:
    """The split of each dialogue: a hash of (seed, id) as a uniform number, cut at the cumulative fractions."""
    edges = np.cumsum(config.fractions)
    out = []
    for did in dialogue_ids:
        h = hashlib.blake2b(f"{config.seed}\x00{did}".encode(), digest_size=8).digest()
        u = int.from_bytes(h, "big") / 2**64
        out.append(SPLITS[min(int(np.searchsorted(edges, u, side="right")), 2)])
    return out


def _shingles(text: str, n: int = 3) -> np.ndarray:
    """Hashed word n-grams of a normalised text (a short text is one shingle)."""
    words = text.split()
    grams = [" ".join(words[i:i + n]) for i in range(max(len(words) - n + 1, 1))]
    return np.unique(np.array([int.from_bytes(hashlib.blake2b(g.encode(), digest_size=4).digest(), "big") for g in grams], dtype=np.uint64))


def _bands(num_perm: int, threshold: float) -> tuple[int, int]:
    """(bands, rows) with bands x rows = num_perm: the most rows per band (fewest false candidates)
    that still makes a pair at the threshold a candidate with probability >= 0.995."""
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        if num_perm % rows:
            continue
        bands = num_perm // rows
        if 1 - (1 - threshold ** rows) ** bands >= 0.995:
            best = (bands, rows)
    return best


DEDUP_CHUNK = 5000  # dialogues whose text is held at a time while looking for duplicates


def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 1 << 31, size=num_perm, dtype=np.uint64)
    b = rng.integers(0, 1 << 31, size=num_perm, dtype=np.uint64)
    return a, b


def _signature(shingles: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The MinHash signature of one shingle set (uint32: every value is below the prime < 2^32)."""
    return ((np.outer(shingles, a) + b) % _PRIME).min(axis=0).astype(np.uint32)


def _candidates(signatures: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Row pairs (i < j) that share a whole LSH band of their signatures."""
    bands, rows = _bands(signatures.shape[1], threshold)
    candidates: set[tuple[int, int]] = set()
    for band in range(bands):
        buckets: dict[bytes, list[int]] = {}
        for i, key in enumerate(signatures[:, band * rows:(band + 1) * rows]):
            buckets.setdefault(key.tobytes(), []).append(i)
        for members in buckets.values():
            candidates.update((members[x], members[y]) for x in range(len(members)) for y in range(x + 1, len(members)))
    return sorted(candidates)


def _jaccard(x: np.ndarray, y: np.ndarray) -> float:
    inter = np.intersect1d(x, y, assume_unique=True).size
    return inter / (x.size + y.size - inter)


def near_duplicates(texts: list[str], threshold: float, num_perm: int = 128, seed: int = 0) -> list[tuple[int, int, float]]:
    """Pairs (i, j, jaccard), i < j, whose shingle sets have Jaccard similarity >= threshold."""
    shingles = [_shingles(t) for t in texts]
    a, b = _permutations(num_perm, seed)
    signatures = np.stack([_signature(s, a, b) for s in shingles]) if shingles else np.zeros((0, num_perm), np.uint32)
    out = []
    for i, j in _candidates(signatures, threshold):
        jaccard = _jaccard(shingles[i], shingles[j])
        if jaccard >= threshold:
            out.append((i, j, float(jaccard)))
    return out


def _texts(turns: pl.LazyFrame, spans: pl.DataFrame) -> list[str]:
    """The normalised texts of the dialogues in `spans`, in their order."""
    texts = dialogue_texts(read_dialogues(turns, spans).lazy())
    if texts["dialogue_id"].to_list() != spans["dialogue_id"].to_list():
        raise RuntimeError("dialogue texts came back out of step with the dialogue ids")
    return texts["text"].to_list()


def find_duplicates(turns: pl.LazyFrame, spans: pl.DataFrame, config: SplitConfig,
                    chunk: int | None = None) -> dict[int, tuple[int, str, float]]:
    """dropped dialogue (row of `spans`) -> (kept dialogue, "exact" | "near", jaccard), read `chunk`
    (default DEDUP_CHUNK) dialogues at a time.

    What stays in memory is a 16-byte hash and a MinHash signature per dialogue (512 bytes at 128
    permutations), never the run's text: near-duplicate candidates are confirmed by reading the
    texts of the dialogues in candidate pairs again, a chunk at a time.
    """
    chunk = chunk or DEDUP_CHUNK
    a, b = _permutations(config.num_perm, config.seed)
    first: dict[bytes, int] = {}
    duplicate_of: dict[int, tuple[int, str, float]] = {}
    unique: list[int] = []
    signatures = np.zeros((spans.height, config.num_perm), np.uint32)
    for start in range(0, spans.height, chunk):
        for k, text in enumerate(_texts(turns, spans.slice(start, chunk))):
            i = start + k
            key = hashlib.blake2b(text.encode(), digest_size=16).digest()
            if key in first:
                duplicate_of[i] = (first[key], "exact", 1.0)
            else:
                first[key] = i
                unique.append(i)
                signatures[len(unique) - 1] = _signature(_shingles(text), a, b)
    pairs = [(unique[x], unique[y]) for x, y in _candidates(signatures[:len(unique)], config.near_dup_threshold)]
    involved = sorted({i for pair in pairs for i in pair})
    shingles: dict[int, np.ndarray] = {}
    for start in range(0, len(involved), chunk):
        rows = involved[start:start + chunk]
        shingles.update(zip(rows, map(_shingles, _texts(turns, spans[rows]))))
    partners: dict[int, list[tuple[int, float]]] = {}  # later dialogue -> [(earlier dialogue, jaccard)]
    for i, j in pairs:
        jaccard = _jaccard(shingles[i], shingles[j])
        if jaccard >= config.near_dup_threshold:
            partners.setdefault(j, []).append((i, jaccard))
    for j in unique:  # in run order: drop j when an earlier *kept* dialogue is its near twin
        twins = [(i, jac) for i, jac in partners.get(j, []) if i not in duplicate_of]
        if twins:
            i, jac = min(twins)
            duplicate_of[j] = (i, "near", round(jac, 4))
    return duplicate_of


def select(turns: pl.LazyFrame, config: SplitConfig = SplitConfig()) -> Selection:
    """Deduplicate the dialogues of a turns frame (if `config.dedup`) and assign the rest to splits.

    The turns are read lazily: dialogue ids, then (with dedup) a chunk of dialogue texts at a time.
    """
    spans = dialogue_spans(turns)
    ids = spans["dialogue_id"].to_list()
    duplicate_of = find_duplicates(turns, spans, config) if config.dedup else {}
    kept_ids = [d for i, d in enumerate(ids) if i not in duplicate_of]
    assignments = pl.DataFrame({"dialogue_id": kept_ids, "split": split_of(kept_ids, config)},
                               schema={"dialogue_id": pl.String(), "split": pl.String()})
    dropped = pl.DataFrame(
        [{"dialogue_id": ids[i], "duplicate_of": ids[k], "kind": kind, "jaccard": jac} for i, (k, kind, jac) in sorted(duplicate_of.items())],
        schema={"dialogue_id": pl.String(), "duplicate_of": pl.String(), "kind": pl.String(), "jaccard": pl.Float64()},
    )
    return Selection(assignments, dropped, config)
