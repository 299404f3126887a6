"""Backends: what turns a batch of chats into a batch of lines.

A backend is a small ABC with one main method, `generate(chats, sampling, seeds)`. The simulator
calls it once per side per turn with every active dialogue of the batch, so a backend that can
batch (transformers) advances all of them in one forward pass. `seeds` holds one integer per
chat, derived from (run seed, dialogue index, turn, side): a backend that honours them makes
dialogue i the same whatever batch it lands in.

Within one batch of dialogues the simulator talks to a backend through a `Session` per side:
`session.generate(chats, sampling, seeds, keys)`, where `keys` names the dialogue of each chat.
A side's chat only ever grows, so a stateful session (transformers) keeps each dialogue's KV cache
across turns and prefills only the new tokens. The default session is stateless: it just calls
`generate`.

Backends are named in a lazy registry (`"name": "module:object"`), so naming one imports only it.
Capabilities are flags, never isinstance checks: `batched`, `seeded`, `logprobs`.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from collections.abc import Hashable
from typing import Any, ClassVar

from simgen.config import SamplingConfig
from simgen.data import Chat, Generation
from simgen.errors import ConfigError, unknown_name

# backend name -> "module:class"
REGISTRY: dict[str, str] = {
    "transformers": "simgen.backends.transformers:TransformersBackend",
    "callable": "simgen.backends.callable:CallableBackend",
    "openai": "simgen.backends.openai:OpenAIBackend",
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

    def session(self) -> Session:
        """A session for one side of one batch of dialogues; stateless unless a backend overrides it."""
        return StatelessSession(self)


class Session:
    """One side of one batch of dialogues. `keys[i]` names the dialogue of `chats[i]`; a key's chat
    only grows between calls, and a later call may carry fewer keys (dialogues that ended)."""

    def generate(self, chats: Sequence[Chat], sampling: SamplingConfig, seeds: Sequence[int],
                 keys: Sequence[Hashable]) -> list[Generation]:
        raise NotImplementedError

    def close(self) -> None:
        """Free what the session holds (KV caches)."""

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StatelessSession(Session):
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def generate(self, chats: Sequence[Chat], sampling: SamplingConfig, seeds: Sequence[int],
                 keys: Sequence[Hashable]) -> list[Generation]:
        return self.backend.generate(chats, sampling, seeds)


def backend_class(name: str) -> type[Backend]:
    target = REGISTRY.get(name)
    if target is None:
        raise ConfigError(unknown_name("backend", name, REGISTRY))
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
