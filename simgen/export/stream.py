"""A live feed for online RL: fresh simulated dialogues (or prompts), batch after batch, indefinitely.

    stream = DialogueStream("movie-recommendation", seed=0, batch_size=8, kind="prompts")
    loader = torch.utils.data.DataLoader(stream, batch_size=16, collate_fn=list, num_workers=2)
    for rows in loader: ...            # each row: {"prompt", "profile", "history", ...} as `simgen export rl --format prompt`

It is a torch `IterableDataset`. Worker w of W (torch.utils.data.get_worker_info) simulates dialogue
indices start + w, start + w + W, start + w + 2W, ..., `batch_size` at a time, so workers never
overlap and dialogue i is dialogue i of `simgen generate` with the same seed, scenario, model and
settings (in float32 exactly; in bfloat16 batch neighbours move logits slightly, as in generate).
Memory is bounded: each worker holds its model and one batch, never the history of the stream.
The model loads in the worker on first iteration, so the dataset pickles cheaply to workers.
`limit` stops after that many dialogues per stream (None: never stop).

    kind="dialogues"  {"dialogue_id", "index", "messages" (natural roles), "profile", "intents", "stop_reason"}
    kind="prompts"    one row per policy line, the columns of the `prompt` export (+ "completion": the
                      line the simulator actually said), for make_reward's `profile` / `history`
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from collections.abc import Iterator
from typing import Any

import torch.utils.data

from simgen.config import SamplingConfig
from simgen.errors import ConfigError, unknown_name

KINDS = ("dialogues", "prompts")


class DialogueStream(torch.utils.data.IterableDataset):
    """Simulated dialogues or RL prompts, generated on demand (see the module doc)."""

    def __init__(self, scenario: str = "movie-recommendation", model: str | None = None, *, seed: int = 0, batch_size: int = 8,
                 kind: str = "dialogues", policy: str = "user", max_turns: int | None = None, start: int = 0, limit: int | None = None,
                 user: SamplingConfig | None = None, assistant: SamplingConfig | None = None, dtype: str = "auto") -> None:
        from simgen.config import GenerateConfig
        from simgen.export.rl import POLICIES
        from simgen.generation.pipeline import resolve_sampling
        from simgen.scenario import load_scenario

        if kind not in KINDS:
            raise ConfigError(unknown_name("kind", kind, KINDS))
        if policy not in POLICIES:
            raise ConfigError(unknown_name("policy", policy, POLICIES))
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise ConfigError(f"limit must be None or an integer >= 0, got {limit!r}.")
        if not isinstance(start, int) or start < 0:
            raise ConfigError(f"start must be an integer >= 0, got {start!r}.")
        defaults = GenerateConfig()
        # validates seed, batch_size, max_turns and dtype the way `simgen generate` does
        self.config = GenerateConfig(scenario=str(scenario), seed=seed, model=model, max_turns=max_turns, batch_size=batch_size,
                                     dtype=dtype, user=user or defaults.user, assistant=assistant or defaults.assistant)
        sc = load_scenario(self.config.scenario)  # a bad scenario fails here, not in a worker
        if max_turns is None:  # the scenario's cap, as `simgen generate` takes it
            self.config = replace(self.config, max_turns=sc.max_turns)
        self.config = resolve_sampling(self.config)  # ... and its repetition penalty and temperature per model
        self.kind, self.policy, self.start, self.limit = kind, policy, start, limit
        self._backend: Any = None

    def indices(self, worker: int = 0, workers: int = 1) -> Iterator[int]:
        """The dialogue indices worker `worker` of `workers` simulates, in order."""
        stop = None if self.limit is None else self.start + self.limit
        return iter(range(self.start + worker, stop, workers)) if stop is not None else itertools.count(self.start + worker, workers)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        from simgen.export.rl import Chats
        from simgen.scenario import load_scenario
        from simgen.generation.plan import plan
        from simgen.generation.pipeline import redraw_guards
        from simgen.generation.simulator import simulate

        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        cfg = self.config
        scenario = load_scenario(cfg.scenario)
        chats = Chats(scenario, cfg.max_turns)
        backend = self._load()
        guards = redraw_guards(cfg, scenario, backend, backend)  # as `simgen generate` runs them
        indices = self.indices(worker, workers)
        while batch := list(itertools.islice(indices, cfg.batch_size)):
            jobs = [plan(scenario, cfg.seed, i, cfg.max_turns, cfg.lengths, cfg.assistant_lengths, cfg.opening) for i in batch]
            for d in simulate(jobs, scenario, backend, backend, cfg.user, cfg.assistant, cfg.seed, cfg.max_turns, redraws=cfg.redraws,
                              **guards):
                if self.kind == "dialogues":
                    yield {"dialogue_id": d.dialogue_id, "index": d.index,
                           "messages": [{"role": t.role, "content": t.text} for t in d.turns],
                           "profile": d.profile.values, "intents": [t.intent for t in d.turns if t.role == "user"],
                           "stop_reason": d.stop_reason}
                else:
                    for p in chats.prompts(d, self.policy):
                        yield {**p, "dialogue_id": d.dialogue_id, "profile": d.profile.values}

    def _load(self) -> Any:
        if self._backend is None:
            from simgen.backends import local_model

            self._backend = local_model(self.config.model, self.config.dtype)
        return self._backend

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_backend": None}  # each worker loads its own model
