"""The persona axis: a direction in the simulator's residual stream from "in persona" to "default assistant".

After Lu et al. 2026 ("The Assistant Axis"), with the transformers backend:

1. `line_activations`: the residual stream at one decoder layer's output, averaged over the tokens
   of each line, read as the model speaks it: user lines inside the persona's own chat (roles
   flipped, as the simulator built it), assistant lines inside the assistant's chat.
2. `fit_axis`: direction = mean(assistant lines) - mean(persona lines), unit length. It points
   toward the default assistant, so a persona line that drifts into assistant talk projects higher.
3. `PersonaAxis.project`: each line's projection <mean activation, direction>; a judge-free drift
   signal, reported per user turn.
4. `persona_cap(backend, layer, threshold, direction)`: a context manager that registers a forward
   hook on that decoder layer and, for every token, removes the part of the projection above
   `threshold` (h <- h - max(<h, d> - threshold, 0) d), so generation cannot move further toward
   the assistant side. Projections and threshold share units: a threshold between the persona
   and assistant means of a fitted axis caps only assistant-like states.

The direction is fitted on a run's lines, so it names the model it came from; this module does not
judge text. `parse_persona_cap("LAYER:THRESHOLD")` parses the CLI flag.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simgen.data import Dialogue
from simgen.errors import ConfigError


@dataclass(frozen=True)
class PersonaAxis:
    layer: int  # decoder layer whose output is read (0-based)
    direction: tuple[float, ...]  # unit vector (hidden,), persona -> default assistant
    persona_mean: float  # mean projection of the persona's lines
    assistant_mean: float  # mean projection of the assistant's lines
    n_persona: int
    n_assistant: int
    model: str = ""  # fingerprint of the model it was fitted on

    @property
    def midpoint(self) -> float:
        return (self.persona_mean + self.assistant_mean) / 2

    def vector(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=np.float32)

    def project(self, activations: np.ndarray) -> np.ndarray:
        """(n, hidden) mean activations -> (n,) projections."""
        return np.asarray(activations, dtype=np.float32) @ self.vector()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"direction": list(self.direction), "midpoint": self.midpoint}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict()) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> PersonaAxis:
        try:
            raw = json.loads(Path(path).read_text())
            raw.pop("midpoint", None)
            return cls(**{**raw, "direction": tuple(raw["direction"])})
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise ConfigError(f"{path}: not a persona-axis file written by simgen consistency ({type(e).__name__}: {e}).") from None


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


def default_layer(backend: Any) -> int:
    from simgen.consistency.lm import decoder_layers

    return len(decoder_layers(backend.model)) // 2


def line_activations(backend: Any, scenario: Any, dialogues: Sequence[Dialogue], max_turns: int, layer: int,
                     batch_size: int = 8) -> tuple[list[tuple[str, int]], np.ndarray, np.ndarray]:
    """(keys (dialogue_id, user_turn) of the user lines, their activations (n, hidden), the assistant lines' (m, hidden))."""
    from simgen.consistency.lm import continuation_activations
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
                assistant_items.append((assistant_chat(scenario, d.turns[:i], max_turns), t.text))
    persona = continuation_activations(backend, persona_items, layer, batch_size)
    assistant = continuation_activations(backend, assistant_items, layer, batch_size)
    return keys, persona, assistant


def parse_persona_cap(spec: str) -> tuple[int, float]:
    """`"LAYER:THRESHOLD"` -> (layer, threshold), e.g. "15:2.5" -> (15, 2.5)."""
    layer_s, sep, threshold_s = str(spec).strip().partition(":")
    if not sep:
        raise ConfigError(f"--persona-cap {spec!r}: expected LAYER:THRESHOLD, e.g. 15:2.5 (a decoder layer index and a projection cap).")
    try:
        layer = int(layer_s)
    except ValueError:
        raise ConfigError(f"--persona-cap {spec!r}: the layer {layer_s!r} is not an integer; expected LAYER:THRESHOLD, e.g. 15:2.5.") from None
    try:
        threshold = float(threshold_s)
    except ValueError:
        raise ConfigError(f"--persona-cap {spec!r}: the threshold {threshold_s!r} is not a number; expected LAYER:THRESHOLD, e.g. 15:2.5.") from None
    if not math.isfinite(threshold):
        raise ConfigError(f"--persona-cap {spec!r}: the threshold must be a finite number.")
    return layer, threshold


@contextlib.contextmanager
def persona_cap(backend: Any, layer: int, threshold: float, direction: Sequence[float] | np.ndarray | PersonaAxis) -> Iterator[None]:
    """While inside, cap every token's projection on `direction` at `threshold` at decoder layer `layer`.

    `backend` is a TransformersBackend (anything with `.model`); `direction` a (hidden,) vector (made
    unit length here) or a PersonaAxis. The hook is removed on exit, also on error.
    """
    import torch

    from simgen.consistency.lm import check_layer, decoder_layers

    vec = direction.vector() if isinstance(direction, PersonaAxis) else np.asarray(direction, dtype=np.float32)
    hidden = backend.model.config.hidden_size
    if vec.shape != (hidden,):
        raise ConfigError(f"persona cap: the direction has shape {vec.shape}, the model's hidden size is {hidden}; fit the axis on the same model.")
    norm = float(np.linalg.norm(vec))
    if not math.isfinite(norm) or norm == 0.0:
        raise ConfigError("persona cap: the direction is zero or not finite.")
    d = torch.tensor(vec / norm, dtype=torch.float32, device=backend.model.device)
    index = check_layer(backend.model, layer)

    def hook(_module, _inputs, output):  # noqa: ANN001, ANN202
        states = output[0] if isinstance(output, tuple) else output  # (batch, seq, hidden)
        h = states.float()
        excess = (h @ d - threshold).clamp(min=0.0)  # (batch, seq)
        capped = (h - excess[..., None] * d).to(states.dtype)
        return (capped, *output[1:]) if isinstance(output, tuple) else capped

    handle = decoder_layers(backend.model)[index].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
