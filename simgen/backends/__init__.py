"""Backends: what turns a batch of chats into a batch of lines.

A backend is a small ABC with one main method, `generate(chats, sampling, seeds)`. The simulator
calls it once per side per turn with every active dialogue of the batch, so a backend that can
batch (transformers) advances all of them in one forward pass. `seeds` holds one integer per
chat, derived from (run seed, dialogue index, turn, side): a backend that honours them makes
dialogue i the same whatever batch it lands in.

Within one batch of dialogues the simulator talks to a backend through a `Session` per side:
`session.generate(chats, sampling, seeds, keys)`, where `keys` names the dialogue of each chat.
A side's chat mostly grows, so a stateful session (transformers) keeps each dialogue's KV cache
across turns and prefills only the new tokens (what no longer matches, such as the exchanges a
`context` budget dropped, is masked out and the rest prefilled again). The default session is
stateless: it just calls `generate`. `session.redraw(...)` draws some lines of the last call again (new seeds) without
touching what the session keeps, so the next turn still prefills only its new tokens. A session
may also take `until`: per chat, a test on the text written so far that says the caller will cut
the line there anyway (a length target met); a session that honours it stops
that row early (`finish_reason` "until"), one that does not returns the longer line, which the
caller cuts the same way, so the stored lines do not depend on it, only the time. And `hold`: per
chat, a test on the text written so far that weighs the line's end: True (its length target not
reached: it may not end yet), False or 0 (free), or a number, a bias added to the end-of-turn
tokens' logits (`end_bias`; a positive one, past the target, lets the model end the line at a point
it would end one). A session that honours it (transformers) applies it at every step; one that
cannot ignores it, and its lines may end short of or past their targets: unlike `until`, `hold`
changes what is written.

Backends are named in a lazy registry (`"name": "module:object"`), so naming one imports only it;
`backend_class(name)` resolves a name and `build_backend(config, model)` builds one side of a
`simgen generate` run through the class's `from_config`. Adding a backend is its module plus one
registry line. (The callable backend wraps a user's function, so it is built from that function,
never by name.)

Capabilities are flags, never isinstance checks: `batched`, `seeded`, and `scorer` (the backend
implements the `Scorer` protocol: log-probs, activations and steering of a local model, which the
consistency check's Q&A, LLM judge and persona axis and the persona cap need).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from simgen.config import SamplingConfig
from simgen.data import Chat, Generation
from simgen.errors import ConfigError
from simgen.lazy import resolve

if TYPE_CHECKING:  # pragma: no cover
    from simgen.config import GenerateConfig

# backend name -> "module:class"; each serves `simgen generate --backend NAME` through `from_config`
REGISTRY: dict[str, str] = {
    "transformers": "simgen.backends.transformers:TransformersBackend",
    "openai": "simgen.backends.openai:OpenAIBackend",
}


class Backend(ABC):
    """Turns chats into lines. Subclasses set `name` and their capability flags."""

    name: ClassVar[str] = "backend"
    batched: ClassVar[bool] = False  # one call advances many chats in one pass
    seeded: ClassVar[bool] = False  # honours per-chat seeds (reproducible sampling)
    scorer: ClassVar[bool] = False  # implements `Scorer` (log-probs, activations, steering)

    @classmethod
    def from_config(cls, config: GenerateConfig, model: str | None) -> Backend:
        """The backend of one side of a `simgen generate` run (`model`: that side's model)."""
        raise ConfigError(f"the {cls.name} backend cannot be chosen with --backend.")

    @classmethod
    def precheck(cls, config: GenerateConfig, model: str | None) -> Backend | None:
        """Before a run folder exists: raise if `model` cannot be served. A backend that had to be
        built to know (a server's client) is returned, and the run uses it; else None."""
        return None

    @abstractmethod
    def generate(self, chats: Sequence[Chat], sampling: SamplingConfig, seeds: Sequence[int]) -> list[Generation]:
        """One line per chat, in order. A chat that fails gets a `Generation` with `error` set."""

    def describe(self) -> dict[str, Any]:
        """What the manifest records about this backend."""
        return {"backend": self.name}

    def session(self) -> Session:
        """A session for one side of one batch of dialogues; stateless unless a backend overrides it."""
        return StatelessSession(self)

    def close(self) -> None:
        """Release what the backend holds (threads, connections); whoever built it calls this once."""


Until = Sequence[Callable[[str], bool] | None] | None  # per chat: "the line is done once this holds" (`until`)
Hold = Sequence[Callable[[str], bool | float] | None] | None  # per chat: the end-of-turn bias for the text so far (`end_bias`)
Again = Callable[[int, Generation], int | None] | None  # (chat index, the line it drew) -> the seed of a new draw, or None: keep it


def end_bias(weight: bool | float | None) -> float:
    """A `hold` test's answer as the bias added to the end-of-turn tokens' logits: True -> -inf (the
    line may not end yet), False/None -> 0, a number -> itself."""
    if weight is True:
        return float("-inf")
    if weight is False or weight is None:
        return 0.0
    return float(weight)


class Session:
    """One side of one batch of dialogues. `keys[i]` names the dialogue of `chats[i]`; a key's chat
    only grows between calls, and a later call may carry fewer keys (dialogues that ended).

    A session whose `draws_again` is True also takes `again` in `generate` (a keyword, passed only
    to such a session): called with (i, the line just drawn) as soon as row i's line ends, it
    returns the seed of a new draw of that line (the row starts over from its prompt, in the same
    call, beside the rows still writing) or None to keep it; the call returns each row's last draw.
    The simulator's redraws go that way where they can, and through `redraw` passes where not."""

    draws_again: ClassVar[bool] = False

    def generate(self, chats: Sequence[Chat], sampling: SamplingConfig, seeds: Sequence[int],
                 keys: Sequence[Hashable], until: Until = None, hold: Hold = None) -> list[Generation]:
        raise NotImplementedError

    def redraw(self, chats: Sequence[Chat], sampling: SamplingConfig, seeds: Sequence[int],
               keys: Sequence[Hashable], until: Until = None, hold: Hold = None) -> list[Generation]:
        """Draw again, with new seeds, the lines of some chats of the last `generate` call (the
        simulator's redraws). The session's state is left as that call left it, so the next
        `generate` goes on from there; a stateful session overrides this to keep its cache."""
        return self.generate(chats, sampling, seeds, keys, until, hold)

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
                 keys: Sequence[Hashable], until: Until = None, hold: Hold = None) -> list[Generation]:
        return self.backend.generate(chats, sampling, seeds)  # `hold` cannot be honoured: lines may end short


