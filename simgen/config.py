"""Per-stage configuration records and the safe YAML loader every stage uses.

Each stage takes a small frozen dataclass (TRL's `SFTConfig` style): `SamplingConfig` for one side
of the conversation, `GenerateConfig` for a `simgen generate` run. `load_yaml` reads user files
with `yaml.safe_load` and turns every parse error into a `ConfigError` naming the file and line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
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


@dataclass(frozen=True)
class SamplingConfig:
    """How one side of the conversation samples its lines."""

    temperature: float = field(default=0.8, metadata={"help": "0 means greedy decoding"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling mass, in (0, 1]"})
    max_new_tokens: int = field(default=64, metadata={"help": "tokens per line at most"})
    repetition_penalty: float = field(default=1.15, metadata={"help": "HF-style penalty on tokens already in the chat; 1 = off"})

    def __post_init__(self) -> None:
        if not (self.temperature >= 0):
            raise ConfigError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}.")
        if not (0 < self.top_p <= 1):
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}.")
        if not (isinstance(self.max_new_tokens, int) and self.max_new_tokens > 0):
            raise ConfigError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}.")
        if not (self.repetition_penalty >= 1):
            raise ConfigError(f"repetition_penalty must be >= 1 (1 = off), got {self.repetition_penalty}.")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class GenerateConfig:
    """One `simgen generate` run. The CLI flags map one to one onto these fields."""

    scenario: str = field(default="movie-recommendation", metadata={"help": "name or path of a scenario YAML"})
    n: int = field(default=20, metadata={"help": "number of dialogues"})
    seed: int = field(default=0, metadata={"help": "dialogue i is determined by (seed, i)"})
    model: str | None = field(default=None, metadata={"help": "local model folder or HF-cache id; None = embedded SmolLM2-135M-Instruct"})
    assistant_model: str | None = field(default=None, metadata={"help": "model of the assistant side; None = same as --model"})
    max_turns: int = field(default=6, metadata={"help": "user turns per dialogue at most"})
    batch_size: int = field(default=16, metadata={"help": "dialogues advanced together in one batched forward pass"})
    dtype: str = field(default="auto", metadata={"help": "auto | bfloat16 | float32"})
    user: SamplingConfig = field(default_factory=lambda: SamplingConfig(temperature=0.8, max_new_tokens=48))
    assistant: SamplingConfig = field(default_factory=lambda: SamplingConfig(temperature=0.7, max_new_tokens=96))
    trust_remote_code: bool = field(default=False, metadata={"help": "allow model folders that ship Python code"})
    persona_cap: str | None = field(default=None, metadata={"help": "LAYER:THRESHOLD: cap the user side's projection on the persona axis"})
    persona_axis: str | None = field(default=None, metadata={"help": "persona_axis.json written by `simgen consistency` (needed with persona_cap)"})
    backend: str = field(default="transformers", metadata={"help": "transformers (in-process) | openai (an OpenAI-compatible server)"})
    base_url: str | None = field(default=None, metadata={"help": "the server's URL, ending in /v1 (backend openai)"})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "environment variable holding the API key (never recorded)"})
    concurrency: int = field(default=16, metadata={"help": "requests in flight at most (backend openai)"})
    request_timeout: float = field(default=120.0, metadata={"help": "seconds to wait for one answer before retrying (backend openai)"})
    max_retries: int = field(default=4, metadata={"help": "retries per request on 429/5xx/timeouts/dropped connections (backend openai)"})

    def __post_init__(self) -> None:
        for name in ("n", "max_turns", "batch_size", "concurrency"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}.")
        if (self.persona_cap is None) != (self.persona_axis is None):
            raise ConfigError("--persona-cap and --persona-axis go together: the cap needs the axis file that `simgen consistency` writes (RUN/reports/persona_axis.json).")
        from simgen.backends import REGISTRY  # names only: no backend module is imported

        if self.backend not in REGISTRY:
            raise ConfigError(unknown_name("backend", self.backend, REGISTRY))
        if self.backend == "openai" and (not self.base_url or not self.model):
            raise ConfigError("--backend openai needs --base-url URL (ending in /v1) and --model NAME (the name the server serves).")
        if self.backend == "openai" and self.persona_cap is not None:
            raise ConfigError("--persona-cap steers the model's activations, so it needs --backend transformers.")
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ConfigError(f"max_retries must be a non-negative integer, got {self.max_retries!r}.")
        if not (self.request_timeout > 0):
            raise ConfigError(f"request_timeout must be > 0 seconds, got {self.request_timeout!r}.")
        if self.dtype not in ("auto", "bfloat16", "float32"):
            raise ConfigError(f"dtype must be auto, bfloat16 or float32, got {self.dtype!r}.")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.__dict__.copy() if isinstance(value, SamplingConfig) else value
        return out
