"""Backends: what turns a batch of chats into a batch of lines.

A backend is a small ABC with one main method, `generate(chats, sampling, seeds)`. The simulator
calls it once per side per turn with every active dialogue of the batch, so a backend that can
batch (transformers) advances all of them in one forward pass. `seeds` holds one integer per
chat, derived from (run seed, dialogue index, turn, side): a backend that honours them makes
dialogue i the same whatever batch it lands in.

Backends are named in a lazy registry (`"name": "module:object"`), so naming one imports only it.
Capabilities are flags, never isinstance checks: `batched`, `seeded`, `logprobs`.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from simgen.config import SamplingConfig
from simgen.data import Chat, Generation
from simgen.errors import ConfigError, unknown_name

# backend name -> "module:class"
REGISTRY: dict[str, str] = {
    "transformers": "simgen.backends.transformers:TransformersBackend",
    "callable": "simgen.backends.callable:CallableBackend",
}


class Backend(ABC):
    """Turns chats into lines. Subclasses set `name` and their capability flags."""

    name: ClassVar[str] = "backend"
    batched: ClassVar[bool] = False  # one call advances many chats in one pass
    seeded: ClassVar[bool] = False  # honours per-chat seeds (reproducible sampling)
    logprobs: ClassVar[bool] = False  # can score text (used by consistency checks)

    @abstractmethod
    def generate(self, chats: Sequence[Chat], sampling: SamplingConfig, seeds: Sequence[int]) -> list[Generation]:
        """One line per chat, in order. A chat that fails gets a `Generation` with `error` set."""

    def describe(self) -> dict[str, Any]:
        """What the manifest records about this backend."""
        return {"backend": self.name}


def backend_class(name: str) -> type[Backend]:
    target = REGISTRY.get(name)
    if target is None:
        raise ConfigError(unknown_name("backend", name, REGISTRY))
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
