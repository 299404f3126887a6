"""Prompt templates: jinja2 files that turn latents into the prompt of each side.

A template file defines named blocks:

    {% block system %} ... {% endblock %}   the system prompt, rendered once per dialogue
    {% block turn %} ... {% endblock %}     (user side) the instruction for one user turn

The user simulator's `turn` block is rendered before each user turn with that turn's intent, and
appended to the message that precedes it, so a side's chat only ever grows (see simulator.py).

Templates render in the sandboxed, strict environment of `simgen.jinja`. Loading checks syntax,
the required blocks, and every variable the template reads against what the context will hold,
so a typo fails before any model is loaded, naming the file, line and variable. The file's
sha256 goes into the run manifest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Template, TemplateSyntaxError
from jinja2.exceptions import SecurityError, UndefinedError

from simgen import jinja
from simgen.errors import TemplateError, did_you_mean

# What every template can read besides the profile variables (user side only gets those).
USER_CONTEXT = ("profile", "backstory", "intent", "intent_description", "intents", "target_words", "turn", "max_turns", "scenario")
ASSISTANT_CONTEXT = ("scenario", "turn", "max_turns")  # and the profile variables marked `shared: true`
REQUIRED_BLOCKS = {"user": ("system", "turn"), "assistant": ("system",)}


@dataclass(frozen=True)
class PromptTemplate:
    """A loaded, checked template of one side ("user" or "assistant")."""

    side: str
    path: Path
    id: str  # how the scenario names it, e.g. "movie-recommendation/user.j2"
    sha256: str
    template: Template

    def render(self, block: str, context: dict[str, Any]) -> str:
        """Render one block; whitespace is tidied (no blank-line runs, no leading/trailing space)."""
        if block not in self.template.blocks:
            return ""
        try:
            text = "".join(self.template.blocks[block](self.template.new_context(context)))
        except SecurityError as e:
            raise TemplateError(f"{self.path}: block {block!r}: blocked by the sandbox: {e}. Templates may not reach Python internals.") from None
        except UndefinedError as e:
            line = _template_line(e, self.path)
            raise TemplateError(f"{self.path}:{line} block {block!r}: {e.message}.") from None
        except Exception as e:
            line = _template_line(e, self.path)
            raise TemplateError(f"{self.path}:{line} block {block!r}: {type(e).__name__}: {e}.") from None
        lines = [ln.rstrip() for ln in text.strip().splitlines()]
        out: list[str] = []
        for ln in lines:
            if ln or (out and out[-1]):
                out.append(ln)
        return "\n".join(out)


def load_template(ref: str, search: Iterable[Path], side: str, known: Iterable[str], private: Iterable[str] = ()) -> PromptTemplate:
    """Find `ref` in the `search` folders (in order), parse it and check it against `known` names
    (`private`: profile fields this side may not read unless the profile marks them `shared`)."""
    search = list(search)
    path = next((d / ref for d in search if (d / ref).is_file()), None)
    if path is None:
        where = ", ".join(str(d) for d in search)
        raise TemplateError(f"template {ref!r} ({side} side) not found in {where}. Fix the path under `templates:` in the scenario.")
    raw = path.read_bytes()
    try:
        source = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise TemplateError(f"{path}: not UTF-8 text.") from None
    env = jinja.environment()
    try:
        ast = env.parse(source, name=ref, filename=str(path))
        code = env.compile(ast, name=ref, filename=str(path))
    except TemplateSyntaxError as e:
        raise TemplateError(f"{path}:{e.lineno}: template syntax error: {e.message}.") from None
    template = env.template_class.from_code(env, code, env.make_globals(None))
    missing = [b for b in REQUIRED_BLOCKS[side] if b not in template.blocks]
    if missing:
        raise TemplateError(
            f"{path}: the {side} template must define `{{% block {missing[0]} %}}...{{% endblock %}}`"
            f" (blocks: {', '.join(REQUIRED_BLOCKS[side])})."
        )
    known, private = set(known), set(private)
    for name, line in jinja.undeclared_names(ast, known):
        if name in private:
            raise TemplateError(
                f"{path}:{line}: {name!r} is the user's, which the {side} side does not know. Mark the profile variable "
                f"`shared: true` if both sides know it (a topic both were given), or drop it from the template."
            )
        raise TemplateError(
            f"{path}:{line}: undefined variable {name!r}.{did_you_mean(name, known)} "
            f"The {side} template can read: {', '.join(sorted(known))}."
        )
    return PromptTemplate(side, path, ref, hashlib.sha256(raw).hexdigest(), template)


def _template_line(error: BaseException, path: Path) -> str:
    """The template line of the deepest traceback frame inside the template, as 'N' or '?'."""
    line = "?"
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == str(path):
            line = str(tb.tb_lineno)
        tb = tb.tb_next
    return line
