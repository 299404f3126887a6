"""The errors simgen raises on purpose.

Every error a user can cause (a bad file, a bad flag, a missing model) is a `SimgenError`: its
message names the file, field or value at fault and says what to do. The CLI prints these without
a traceback and exits non-zero. Any other exception is a bug in simgen and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SimgenError(Exception):
    """An error the user can fix; the message says how."""

    exit_code = 1  # what the CLI exits with


class ConfigError(SimgenError):
    """A scenario, profile space, intent model or config file is malformed."""


class TemplateError(SimgenError):
    """A jinja2 template does not parse, or names a variable its context lacks."""


class ModelError(SimgenError):
    """A model is missing, is not a causal LM, or cannot be loaded."""


class BackendError(SimgenError):
    """A backend cannot serve requests (unreachable server, bad response)."""


class RunError(SimgenError):
    """A run folder cannot be written, read or resumed."""


class ScenarioChanged(RunError):
    """A file of the run's scenario (YAML, intent model, a template) changed since the run was generated."""


class DataError(SimgenError):
    """A corpus or data file is missing or does not follow the documented schema."""


class JudgeError(SimgenError):
    """A judge cannot be built (bad spec, missing model) or cannot answer (server error)."""


class HubError(SimgenError):
    """The Hub cannot be reached, refuses the upload, or no token is available."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`" Did you mean 'x'?"` when `name` is close to one of `choices`, else `""`."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> str:
    """The message for an unknown registry name: the suggestion, then everything that exists."""
    choices = sorted(choices)
    listed = ", ".join(repr(c) for c in choices) if choices else "(none)"
    return f"unknown {kind} {name!r}.{did_you_mean(name, choices)} Known {kind}s: {listed}."
