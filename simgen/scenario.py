"""Scenarios: a named bundle of a profile space, an intent model, templates and a reference corpus.

A scenario is one YAML file:

    scenario: movie-recommendation          # its name
    description: ...
    reference: iard                         # the default real corpus for realism checks
    templates: {user: movie-recommendation/user.j2, assistant: movie-recommendation/assistant.j2}
    profile: {variables: ..., constraints: ..., backstory: ...}     # see profiles.py
    intent_model: movie-recommendation.intents.yaml                 # or inline; see intents.py

`load_scenario` takes the name of a shipped scenario (`profiles/<name>.yaml`) or the path of a
user's own file. Template paths resolve against the scenario file's folder first, then the shipped
`templates/` folder, so a user's scenario can reuse shipped templates. Everything is validated
here, before any model loads.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simgen.config import check_keys, load_yaml
from simgen.errors import ConfigError, unknown_name
from simgen.intents import IntentModel, load_intent_model
from simgen.profiles import ProfileSpace, parse_profile_space
from simgen.templates import ASSISTANT_CONTEXT, USER_CONTEXT, PromptTemplate, load_template

_KEYS = {"scenario", "description", "reference", "templates", "profile", "intent_model"}


def builtin_dir(kind: str) -> Path:
    """The shipped `profiles/` or `templates/` folder (in the wheel, or in a source checkout)."""
    packaged = Path(__file__).parent / "_builtin" / kind
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / kind


def list_scenarios() -> dict[str, Path]:
    """Shipped scenario name -> its YAML file."""
    return {p.stem: p for p in sorted(builtin_dir("profiles").glob("*.yaml")) if not p.name.endswith(".intents.yaml")}


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    path: Path
    sha256: str
    profile: ProfileSpace
    intents: IntentModel
    user_template: PromptTemplate
    assistant_template: PromptTemplate
    reference: str | None = None

    def describe(self) -> dict[str, Any]:
        """What the manifest records about the scenario."""
        return {
            "name": self.name,
            "path": str(self.path),
            "sha256": self.sha256,
            "intent_model": self.intents.source,
            "reference": self.reference,
            "templates": {
                t.side: {"id": t.id, "path": str(t.path), "sha256": t.sha256}
                for t in (self.user_template, self.assistant_template)
            },
        }


def resolve_scenario_path(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    shipped = list_scenarios()
    if text in shipped:
        return shipped[text]
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or path.exists() or "/" in text:
        if path.is_dir():
            candidates = sorted(p for p in path.glob("*.y*ml") if not p.name.endswith(".intents.yaml"))
            if len(candidates) != 1:
                raise ConfigError(f"{path}: a scenario folder must hold exactly one scenario YAML; found {len(candidates)}. Pass the file itself.")
            return candidates[0]
        if not path.is_file():
            raise ConfigError(f"{path}: scenario file not found. Shipped scenarios: {', '.join(shipped)}.")
        return path
    raise ConfigError(unknown_name("scenario", text, shipped) + " Or pass the path of your own scenario YAML.")


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Load and fully validate a scenario by shipped name or by path."""
    path = resolve_scenario_path(name_or_path)
    raw = load_yaml(path)
    source = str(path)
    if raw is None:
        raise ConfigError(f"{path}: the file is empty; a scenario needs `profile`, `intent_model` and `templates`.")
    check_keys(source, raw, _KEYS, required={"profile", "intent_model", "templates"})
    profile = parse_profile_space(raw["profile"], source)
    intents = load_intent_model(raw["intent_model"], source, profile.names)

    refs = raw["templates"]
    check_keys(f"{source}: templates", refs, {"user", "assistant"}, required={"user", "assistant"})
    search = [path.parent, builtin_dir("templates")]
    user_known = (*profile.fields(), *USER_CONTEXT)
    user_t = load_template(str(refs["user"]), search, "user", user_known)
    assistant_t = load_template(str(refs["assistant"]), search, "assistant", ASSISTANT_CONTEXT)

    digest = hashlib.sha256(path.read_bytes())
    if isinstance(raw["intent_model"], str):
        digest.update(Path(intents.source).read_bytes())
    name = raw.get("scenario") or path.stem
    reference = raw.get("reference")
    return Scenario(
        name=str(name),
        description=str(raw.get("description", "")).strip(),
        path=path,
        sha256=digest.hexdigest(),
        profile=profile,
        intents=intents,
        user_template=user_t,
        assistant_template=assistant_t,
        reference=str(reference) if reference is not None else None,
    )