class Scorer(Protocol):
    """What the checks ask of a local model besides lines (`Backend.scorer` is True when implemented).

    A *continuation* is text appended after a chat's generation prompt: the next "assistant" message
    as the model would write it. Arrays are fp32: numpy for activations, torch for log-probs.
    `pass_tokens`: tokens per forward pass (None: the scorer's default). Sequences that share a
    prefix may share its computation; `shared=False` asks for each to run alone (a reference).
    """

    num_layers: int  # decoder layers, for `layer` arguments

    def next_token_logprobs(self, chats: Sequence[Chat], keep: Sequence[int] | None = None, *, pass_tokens: int | None = None,
                            shared: bool = True) -> Any:
        """(len(chats), vocab or len(keep)) log-probs of the token after each chat's generation prompt."""

    def continuation_logprobs(self, items: Sequence[tuple[Chat, str]], *, pass_tokens: int | None = None,
                              shared: bool = True) -> list[tuple[float, int]]:
        """(sum of log-probs, tokens) of each (chat, continuation)."""

    def continuation_activations(self, items: Sequence[tuple[Chat, str]], layer: int, *, pass_tokens: int | None = None,
                                 shared: bool = True) -> Any:
        """(len(items), hidden) mean residual stream over each continuation's tokens at decoder `layer`."""

    def steer(self, layer: int, threshold: float, direction: Any) -> AbstractContextManager[None]:
        """While inside, cap every token's projection on `direction` at `threshold` at decoder `layer`."""


def backend_class(name: str) -> type[Backend]:
    """The class registered as `name`; an unknown name lists the known ones."""
    return resolve(REGISTRY, name, "backend", ConfigError)


LOCAL = "transformers"  # the registry entry that runs a model in this process and implements `Scorer`


def local_model(model: str | None = None, dtype: str = "auto", trust_remote_code: bool = False) -> Backend:
    """`model` (None: the embedded SmolLM2) in this process, as a backend that also implements `Scorer`:
    what checks, judges and exports load to score or sample lines themselves."""
    return backend_class(LOCAL)(model, dtype, trust_remote_code)


def build_backend(config: GenerateConfig, model: str | None) -> Backend:
    """The `config.backend` backend serving `model` (a run's model or its assistant model)."""
    return backend_class(config.backend).from_config(config, model)
