"""Seeding: every random draw of dialogue i comes from (run seed, i, stream), never from timing.

Streams keep the draws of different stages apart, so adding a turn or a profile variable does not
shift the random numbers of another stage. This is what makes a resumed run byte-identical to an
uninterrupted one, and dialogue i the same whatever batch it lands in.
"""

from __future__ import annotations

import numpy as np

PROFILE, INTENT, USER, ASSISTANT, LENGTH, TURNS, REPLY, ASSISTANT_LENGTH, OPENS, OPENING = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9


def generator(seed: int, index: int, stream: int, draw: int = 0) -> np.random.Generator:
    """A numpy generator for one dialogue and one stream (`draw` > 0: the draw-th alternative draw, e.g.
    `simgen tune`'s profile candidates; draw 0 is seeded as before alternatives existed)."""
    return np.random.default_rng(np.random.SeedSequence([seed, index, stream, *([draw] if draw else [])]))


def derive(seed: int, index: int, stream: int, turn: int, draw: int = 0, take: int = 0) -> int:
    """A 63-bit integer seed for one dialogue, stream and turn (for torch generators and servers).

    `draw` > 0 seeds the draw-th redraw of that line (generation/simulator.py); draw 0 is the first
    draw, seeded as it was before redraws existed. `take` > 0 seeds the take-th writing of the whole
    dialogue (the dialogue guard's redraws, simgen/dialogue_guard.py); take 0 is seeded as before."""
    tail = [draw, take] if take else [draw] if draw else []
    state = np.random.SeedSequence([seed, index, stream, turn, *tail]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])
