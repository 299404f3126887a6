"""benchmarks/style_giveaways.py: which of the style member's features tell the sides apart.

Two corpora whose user lines are drawn from one pool of texts and differ only in where they stand
(the real dialogues run to 40 turns, the simulated ones stop at 10, as a cap that binds would make
them): the turn's position must come out as the giveaway, alone and left out, and a feature the
sides share must not.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from tests.conftest import load_benchmark
from simgen.realism.features import build_units, user_turn_style

POOL = ["hi there", "what do you do for fun?", "i love hiking with my dog on weekends", "haha same", "ok bye!",
        "I work at a bakery downtown.", "that sounds fun", "do you have any pets?"]


def corpus(n_dialogues: int, n_turns: int, rng: np.random.Generator) -> pl.DataFrame:
    rows = [{"dialogue_id": f"d{d}", "turn": t, "role": "user" if t % 2 == 0 else "assistant", "text": POOL[rng.integers(len(POOL))]}
            for d in range(n_dialogues) for t in range(n_turns)]
    return pl.DataFrame(rows)


def test_a_binding_cap_shows_as_the_position_giveaway():
    bench = load_benchmark("style_giveaways")
    rng = np.random.default_rng(0)
    units = build_units(corpus(40, 40, rng), corpus(120, 10, rng))
    X, names = user_turn_style(units)
    keep = [names.index(c) for c in ("position", "words", "starts_upper")]
    rows = {r["feature"]: r for r in bench.giveaways(X[:, keep], units.y_user, units.user["key"].to_numpy(),
                                                      [names[j] for j in keep])}
    assert rows["*"]["alone"] > 0.75 and rows["position"]["alone"] > 0.75
    assert rows["position"]["without"] < 0.6 < rows["words"]["without"]  # leaving position out costs the member its lead
    assert abs(rows["words"]["alone"] - 0.5) < 0.08 and abs(rows["starts_upper"]["alone"] - 0.5) < 0.08
