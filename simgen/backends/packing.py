"""Score many token sequences that share prefixes: a token trie streamed through the model.

The consistency check scores sequences that begin alike: every user line of a dialogue is its chat
so far plus the line (each chat a prefix of the next), every Q&A option continues the same chat and
question, every judge prompt starts with the same instructions and persona. Run one at a time, a
dialogue of k lines costs O(k^2) tokens. Here every distinct prefix runs once.

`pack` sorts the sequences. In lexicographic order the longest prefix a sequence shares with any
sequence before it is the one it shares with its predecessor, so walking the sorted list lays the
token trie out in depth-first order: each sequence adds only its tokens after that shared prefix
(new *slots*), and `Trie.paths[i]` lists the slots of sequence i's tokens.

`Trie.chunks` cuts the slots into forward passes of at most `size` tokens. A chunk attends to the
KV cache of the slots before it that a later token still needs, plus itself, through a tree mask:
each slot sees exactly the slots of its own path up to itself, at its own position in its sequence.
So every token is computed from the same context as if its sequence ran alone (the outputs equal
the unpacked ones up to float rounding), and after each chunk the cache keeps only the slots some
later slot still reads (`Trie.last_use`): a finished Q&A option, a judged line, a dialogue already
passed leave it. The cache holds about one path plus one chunk; attention never spends more than a
chunk's width on slots a token does not see. This module is numpy only: it knows ids, not models.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

PASS_TOKENS = 512  # query tokens per forward pass; benchmarks/bench_consistency.py --pass-tokens compares others


@dataclass(frozen=True)
class Chunk:
    """One forward pass: slots [start, stop) as queries; keys are `cached` (in cache order) then the queries."""

    start: int
    stop: int
    cached: np.ndarray  # (k,) slots held in the KV cache before this chunk, in cache order
    mask: np.ndarray  # (stop - start, k + stop - start) bool: query row may attend to key column
    keep: np.ndarray  # slots whose cache entries stay after this chunk, in cache order
    kept: np.ndarray  # their key columns (indices into cached + queries)


@dataclass
class Trie:
    ids: np.ndarray  # (slots,) token id of each slot
    positions: np.ndarray  # (slots,) each slot's position in its sequence(s)
    paths: list[np.ndarray]  # per sequence (input order): the slot of each of its tokens
    starts: np.ndarray  # per sequence: index in its sequence of its first new token (its shared prefix's length)
    last_use: np.ndarray  # (slots,) the last slot whose path holds this slot

    def __len__(self) -> int:
        return len(self.ids)

    def chunks(self, size: int = PASS_TOKENS) -> Iterator[Chunk]:
        """The forward passes, in order; each `Chunk.mask` is the tree mask of its rows."""
        if size <= 0:
            raise ValueError(f"chunk size must be positive, got {size}")
        # the sequences that own new slots, ordered by their first new slot (new slots are contiguous per sequence)
        owners = [i for i, p in enumerate(self.paths) if len(p) > self.starts[i]]
        owners.sort(key=lambda i: self.paths[i][self.starts[i]])
        firsts = np.array([self.paths[i][self.starts[i]] for i in owners], dtype=np.int64)
        cached = np.empty(0, dtype=np.int64)
        column = np.full(len(self), -1, dtype=np.int64)  # slot -> key column in the current chunk
        for start in range(0, len(self), size):
            stop = min(start + size, len(self))
            keys = np.concatenate([cached, np.arange(start, stop, dtype=np.int64)])
            column[keys] = np.arange(len(keys))
            mask = np.zeros((stop - start, len(keys)), dtype=bool)
            lo = max(int(np.searchsorted(firsts, start, side="right")) - 1, 0)
            hi = int(np.searchsorted(firsts, stop, side="left"))
            for i in owners[lo:hi]:
                path, new = self.paths[i], int(self.starts[i])
                # sequence tokens new..len(path)-1 sit at consecutive slots; take those inside [start, stop)
                first = max(new, new + start - int(path[new]))
                last = min(len(path), new + stop - int(path[new]))
                if first >= last:
                    continue
                rows = path[first:last] - start
                # the token at sequence index j sees path[: j + 1]
                seen = column[path[:last]]
                mask[np.ix_(rows, seen)] = np.tri(last - first, last, k=first, dtype=bool)
            column[keys] = -1
            kept = np.flatnonzero(self.last_use[keys] >= stop)
            yield Chunk(start, stop, cached, mask, keys[kept], kept)
            cached = keys[kept]


def _shared(a: np.ndarray, b: np.ndarray) -> int:
    """Length of the common prefix of two id arrays."""
    m = min(len(a), len(b))
    differ = np.flatnonzero(a[:m] != b[:m])
    return int(differ[0]) if len(differ) else m


def pack(sequences: Sequence[Sequence[int]]) -> Trie:
    """The token trie of `sequences` (empty ones get an empty path)."""
    arrays = [np.asarray(s, dtype=np.int64) for s in sequences]
    order = sorted(range(len(arrays)), key=lambda i: arrays[i].tolist())
    ids: list[np.ndarray] = []
    positions: list[np.ndarray] = []
    paths: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * len(arrays)
    starts = np.zeros(len(arrays), dtype=np.int64)
    size = 0
    prev: np.ndarray | None = None
    prev_path = np.empty(0, dtype=np.int64)
    for i in order:
        seq = arrays[i]
        common = _shared(prev, seq) if prev is not None else 0
        new = len(seq) - common
        paths[i] = np.concatenate([prev_path[:common], np.arange(size, size + new, dtype=np.int64)])
        starts[i] = common
        ids.append(seq[common:])
        positions.append(np.arange(common, len(seq), dtype=np.int64))
        size += new
        prev, prev_path = seq, paths[i]
    last_use = np.arange(size, dtype=np.int64)
    for path in paths:
        if len(path):
            np.maximum.at(last_use, path, path[-1])
    empty = np.empty(0, dtype=np.int64)
    return Trie(np.concatenate(ids) if ids else empty, np.concatenate(positions) if positions else empty, paths, starts, last_use)
