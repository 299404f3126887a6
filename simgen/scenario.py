"""Scenarios: a named bundle of a profile space, an intent model, templates and a reference corpus.

A scenario is one YAML file:

    scenario: movie-recommendation          # its name
    description: ...
    reference: iard                         # the default real corpus for realism checks
    templates: {user: movie-recommendation/user.j2, assistant: movie-recommendation/assistant.j2}
    profile: {variables: ..., constraints: ..., backstory: ...}     # see profiles.py
    intent_model: movie-recommendation.intents.yaml                 # or inline; see intents.py
    lengths: movie-recommendation.lengths.yaml                      # optional, or inline; see lengths.py
    simulator: movie-recommendation.simulator                       # optional: a `simgen tune` folder, the default model of the side(s) it learned,
                                                                    # or per side: {user: F, assistant: F} (each folder must have learned its side)
    intent_guard: movie-recommendation.intent-guard.npz             # optional: redraw user lines that miss their intent; see intent_guard.py
    realism_guard: {user: F.npz, assistant: F.npz}                  # optional, per side: redraw lines that read like the simulator's; see realism_guard.py
    dialogue_guard: movie-recommendation.dialogue-guard.npz         # optional: write again dialogues that read like the simulator's; see dialogue_guard.py

`load_scenario` takes the name of a shipped scenario (`profiles/<name>.yaml`) or the path of a
user's own file. Template paths resolve against the scenario file's folder first, then the shipped
`templates/` folder, so a user's scenario can reuse shipped templates. Everything is validated
here, before any model loads.

Every file that shapes a prompt or which lines are kept (the scenario YAML, the intent model's own
file, the length model, the intent, realism and dialogue guards, both templates) is hashed into `Scenario.files`, and
`Scenario.fingerprint` covers them all. A run records both;
`load_recorded` reloads a run's scenario for whatever rebuilds its chats (resume, the consistency
check's Q&A and persona axis, `export rl`) and refuses one whose files changed, naming them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simgen.config import check_keys, load_yaml
from simgen.errors import ConfigError, DataError, RunError, ScenarioChanged, SimgenError, unknown_name
from simgen.intent_guard import IntentGuard
from simgen.realism_guard import SIDES as REALISM_SIDES
from simgen.realism_guard import RealismGuard
from simgen.dialogue_guard import DialogueGuard
from simgen.intents import IntentModel, load_intent_model
from simgen.lengths import LengthModel, load_lengths
from simgen.models import TUNE_CARD, learned_sides
from simgen.profiles import ProfileSpace, parse_profile_space
from simgen.templates import ASSISTANT_CONTEXT, USER_CONTEXT, PromptTemplate, load_template

_KEYS = {"scenario", "description", "reference", "templates", "profile", "intent_model", "lengths", "simulator", "intent_guard", "realism_guard", "dialogue_guard", "max_turns"}
SIMULATOR_SIDES = ("user", "assistant")
DEFAULT_MAX_TURNS = 6  # user turns per dialogue at most, where neither the scenario nor --max-turns says
_SIDE_FILES = (".intents.yaml", ".lengths.yaml", ".answers.yaml")  # files a scenario names or `simgen tune --answers` reads, not scenarios themselves


def builtin_dir(kind: str) -> Path:
    """The shipped `profiles/` or `templates/` folder (in the wheel, or in a source checkout)."""
    packaged = Path(__file__).parent / "_builtin" / kind
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / kind


def list_scenarios() -> dict[str, Path]:
    """Shipped scenario name -> its YAML file."""
    return {p.stem: p for p in sorted(builtin_dir("profiles").glob("*.yaml")) if not p.name.endswith(_SIDE_FILES)}


# what each entry of `Scenario.files` is, as an error message names it
FILE_LABELS = {"scenario": "the scenario file", "intent_model": "the intent model file", "lengths": "the length model file",
               "intent_guard": "the intent guard file", "dialogue_guard": "the dialogue guard file",
               "realism_guard_user": "the user side's realism guard file", "realism_guard_assistant": "the assistant side's realism guard file",
               "user_template": "the user template", "assistant_template": "the assistant template"}


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    path: Path
    files: dict[str, dict[str, str]]  # "scenario" | "intent_model" | "<side>_template" -> {"path", "sha256"}
    profile: ProfileSpace
    intents: IntentModel
    user_template: PromptTemplate
    assistant_template: PromptTemplate
    reference: str | None = None
    lengths: LengthModel | None = None  # the length latent of user turns; None: lines end where the model stops
    simulators: Mapping[str, Path] = field(default_factory=dict)  # side -> the `simgen tune` folder that writes it when --model is not given
    intent_guard: IntentGuard | None = None  # redraws a user line that does not read like its intent (with --intent-guard)
    realism_guards: Mapping[str, RealismGuard] = field(default_factory=dict)  # side -> its guard: redraws lines that read like the simulator's (with --realism-guard)
    dialogue_guard: DialogueGuard | None = None  # writes again dialogues that read like the simulator's (with --dialogue-redraws)
    max_turns: int = DEFAULT_MAX_TURNS  # user turns per dialogue at most, when --max-turns is not given

    @property
    def fingerprint(self) -> str:
        """sha256 over every file that shapes a prompt (`files`): any edit to any of them changes it."""
        digest = hashlib.sha256()
        for key in sorted(self.files):
            digest.update(f"{key}\0{self.files[key]['sha256']}\n".encode())
        return digest.hexdigest()

    def describe(self) -> dict[str, Any]:
        """What the manifest records about the scenario."""
        return {
            "name": self.name,
            "path": str(self.path),
            "fingerprint": self.fingerprint,
            "files": {k: dict(v) for k, v in self.files.items()},
            "intent_model": self.intents.source,
            "lengths": self.lengths.source if self.lengths else None,
            "simulator": self._described_simulator(),
            "intent_guard": self.files.get("intent_guard", {}).get("path"),
            "realism_guard": {side: self.files[f"realism_guard_{side}"]["path"] for side in self.realism_guards},
            "dialogue_guard": self.files.get("dialogue_guard", {}).get("path"),
            "reference": self.reference,
            "templates": {
                t.side: {"id": t.id, "path": str(t.path), "sha256": t.sha256}
                for t in (self.user_template, self.assistant_template)
            },
        }

    @property
    def simulator(self) -> Path | None:
        """The tuned folder that writes the user side (the one the consistency check's Q&A asks), or
        the assistant's where only that side has one; None without a simulator."""
        return self.simulators.get("user") or self.simulators.get("assistant")

    def sides(self) -> dict[str, str]:
        """Side -> the model that writes it by default: its tuned folder, or the embedded model."""
        return {side: str(self.simulators[side]) if side in self.simulators else "embedded" for side in SIMULATOR_SIDES}

    def _described_simulator(self) -> str | dict[str, str] | None:
        folders = {str(p) for p in self.simulators.values()}
        if not folders:
            return None
        return folders.pop() if len(folders) == 1 else {side: str(p) for side, p in self.simulators.items()}

    def changes_since(self, recorded: Mapping[str, Any]) -> list[str]:
        """The files whose content differs from a manifest's scenario entry, as `the user template PATH`."""
        if "files" not in recorded:  # a run written before the fingerprint: the YAML+intents digest and template hashes
            legacy = {"scenario": recorded.get("sha256"),
                      **{f"{side}_template": t.get("sha256") for side, t in (recorded.get("templates") or {}).items()}}
            now = {"scenario": _legacy_digest(self), "user_template": self.user_template.sha256,
                   "assistant_template": self.assistant_template.sha256}
            return [f"{FILE_LABELS[k]} {self.files[k]['path']}" for k in now if legacy.get(k) != now[k]]
        then, now = recorded.get("files") or {}, self.files
        return [f"{_label(k)} {(now.get(k) or then[k]).get('path')}" for k in sorted(set(then) | set(now))
                if (then.get(k) or {}).get("sha256") != (now.get(k) or {}).get("sha256")]


def load_recorded(recorded: Any, where: str, consequence: str) -> Scenario:
    """The scenario a run's manifest names (`recorded` is its `scenario` entry), unchanged since the run.

    A scenario that cannot be loaded is a `RunError`; one whose files changed is a `ScenarioChanged`
    that names the files and says the `consequence` of going on (e.g. "rebuilt chats would not be
    what the simulator saw").
    """
    try:
        scenario = load_scenario(recorded["path"])
    except (SimgenError, KeyError, TypeError) as e:
        raise RunError(f"{where}: the run's scenario cannot be loaded ({e}). Restore the scenario file the manifest names.") from None
    changed = scenario.changes_since(recorded)
    if changed:
        raise ScenarioChanged(f"{where}: {' and '.join(changed)} changed since the run was generated, so {consequence}. "
                              f"Restore {'it' if len(changed) == 1 else 'them'}, or generate the run again.")
    return scenario


def _legacy_digest(scenario: Scenario) -> str:
    """What manifests before the fingerprint recorded as `sha256`: the YAML, then the intent model's own file."""
    digest = hashlib.sha256(scenario.path.read_bytes())
    if "intent_model" in scenario.files:
        digest.update(Path(scenario.files["intent_model"]["path"]).read_bytes())
    return digest.hexdigest()


def resolve_scenario_path(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    shipped = list_scenarios()
    if text in shipped:
        return shipped[text]
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or path.exists() or "/" in text:
        if path.is_dir():
            candidates = sorted(p for p in path.glob("*.y*ml") if not p.name.endswith(_SIDE_FILES))
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
    assistant_t = load_template(str(refs["assistant"]), search, "assistant", (*ASSISTANT_CONTEXT, *profile.shared),
                                private=[f for f in profile.fields() if f not in profile.shared])

    files = {"scenario": _file(path)}
    if isinstance(raw["intent_model"], str):
        files["intent_model"] = _file(Path(intents.source))
    lengths = load_lengths(raw["lengths"], source, intents.names) if raw.get("lengths") is not None else None
    if isinstance(raw.get("lengths"), str):
        files["lengths"] = _file(Path(lengths.source))
    files |= {f"{t.side}_template": {"path": str(t.path), "sha256": t.sha256} for t in (user_t, assistant_t)}
    files |= {f"values_{v.name}": v.values_from.describe() for v in profile.variables if v.values_from is not None}
    simulators = _simulators(raw.get("simulator"), path.parent, source)
    intent_guard = None
    if raw.get("intent_guard") is not None:
        guard_path = path.parent / str(raw["intent_guard"])
        intent_guard = _intent_guard(guard_path, source, intents.names)
        files["intent_guard"] = _file(guard_path)
    realism_guards = _realism_guards(raw.get("realism_guard"), path.parent, source)
    files |= {f"realism_guard_{side}": _file(path.parent / str(raw["realism_guard"][side])) for side in realism_guards}
    dialogue_guard = None
    if raw.get("dialogue_guard") is not None:
        guard_path = path.parent / str(raw["dialogue_guard"])
        dialogue_guard = _dialogue_guard(guard_path, source)
        files["dialogue_guard"] = _file(guard_path)
    name = raw.get("scenario") or path.stem
    reference = raw.get("reference")
    max_turns = raw.get("max_turns", DEFAULT_MAX_TURNS)
    if isinstance(max_turns, bool) or not isinstance(max_turns, int) or max_turns <= 0:
        raise ConfigError(f"{source}: max_turns: expected a positive integer (user turns per dialogue at most), got {max_turns!r}.")
    return Scenario(
        name=str(name),
        description=str(raw.get("description", "")).strip(),
        path=path,
        files=files,
        profile=profile,
        intents=intents,
        user_template=user_t,
        assistant_template=assistant_t,
        reference=str(reference) if reference is not None else None,
        lengths=lengths,
        simulators=simulators,
        intent_guard=intent_guard,
        realism_guards=realism_guards,
        dialogue_guard=dialogue_guard,
        max_turns=max_turns,
    )


def _intent_guard(path: Path, source: str, names: tuple[str, ...]) -> IntentGuard:
    if not path.is_file():
        raise ConfigError(f"{source}: intent_guard: {str(path)!r} does not exist; fix the path (relative to the scenario file's "
                          "folder), write it with scripts/fit_intent_guard.py, or remove the key.")
    try:
        guard = IntentGuard.load(path)
    except DataError as e:
        raise ConfigError(f"{source}: intent_guard: {e}") from e
    unknown = sorted(set(guard.classes) - set(names))
    if unknown:
        raise ConfigError(f"{source}: intent_guard: {str(path)!r} knows intents the intent model does not have ({', '.join(unknown)}); "
                          "refit it for this scenario: python scripts/fit_intent_guard.py --scenario ... --corpus ...")
    return guard


def _simulators(raw: Any, folder: Path, source: str) -> dict[str, Path]:
    """The scenario's `simulator:` as side -> `simgen tune` folder (relative to the scenario's folder).

    One folder writes the side(s) its card's `roles` says it learned; a mapping names a folder per
    side, and each must have learned the side it is named for (a user simulator has not learned to
    answer as the assistant)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        path = folder / str(raw)
        return dict.fromkeys(_learned(path, "simulator", source), path)
    if not raw or set(raw) - set(SIMULATOR_SIDES):
        raise ConfigError(f"{source}: simulator: expected a `simgen tune` folder, or a mapping of side (user, assistant) to one, "
                          f"got {dict(raw)!r}.")
    out = {}
    for side in (s for s in SIMULATOR_SIDES if s in raw):
        path = folder / str(raw[side])
        if side not in _learned(path, f"simulator: {side}", source):
            raise ConfigError(f"{source}: simulator: {side}: {str(path)!r} did not learn the {side} side (its card's roles), so it "
                              f"cannot write it; name a folder tuned with --roles {side} or --roles both.")
        out[side] = path
    return out


def _learned(path: Path, key: str, source: str) -> list[str]:
    """The sides the `simgen tune` folder `path` learned (`simgen.models.learned_sides`), or a ConfigError naming `key`."""
    if not (path / TUNE_CARD).is_file():
        raise ConfigError(f"{source}: {key}: {str(path)!r} is not a folder written by `simgen tune` (no {TUNE_CARD}); "
                          "fix the path (relative to the scenario file's folder) or remove the key.")
    return list(learned_sides(path, f"{source}: {key}", ConfigError))


def _realism_guards(raw: Any, folder: Path, source: str) -> dict[str, RealismGuard]:
    """The scenario's `realism_guard:` mapping (side -> file, relative to the scenario's folder), loaded."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or not raw or set(raw) - set(REALISM_SIDES):
        raise ConfigError(f"{source}: realism_guard: expected a mapping of side (user, assistant) to a guard file written by "
                          f"scripts/fit_realism_guard.py, got {raw!r}.")
    guards = {}
    for side in REALISM_SIDES:
        if side not in raw:
            continue
        path = folder / str(raw[side])
        if not path.is_file():
            raise ConfigError(f"{source}: realism_guard: {side}: {str(path)!r} does not exist; fix the path (relative to the scenario "
                              "file's folder), write it with scripts/fit_realism_guard.py, or remove the key.")
        try:
            guards[side] = RealismGuard.load(path)
        except DataError as e:
            raise ConfigError(f"{source}: realism_guard: {side}: {e}") from e
    return guards


def _dialogue_guard(path: Path, source: str) -> DialogueGuard:
    if not path.is_file():
        raise ConfigError(f"{source}: dialogue_guard: {str(path)!r} does not exist; fix the path (relative to the scenario file's "
                          "folder), write it with scripts/fit_dialogue_guard.py, or remove the key.")
    try:
        return DialogueGuard.load(path)
    except DataError as e:
        raise ConfigError(f"{source}: dialogue_guard: {e}") from e


def _label(key: str) -> str:
    """How a changed `files` entry is named: its label, or for a profile variable's corpus values (`values_NAME`) that."""
    if key in FILE_LABELS:
        return FILE_LABELS[key]
    return f"profile variable {key[len('values_'):]}'s values, read from" if key.startswith("values_") else key


def _file(path: Path) -> dict[str, str]:
    return {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
