"""The assistant side as a user's own Python function: test your system against simulated users.

    def my_assistant(messages: list[dict]) -> str:   # [{"role": "system"|"user"|"assistant", "content": ...}]
        return my_system.reply(messages)

    simgen.generate(..., assistant=my_assistant)
    simgen generate --assistant mypackage.bot:my_assistant        # or path/to/file.py:my_assistant

The function sees the assistant side's chat (its system prompt, then the dialogue with the user's
lines as "user"). An exception or a non-string answer becomes a failed line with its reason, and the
run goes on.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from simgen.backends import Backend
from simgen.config import SamplingConfig
from simgen.data import Chat, Generation
from simgen.errors import ConfigError


class CallableBackend(Backend):
    name = "callable"

    def __init__(self, fn: Callable[[Chat], str], label: str | None = None) -> None:
        if not callable(fn):
            raise ConfigError(f"the assistant must be callable (messages -> str), got {type(fn).__name__}.")
        self.fn = fn
        self.label = label or f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"

    def generate(self, chats: Sequence[Chat], sampling: SamplingConfig, seeds: Sequence[int]) -> list[Generation]:
        out = []
        for chat in chats:
            try:
                text = self.fn([dict(m) for m in chat])
            except Exception as e:  # noqa: BLE001 - the user's code failing is data, not a crash
                out.append(Generation("", error=f"{type(e).__name__}: {e}"))
                continue
            if not isinstance(text, str):
                out.append(Generation("", error=f"the assistant returned {type(text).__name__}, not str"))
            else:
                out.append(Generation(text))
        return out

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "callable": self.label}


def load_callable(spec: str) -> Callable[[Chat], str]:
    """`package.module:function` or `path/to/file.py:function` -> the function."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise ConfigError(f"--assistant {spec!r}: expected MODULE:FUNCTION or FILE.py:FUNCTION.")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ConfigError(f"--assistant {spec!r}: file {path} not found.")
        module_spec = importlib.util.spec_from_file_location(f"simgen_user_assistant_{path.stem}", path)
        assert module_spec and module_spec.loader
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_spec.name] = module
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise ConfigError(f"--assistant {spec!r}: cannot import {target!r} ({e}).") from None
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise ConfigError(f"--assistant {spec!r}: {target} has no callable {attr!r}.")
    return fn
