"""Per-stage configuration records and the safe YAML loader every stage uses.

Each stage takes a small frozen dataclass (TRL's `SFTConfig` style): `SamplingConfig` for one side
of the conversation, `GenerateConfig` for a `simgen generate` run, with per-backend settings nested
in it (`ServerConfig` for an OpenAI-compatible server, `PersonaCapConfig` for the persona cap).
`load_yaml` reads user files with `yaml.safe_load` and turns every parse error into a `ConfigError`
naming the file and line.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from simgen.errors import ConfigError, did_you_mean, unknown_name


def load_yaml(path: str | os.PathLike[str]) -> Any:
    """Parse a YAML file safely; a missing file or bad syntax is a `ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found.") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}).") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror}).") from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = e.problem or e.context or "malformed YAML"
        raise ConfigError(f"{path}:{where}: malformed YAML: {what}. Fix the YAML syntax there.") from None
    except (yaml.YAMLError, RecursionError, ValueError, OverflowError) as e:
        raise ConfigError(f"{path}: malformed YAML: {e}.") from None


def check_keys(where: str, mapping: Any, allowed: set[str] | frozenset[str], required: set[str] = frozenset()) -> dict:
    """Check that `mapping` is a mapping with no unknown and no missing keys; name them if not."""
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(mapping).__name__} {mapping!r:.60}.")
    for key in mapping:
        if not isinstance(key, str) or key not in allowed:
            raise ConfigError(
                f"{where}: unknown field {key!r}.{did_you_mean(str(key), allowed)} "
                f"Allowed fields: {', '.join(sorted(allowed))}."
            )
    missing = sorted(set(required) - set(mapping))
    if missing:
        raise ConfigError(f"{where}: missing required field {missing[0]!r}.")
    return mapping


UNTUNED_PENALTY = 1.15  # the repetition penalty of a side no `simgen tune` simulator writes, when none is set
UNTUNED_TEMPERATURE = {"user": 0.8, "assistant": 0.7}  # each side's temperature when none is set and no tuned simulator writes it
TUNED_TEMPERATURE = 1.0  # ... and a side a `simgen tune` simulator writes: the distribution it was fitted to
REFILL = 4  # shards a stream runs through one batch when --refill is unset and the run is local (with --ray: 1)


@dataclass(frozen=True)
class SamplingConfig:
    """How one side of the conversation samples its lines."""

    temperature: float | None = field(default=0.8, metadata={"help": "temperature (0 = greedy)"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus mass, in (0, 1]"})
    min_p: float = field(default=0.0, metadata={"help": "min-p: draw only tokens at least this share of the likeliest token's "
                                                       "probability (after temperature; with top-p, both must keep a token), in [0, 1); 0 = off"})
    max_new_tokens: int = field(default=64, metadata={"help": "tokens per line at most"})
    repetition_penalty: float | None = field(default=None, metadata={"help": "HF-style repetition penalty (1 = off); unset: off for a side "
                                                                          "a `simgen tune` simulator writes, 1.15 for any other model"})
    trim: bool = field(default=True, metadata={"help": "cut a line that hit max_new_tokens back to its last complete sentence "
                                                        "(its finish_reason becomes 'trimmed')"})
    reach_target: bool = field(default=False, metadata={"help": "a line with a length target (a scenario's length model) may not end "
                                                                 "before it has that many words (the backend masks its end-of-turn "
                                                                 "tokens; transformers only): the target is reached, not just a cap. "
                                                                 "Off: on chitchat it made lines easier to tell from people (README)"})
    context: int | None = field(default=None, metadata={"help": "tokens a line's prompt may hold at most: the oldest exchanges of "
                                                               "the history are dropped to fit, as `simgen tune` fits its examples "
                                                               "(the transformers backend only); 0 = the whole history; unset: a side "
                                                               "a `simgen tune` simulator writes gets its card's max length less the "
                                                               "side's max new tokens (the history it learned from), any other the "
                                                               "whole history"})
    length_floor: float = field(default=0.0, metadata={"help": "a line with a length target may not end before it has this share of "
                                                                "the target's words (0-1; the backend masks its end-of-turn tokens until "
                                                                "then; transformers only). 1 is --reach-target; 0 = off"})
    end_nudge: float = field(default=0.0, metadata={"help": "past a line's length target, the end-of-turn tokens' logits rise by this "
                                                            "much per word over it (transformers only), and a line the model ends is "
                                                            "kept whole, punctuated or not, instead of cut at the sentence end "
                                                            "nearest its target; 0 = off"})

    def __post_init__(self) -> None:
        if self.temperature is not None and not (self.temperature >= 0):
            raise ConfigError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}.")
        if not (0 < self.top_p <= 1):
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}.")
        if not (isinstance(self.min_p, (int, float)) and not isinstance(self.min_p, bool) and 0 <= self.min_p < 1):
            raise ConfigError(f"min_p must be in [0, 1) (0 = off), got {self.min_p!r}.")
        if not (isinstance(self.max_new_tokens, int) and self.max_new_tokens > 0):
            raise ConfigError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}.")
        if not (isinstance(self.end_nudge, (int, float)) and not isinstance(self.end_nudge, bool) and 0 <= self.end_nudge < float("inf")):
            raise ConfigError(f"end_nudge must be a finite number >= 0 (0 = off), got {self.end_nudge!r}.")
        if self.context is not None and not (isinstance(self.context, int) and not isinstance(self.context, bool) and self.context >= 0):
            raise ConfigError(f"context must be a whole number of tokens >= 0 (0 = the whole history), got {self.context!r}.")
        if not (isinstance(self.length_floor, (int, float)) and not isinstance(self.length_floor, bool) and 0 <= self.length_floor <= 1):
            raise ConfigError(f"length_floor must be a share of the target in [0, 1] (0 = off), got {self.length_floor!r}.")
        if self.repetition_penalty is not None and not (self.repetition_penalty >= 1):
            raise ConfigError(f"repetition_penalty must be >= 1 (1 = off), got {self.repetition_penalty}.")

    @property
    def floor(self) -> float:
        """The share of a line's length target it must reach before it may end: 1 with `reach_target`,
        else `length_floor` (0: it may end at any point)."""
        return 1.0 if self.reach_target else float(self.length_floor)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def heat(self) -> float:
        """The temperature to sample at: the one set, else the untuned user side's 0.8. `simgen generate`
        sets it per side first (`generation.pipeline.resolve_sampling`: 1 for a side a `simgen tune`
        simulator writes), so its manifest records the value."""
        return UNTUNED_TEMPERATURE["user"] if self.temperature is None else self.temperature

    @property
    def penalty(self) -> float:
        """The repetition penalty to apply: the one set, else the untuned model's 1.15. `simgen generate`
        sets it per side first (`generation.pipeline.resolve_sampling`), so its manifest records the value."""
        return UNTUNED_PENALTY if self.repetition_penalty is None else self.repetition_penalty


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}.")


@dataclass(frozen=True)
class ServerConfig:
    """How `--backend openai` talks to its OpenAI-compatible server (the other backends ignore it)."""

    base_url: str | None = field(default=None, metadata={"help": "With --backend openai: the server's URL, ending in /v1; or several, "
                                                                 "comma-separated (replicas of one model), which requests are spread over."})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "With --backend openai: the environment variable holding the API key (the key is never logged)."})
    concurrency: int = field(default=16, metadata={"help": "With --backend openai: requests in flight at most."})
    request_timeout: float = field(default=120.0, metadata={"help": "With --backend openai: seconds per answer before a retry."})
    max_retries: int = field(default=4, metadata={"help": "With --backend openai: retries per request (429, 5xx, timeouts, dropped connections)."})

    def __post_init__(self) -> None:
        _positive_int("concurrency", self.concurrency)
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ConfigError(f"max_retries must be a non-negative integer, got {self.max_retries!r}.")
        if not (self.request_timeout > 0):
            raise ConfigError(f"request_timeout must be > 0 seconds, got {self.request_timeout!r}.")


@dataclass(frozen=True)
class PersonaCapConfig:
    """Activation capping of the user side on the persona axis (needs a backend that can steer)."""

    cap: str | None = field(default=None, metadata={"help": "LAYER:THRESHOLD: cap the user side's projection on the persona axis (needs --persona-axis).", "flag": "--persona-cap"})
    axis: str | None = field(default=None, metadata={"help": "persona_axis.json from `simgen consistency RUN` (RUN/reports/persona_axis.json).", "flag": "--persona-axis"})

    def __post_init__(self) -> None:
        if (self.cap is None) != (self.axis is None):
            raise ConfigError("--persona-cap and --persona-axis go together: the cap needs the axis file that `simgen consistency` writes (RUN/reports/persona_axis.json).")


@dataclass(frozen=True)
class GenerateConfig:
    """One `simgen generate` run. `simgen generate`'s flags are made from these fields and those of
    the nested per-backend configs (their `help`, defaults and choices; simgen/cli/generate.py), so
    a setting is documented once."""

    scenario: str = field(default="movie-recommendation", metadata={"help": "Shipped scenario name, or the path of your own scenario YAML.", "flag": "-s"})
    n: int = field(default=20, metadata={"help": "Number of dialogues."})
    seed: int = field(default=0, metadata={"help": "Dialogue i is determined by (seed, i)."})
    model: str | None = field(default=None, metadata={"help": "Local HF model folder, an id in the local HF cache, or a `simgen tune` folder (with --backend openai: the name the server serves). Default: the scenario's tuned simulator if it ships one (for the side(s) its card says it learned; the embedded model for the other), else the embedded SmolLM2-135M-Instruct; `embedded` forces the untuned model.", "flag": "-m"})
    assistant_model: str | None = field(default=None, metadata={"help": "A different model for the assistant side (default: --model)."})
    max_turns: int | None = field(default=None, metadata={"help": "User turns per dialogue at most. Default: the scenario's `max_turns` (6 where it does not say)."})
    lengths: bool = field(default=True, metadata={"help": "Give each user turn a target length drawn from the scenario's length model (when it has one; real lines' lengths) and end the line at the sentence end nearest it.", "flag": "--lengths/--no-lengths"})
    assistant_lengths: bool = field(default=False, metadata={"help": "With --lengths: each assistant line too, where the length model has an `assistant` row (a scenario whose other side is a person as well). Off by default: on chitchat it did not make dialogues harder to tell from real ones (README).",
                                                            "flag": "--assistant-lengths/--no-assistant-lengths"})
    opening: bool = field(default=True, metadata={"help": "With --lengths: the assistant says the first line of a dialogue as often as real "
                                                          "ones open on its side (the length model's `first_word` row: two IARD dialogues "
                                                          "in three open on the recommender's greeting), and user turn 0 answers it. "
                                                          "No effect without that row (chitchat).",
                                                  "flag": "--opening/--no-opening"})
    redraws: int = field(default=3, metadata={"help": "Draw a line again, up to this many times, when it would give the dialogue away: a goodbye "
                                                      "before the user's closing turn, a closing turn that does not close, an empty, unfinished, "
                                                      "repeated or looping line (0 = keep every first draw). The first draw that passes is kept; "
                                                      "when none does, the least faulty (a line only off its intent before a copy or a "
                                                      "goodbye, those before an unfinished or repeated line), and the stop rules apply."})
    copy_guard: bool = field(default=True, metadata={"help": "With redraws: also draw again a line of 4+ words that near-copies a line the side's "
                                                             "`simgen tune` simulator was trained on (its folder's index of them).",
                                                     "flag": "--copy-guard/--no-copy-guard"})
    intent_guard: bool = field(default=True, metadata={"help": "With redraws: also draw again a user line that does not read like its turn's intent, "
                                                               "by the scenario's intent guard (a classifier fitted on real labelled lines; "
                                                               "scenarios without one are unaffected).",
                                                       "flag": "--intent-guard/--no-intent-guard"})
    realism_guard: bool = field(default=True, metadata={"help": "With redraws: also draw again a line that reads more like the simulator's than "
                                                                "three real lines in four do, by the scenario's realism guard of that side (a "
                                                                "classifier fitted on the real corpus's train split against the simulator's "
                                                                "own lines; scenarios without one are unaffected).",
                                                        "flag": "--realism-guard/--no-realism-guard"})
    dialogue_redraws: int = field(default=0, metadata={"help": "Write a finished dialogue again, from its first line, up to this many times, "
                                                               "when it reads more like the simulator's than three real dialogues in four do, "
                                                               "by the scenario's dialogue guard (a classifier of whole dialogues fitted on the "
                                                               "real corpus's train split against the simulator's own; scenarios without one "
                                                               "are unaffected). The same latents each time; the take that reads most like "
                                                               "people's is kept (the `take` column). 0 = off."})
    batch_size: int = field(default=16, metadata={"help": "Dialogues advanced together in one batched forward pass.", "flag": "-b"})
    refill: int | None = field(default=None, metadata={"help": "Shards (of --batch-size dialogues) run as one stream through the batch: a dialogue that ends "
                                                            "gives its slot to the next one at once (continuous batching), longest planned "
                                                            "dialogues first (--order). Default 4 (1.13x at -n 256 -b 64 on movie-recommendation; README), 1 with --ray "
                                                            "(a worker runs one stream). A resumed run reruns a stream whose shards are "
                                                            "not all written, so a kill costs at most one stream's work."})
    order: str = field(default="longest", metadata={"help": "The order a stream's dialogues take the batch's free slots: longest = the most planned "
                                                           "user turns (then words) first, so the stream's last rows are short ones; index = "
                                                           "dialogue index. Either way dialogue i is planned from (seed, i).",
                                                   "choices": ("longest", "index")})
    schedule: str = field(default="auto", metadata={"help": "lines: a dialogue's next line starts as soon as its last one ends, both sides in one batch "
                                                         "(one local Llama-style model writing both sides; 1.38-1.59x on the default workload, README). "
                                                         "calls: each turn, one decoding call for every dialogue's user line, then one for the "
                                                         "assistant lines. auto: lines where it can run, else calls (the manifest records which).",
                                                 "choices": ("auto", "calls", "lines")})
    dtype: str = field(default="auto", metadata={"help": "auto = bf16 where the CPU supports it, else float32.", "choices": ("auto", "bfloat16", "float32")})
    # temperature unset: `generation.pipeline.resolve_sampling` picks it per side from the model that writes it
    user: SamplingConfig = field(default_factory=lambda: SamplingConfig(temperature=None, max_new_tokens=48))
    assistant: SamplingConfig = field(default_factory=lambda: SamplingConfig(temperature=None, max_new_tokens=96))
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model folders that ship their own Python code."})
    backend: str = field(default="transformers", metadata={"help": "transformers: the model in this process. openai: an OpenAI-compatible server (vLLM, llama.cpp, TGI, Ollama).", "choices": "backends"})
    server: ServerConfig = field(default_factory=ServerConfig)
    persona: PersonaCapConfig = field(default_factory=PersonaCapConfig)

    def __post_init__(self) -> None:
        for name in ("n", "batch_size"):
            _positive_int(name, getattr(self, name))
        for name in ("max_turns", "refill"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        if isinstance(self.redraws, bool) or not isinstance(self.redraws, int) or self.redraws < 0:
            raise ConfigError(f"redraws must be a non-negative integer (0 = off), got {self.redraws!r}.")
        if isinstance(self.dialogue_redraws, bool) or not isinstance(self.dialogue_redraws, int) or self.dialogue_redraws < 0:
            raise ConfigError(f"dialogue_redraws must be a non-negative integer (0 = off), got {self.dialogue_redraws!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}.")
        from simgen.backends import REGISTRY  # names only: no backend module is imported

        if self.backend not in REGISTRY:
            raise ConfigError(unknown_name("backend", self.backend, REGISTRY))
        if self.order not in ("longest", "index"):
            raise ConfigError(f"order must be longest or index, got {self.order!r}.")
        if self.schedule not in ("auto", "calls", "lines"):
            raise ConfigError(f"schedule must be auto, calls or lines, got {self.schedule!r}.")
        if self.dtype not in ("auto", "bfloat16", "float32"):
            raise ConfigError(f"dtype must be auto, bfloat16 or float32, got {self.dtype!r}.")

    def to_dict(self) -> dict[str, Any]:
        """The manifest's `config`: nested configs as nested objects."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> GenerateConfig:
        """The inverse of `to_dict`; also reads the flat layout of runs written before the nested
        configs (`base_url`, `persona_cap`, ... at the top). An unknown key is a TypeError naming it."""
        raw = dict(raw)
        raw.setdefault("lengths", False)  # a run from before the length latent had none
        raw.setdefault("redraws", 0)  # ... and one from before redraws kept every first draw
        raw.setdefault("copy_guard", False)  # ... and one from before the copy guard kept copies
        raw.setdefault("intent_guard", False)  # ... and one from before the intent guard kept lines off their intent
        raw.setdefault("realism_guard", False)  # ... and one from before the realism guard kept the simulator's tells
        raw.setdefault("dialogue_redraws", 0)  # ... and one from before the dialogue guard
        raw.setdefault("opening", False)  # ... and one from before the assistant could open a dialogue
        raw.setdefault("refill", 1)  # ... and one from before continuous batching ran each shard alone
        raw.setdefault("order", "index")  # ... and one from before streams ran their longest dialogues first
        raw.setdefault("schedule", "calls")  # ... and one from before the line schedule
        for side in ("user", "assistant"):
            if isinstance(raw.get(side), dict):
                raw[side] = {"trim": False, **raw[side]}  # ... nor trimming, which was off by default then
        flat_server = {f.name: raw.pop(f.name) for f in fields(ServerConfig) if f.name in raw}
        flat_persona = {k.removeprefix("persona_"): raw.pop(k) for k in ("persona_cap", "persona_axis") if k in raw}
        nested = {"user": SamplingConfig, "assistant": SamplingConfig, "server": ServerConfig, "persona": PersonaCapConfig}
        for key, flat in (("server", flat_server), ("persona", flat_persona)):
            if flat:
                raw[key] = {**(raw.get(key) or {}), **flat}
        return cls(**{k: nested[k](**v) if k in nested and isinstance(v, dict) else v for k, v in raw.items()})
