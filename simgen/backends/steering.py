"""Steering the user side along the persona axis (Lu et al. 2026): the axis record, the cap, a capped backend.

    axis = PersonaAxis.load("RUN/reports/persona_axis.json")   # fitted by `simgen consistency`
    with persona_cap(backend, layer=15, threshold=2.0, direction=axis): ...   # a forward hook
    CappedBackend.from_spec(backend, "15:2.0", axis_path)       # the user side of `--persona-cap`

The cap clamps every token's projection on the axis at one decoder layer's output while the block
runs. It needs a backend that can steer (`Backend.scorer`: the transformers backend); the consistency
check fits the axis (simgen.consistency.axis) and this module applies it, so generation never
imports a check.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simgen.backends import Backend, Session
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

    from simgen.backends.scoring import check_layer, decoder_layers

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


class CappedBackend(Backend):
    """The user side with activation capping on the persona axis (Lu et al. 2026), hooked only
    while the user side generates, so an assistant sharing the same model is left alone."""

    def __init__(self, inner: Backend, layer: int, threshold: float, axis: PersonaAxis) -> None:
        if not inner.scorer:
            raise ConfigError(f"--persona-cap steers the model's activations; the {inner.name} backend cannot (use --backend transformers).")
        self.inner, self.layer, self.threshold, self.axis = inner, layer, threshold, axis
        self.name, self.batched, self.seeded = inner.name, inner.batched, inner.seeded

    @classmethod
    def from_spec(cls, inner: Backend, spec: str, axis_path: str | None) -> CappedBackend:
        """The user side of `--persona-cap LAYER:THRESHOLD --persona-axis FILE`."""
        layer, threshold = parse_persona_cap(spec)
        axis = PersonaAxis.load(axis_path)
        if axis.layer != layer:
            raise ConfigError(f"--persona-cap {spec!r}: the axis in {axis_path} was fitted at layer {axis.layer}; cap that layer.")
        return cls(inner, layer, threshold, axis)

    def _capped(self):  # noqa: ANN202
        return self.inner.steer(self.layer, self.threshold, self.axis)

    def generate(self, chats, sampling, seeds):  # noqa: ANN001, ANN201
        with self._capped():
            return self.inner.generate(chats, sampling, seeds)

    def session(self) -> Session:
        return _CappedSession(self.inner.session(), self._capped)

    def encode(self, chat):  # noqa: ANN001, ANN201
        """The inner backend's token ids of `chat` (what a side's `context` budget counts)."""
        return self.inner.encode(chat)

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "persona_cap": {"layer": self.layer, "threshold": self.threshold, "axis_model": self.axis.model}}


class _CappedSession(Session):
    def __init__(self, inner: Session, capped: Callable[[], Any]) -> None:
        self.inner, self.capped = inner, capped
        self.draws_again = getattr(inner, "draws_again", False)

    def generate(self, chats, sampling, seeds, keys, until=None, hold=None, **again):  # noqa: ANN001, ANN003, ANN201
        with self.capped():
            return self.inner.generate(chats, sampling, seeds, keys, until, hold, **again)

    def redraw(self, chats, sampling, seeds, keys, until=None, hold=None):  # noqa: ANN001, ANN201
        with self.capped():
            return self.inner.redraw(chats, sampling, seeds, keys, until, hold)

    def close(self) -> None:
        self.inner.close()
