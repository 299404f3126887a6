"""The one jinja2 environment simgen renders user-written text with.

Templates, backstories, constraints and intent modifiers are user files, so they are rendered in
jinja2's `SandboxedEnvironment` (no attribute access to Python internals) with `StrictUndefined`
(a missing variable is an error, never an empty string). This module also finds, without running
a template, which variables it reads and on which line, so a bad name fails before generation.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from simgen.errors import ConfigError, did_you_mean

# Names jinja2 provides itself (globals, loop helpers); never reported as undefined.
JINJA_BUILTINS = frozenset(
    {"range", "dict", "lipsum", "cycler", "joiner", "namespace", "loop", "self", "varargs",
     "kwargs", "caller", "true", "false", "none", "True", "False", "None"}
)


@lru_cache(maxsize=1)
def environment() -> ImmutableSandboxedEnvironment:
    """The shared sandboxed, strict environment (immutable: templates cannot mutate lists)."""
    return ImmutableSandboxedEnvironment(
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )


@lru_cache(maxsize=1024)
def expression(text: str):  # noqa: ANN201 - jinja2's TemplateExpression
    """A compiled (and cached) sandboxed expression, called with the variables as keywords."""
    return environment().compile_expression(text)


@lru_cache(maxsize=256)
def template(text: str):  # noqa: ANN201 - jinja2's Template
    """A compiled (and cached) sandboxed template from a string."""
    return environment().from_string(text)


def undeclared_names(ast: nodes.Template, known: Iterable[str]) -> list[tuple[str, int]]:
    """(name, line) for each variable `ast` reads that is neither in `known` nor bound inside it.

    A name counts as bound if the template assigns it anywhere (set, for, macro arguments, with),
    which is generous for odd scoping but never flags a correct template.
    """
    known = set(known) | JINJA_BUILTINS
    bound = {n.name for n in ast.find_all(nodes.Name) if n.ctx in ("store", "param")}
    bound |= {m.name for m in ast.find_all(nodes.Macro)}
    seen: dict[str, int] = {}
    for node in ast.find_all(nodes.Name):
        if node.ctx == "load" and node.name not in known and node.name not in bound:
            seen.setdefault(node.name, node.lineno)
    return sorted(seen.items(), key=lambda item: (item[1], item[0]))


def check_template(at: str, text: str, known: Iterable[str], hint: str = "") -> None:
    """Raise a ConfigError at `at` if `text` is not a valid jinja2 template, or if it reads a variable
    outside `known` (the first one, with its line and the closest known name; `hint` says what it may read).
    A profile's backstory and `simgen tune --answers`' answer templates are checked here."""
    try:
        ast = environment().parse(text)
    except TemplateSyntaxError as e:
        raise ConfigError(f"{at}: template syntax error on line {e.lineno}: {e.message}.") from None
    known = tuple(known)
    for name, line in undeclared_names(ast, known):
        raise ConfigError(f"{at}: line {line}: undefined variable {name!r}.{did_you_mean(name, known)}" + (f" {hint}" if hint else ""))


def check_expression(at: str, text: str, known: Iterable[str] | None, unknown: str = "reads undefined variable {name}") -> None:
    """Raise a ConfigError at `at` if `text` is not one valid jinja2 expression, or if it reads a
    variable outside `known` (None: any name); `unknown` words that error ({name}: the variable's
    repr), and the closest known name is suggested. Constraints, intent modifiers and label rules
    are checked here, before anything is sampled."""
    env = environment()
    try:
        ast = env.parse("{{ " + text + " }}")
        env.compile_expression(text)
    except TemplateSyntaxError as e:
        raise ConfigError(f"{at}: {text!r} is not a valid expression: {e.message}.") from None
    if known is None:
        return
    known = tuple(known)
    for name, _ in undeclared_names(ast, known):
        raise ConfigError(f"{at}: {text!r} {unknown.format(name=repr(name))}.{did_you_mean(name, known)}")
