"""The persona axis: a direction in the simulator's residual stream from "in persona" to "default assistant".

After Lu et al. 2026 ("The Assistant Axis"), with the transformers backend:

1. `line_activations`: the residual stream at one decoder layer's output, averaged over the tokens
   of each line, read as the model speaks it: user lines inside the persona's own chat (roles
   flipped, as the simulator built it), assistant lines inside the assistant's chat.
2. `fit_axis`: direction = mean(assistant lines) - mean(persona lines), unit length. It points
   toward the default assistant, so a persona line that drifts into assistant talk projects higher.
3. `PersonaAxis.project`: each line's projection <mean activation, direction>; a judge-free drift
   signal, reported per user turn.

The direction is fitted on a run's lines, so it names the model it came from; this module does not
judge text. Applying it is the backend's (`simgen.backends.steering`: the `PersonaAxis` record, the
`persona_cap` hook that removes the part of each token's projection above a threshold, and the
capped user side of `simgen generate --persona-cap`), so generation never imports this check.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from simgen.backends import Scorer
from simgen.backends.steering import PersonaAxis
from simgen.data import Dialogue
from simgen.errors import ConfigError


def fit_axis(persona: np.ndarray, assistant: np.ndarray, layer: int, model: str = "") -> PersonaAxis:
    """The unit direction from the mean persona activation to the mean assistant activation."""
    sums = AxisSums()
    sums.add([], persona, assistant)
    return sums.fit(layer, model)


class AxisSums:
    """Running sums of the persona and assistant activations, so a run's axis is fitted chunk by chunk.

    `add` takes one chunk's activations (rows with NaN, lines without text, are left out of the
    means); with `spill`, the chunk's persona activations go to that .npy file and `projections`
    reads them back once the axis is fitted, so no more than one chunk is held in memory.
    """

    def __init__(self) -> None:
        self.persona = self.assistant = None
        self.n_persona = self.n_assistant = 0
        self.chunks: list[tuple[list[tuple[str, int]], Path]] = []

    def add(self, keys: list[tuple[str, int]], persona: np.ndarray, assistant: np.ndarray, spill: Path | None = None) -> None:
        p = persona[~np.isnan(persona).any(axis=1)].astype(np.float64)
        a = assistant[~np.isnan(assistant).any(axis=1)].astype(np.float64)
        if len(p):
            self.persona = p.sum(0) + (0 if self.persona is None else self.persona)
        if len(a):
            self.assistant = a.sum(0) + (0 if self.assistant is None else self.assistant)
        self.n_persona += len(p)
        self.n_assistant += len(a)
        if spill is not None:
            np.save(spill, np.asarray(persona, dtype=np.float32))
            self.chunks.append((list(keys), spill))

    def fit(self, layer: int, model: str = "") -> PersonaAxis:
        if not self.n_persona or not self.n_assistant:
            raise ConfigError(f"the persona axis needs lines of both sides; got {self.n_persona} persona and "
                              f"{self.n_assistant} assistant lines with text.")
        persona_mean, assistant_mean = self.persona / self.n_persona, self.assistant / self.n_assistant
        diff = assistant_mean - persona_mean
        norm = float(np.linalg.norm(diff))
        if not math.isfinite(norm) or norm == 0.0:
            raise ConfigError("the persona and assistant activations have the same mean; no persona axis can be fitted.")
        d = (diff / norm).astype(np.float32)
        return PersonaAxis(layer, tuple(float(v) for v in d), float(persona_mean @ d), float(assistant_mean @ d),
                           self.n_persona, self.n_assistant, model)

    def projections(self, axis: PersonaAxis) -> Iterator[tuple[tuple[str, int], float]]:
        """((dialogue_id, user_turn), projection) for every spilled persona line with text."""
        for keys, path in self.chunks:
            for key, p in zip(keys, axis.project(np.load(path, mmap_mode="r"))):
                if p == p:  # NaN: a line without text
                    yield key, float(p)


def default_layer(backend: Scorer) -> int:
    return backend.num_layers // 2


def line_activations(backend: Scorer, scenario: Any, dialogues: Sequence[Dialogue], max_turns: int, layer: int,
                     pass_tokens: int | None = None) -> tuple[list[tuple[str, int]], np.ndarray, np.ndarray]:
    """(keys (dialogue_id, user_turn) of the user lines, their activations (n, hidden), the assistant lines' (m, hidden))."""
    from simgen.generation.chats import assistant_chat, job_of, user_chat

    persona_items, keys, assistant_items = [], [], []
    for d in dialogues:
        job = job_of(scenario, d)
        k = 0
        for i, t in enumerate(d.turns):
            if t.role == "user":
                persona_items.append((user_chat(scenario, job, d.turns, k, max_turns), t.text))
                keys.append((d.dialogue_id, k))
                k += 1
            else:
                assistant_items.append((assistant_chat(scenario, job.profile, d.turns[:i], max_turns), t.text))
    persona = backend.continuation_activations(persona_items, layer, pass_tokens=pass_tokens)
    assistant = backend.continuation_activations(assistant_items, layer, pass_tokens=pass_tokens)
    return keys, persona, assistant


