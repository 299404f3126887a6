"""Known distortions of a real corpus, for calibrating the realism check.

A check that cannot tell a corpus from a visibly broken copy of itself is useless; one that tells
two halves of a corpus apart is miscalibrated. These functions make both kinds of input from a
canonical turns frame (see `simgen.corpora`), seeded and without touching the input:

- `split_halves`: two disjoint halves by dialogue;
- `shuffle_turns`: every turn's text replaced by a random text of the same role from any
  dialogue (structure kept, coherence destroyed);
- `swap_roles`: user and assistant labels swapped;
- `truncate_text`: every turn cut to its first half of words (at least one word).

They leave out subtler distortions (paraphrase, persona drift); those need a generator.
"""

from __future__ import annotations

import numpy as np
import polars as pl


def split_halves(turns: pl.DataFrame, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Two disjoint halves by dialogue (random, seeded)."""
    ids = np.array(sorted(turns["dialogue_id"].unique().to_list()), dtype=object)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(ids))
    a = set(ids[perm[: len(ids) // 2]].tolist())
    mask = turns["dialogue_id"].is_in(list(a))
    return turns.filter(mask), turns.filter(~mask)


def shuffle_turns(turns: pl.DataFrame, seed: int = 0) -> pl.DataFrame:
    """Permute texts among turns of the same role, across all dialogues."""
    rng = np.random.default_rng(seed)
    text = turns["text"].to_numpy().copy()
    roles = turns["role"].to_numpy()
    for role in ("user", "assistant"):
        idx = np.flatnonzero(roles == role)
        text[idx] = text[rng.permutation(idx)]
    return turns.with_columns(pl.Series("text", text, dtype=pl.String))


def swap_roles(turns: pl.DataFrame) -> pl.DataFrame:
    """User turns become assistant turns and vice versa (labels such as intent are dropped)."""
    out = turns.with_columns(
        pl.when(pl.col("role") == "user").then(pl.lit("assistant")).otherwise(pl.lit("user")).alias("role")
    )
    return out.drop([c for c in ("intent",) if c in out.columns])


def truncate_text(turns: pl.DataFrame, fraction: float = 0.5) -> pl.DataFrame:
    """Keep the first `fraction` of each turn's words (at least one)."""
    cut = [" ".join(w[: max(1, int(len(w) * fraction))]) for w in (t.split() or [""] for t in turns["text"].to_list())]
    return turns.with_columns(pl.Series("text", cut, dtype=pl.String))
