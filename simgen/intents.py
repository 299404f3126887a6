"""Intent models: the turn-level latent process of what the simulated user wants to do.

An intent model is the `intent_model:` of a scenario YAML, inline or as the path of its own file:

    intents:
      IQU: {description: "Ask for a recommendation.", terminal: false}
      BYE: {description: "Say goodbye.", terminal: true}
    start: {IQU: 1.0}                      # intent of the first user turn
    transitions:                           # from -> {to: probability}; a row per non-terminal intent
      IQU: {IQU: 0.6, BYE: 0.4}
    modifiers:                             # profile-dependent: scale probabilities, then renormalise
      - when: "patience < 0.35"            # a jinja2 expression over the profile latent
        scale: {BYE: 2.5}                  # to-intent -> factor (> 0)
        from: [IQU]                        # optional: only these rows (default: all)
    aliases: {ASK: INQ, END: BYE}          # optional: raw corpus labels -> the intent they count as
    label_rules:                           # optional: how to label a real corpus that has no intent labels
      - {intent: BYE, when: "last"}        # the first rule that holds names the line's intent
      - {intent: ASK, matches: "\\?"}       # `matches`: a regex searched in the line (case-insensitive)
      - {intent: SHARE}                    # no condition: every line left (a catch-all)

It is a first-order Markov chain whose rows may depend on the profile. A terminal intent ends the
dialogue after the user's line. Validation proves that a terminal intent is reachable from every
intent the chain can visit. This module does not know about templates or models.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from simgen import jinja
from simgen.config import check_keys, load_yaml
from simgen.data import ProfileLatent
from simgen.errors import ConfigError, did_you_mean
from simgen.lengths import words


@dataclass(frozen=True)
class Intent:
    name: str
    description: str
    terminal: bool = False


@dataclass(frozen=True)
class Modifier:
    when: str
    scale: tuple[tuple[str, float], ...]
    rows: tuple[str, ...] | None = None  # None = every row


RULE_VARIABLES = ("first", "last", "position", "lines", "words", "question")


@dataclass(frozen=True)
class LabelRule:
    intent: str
    when: str | None = None      # jinja2 expression over RULE_VARIABLES
    matches: str | None = None   # regex, searched case-insensitively in the line

    def holds(self, text: str, place: Mapping[str, Any]) -> bool:
        if self.matches is not None and not re.search(self.matches, text, re.IGNORECASE):
            return False
        return self.when is None or bool(jinja.expression(self.when)(**place))


@dataclass(frozen=True)
class IntentModel:
    intents: tuple[Intent, ...]
    start: tuple[float, ...]  # aligned with `intents`
    transitions: tuple[tuple[float, ...], ...]  # [from][to]; all zeros for terminal rows
    modifiers: tuple[Modifier, ...] = ()
    source: str = "<intents>"
    aliases: Mapping[str, str] = field(default_factory=dict)  # raw corpus label -> intent (for reading real labels)
    label_rules: tuple[LabelRule, ...] = ()  # for a corpus without labels: the first rule that holds names a user line's intent

    def label_of(self, raw: str | None) -> str | None:
        """A real corpus's label as one of this model's intents (through `aliases`), or None if it is none."""
        name = self.aliases.get(raw, raw) if raw is not None else None
        return name if name in self.names else None

    def label_lines(self, turns: pl.DataFrame) -> pl.DataFrame:
        """A turns frame (`simgen.corpora`) with `intent` set on every user line: its own label through
        `aliases` (`label_of`) where it has one the model knows, else the first of `label_rules` that
        holds (null where none does). Assistant lines keep what they had. Without rules, only `label_of`."""
        raw = turns["intent"].to_list() if "intent" in turns.columns else [None] * turns.height
        roles, texts, dialogue_ids = turns["role"].to_list(), turns["text"].to_list(), turns["dialogue_id"].to_list()
        order = sorted(range(turns.height), key=list(zip(dialogue_ids, turns["turn"].to_list())).__getitem__)
        users: dict[str, list[int]] = {}
        for i in order:
            if roles[i] == "user" and texts[i] and texts[i].strip():
                users.setdefault(dialogue_ids[i], []).append(i)
        out: list[str | None] = [r if role != "user" else None for r, role in zip(raw, roles)]
        for rows in users.values():
            for k, i in enumerate(rows):
                label = self.label_of(raw[i])
                if label is None and self.label_rules:
                    place = {"first": k == 0, "last": k == len(rows) - 1, "position": k, "lines": len(rows),
                             "words": words(texts[i]), "question": "?" in texts[i]}
                    label = next((r.intent for r in self.label_rules if r.holds(texts[i], place)), None)
                out[i] = label
        return turns.with_columns(pl.Series("intent", out, dtype=pl.String))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.intents)

    def get(self, name: str) -> Intent:
        return self.intents[self.names.index(name)]

    def matrix_for(self, profile: ProfileLatent) -> np.ndarray:
        """The transition matrix [from, to] after this profile's modifiers, rows renormalised."""
        matrix = np.array(self.transitions, dtype=np.float64)
        index = {name: i for i, name in enumerate(self.names)}
        for m in self.modifiers:
            try:
                applies = bool(jinja.expression(m.when)(**profile.values))
            except Exception as e:
                raise ConfigError(f"{self.source}: modifiers: {m.when!r} failed on a profile: {e}.") from None
            if not applies:
                continue
            rows = [index[r] for r in m.rows] if m.rows is not None else range(len(self.intents))
            for to, factor in m.scale:
                for r in rows:
                    matrix[r, index[to]] *= factor
        sums = matrix.sum(axis=1, keepdims=True)
        return np.divide(matrix, sums, out=np.zeros_like(matrix), where=sums > 0)

    def sample_path(self, profile: ProfileLatent, rng: np.random.Generator, max_turns: int, length: int | None = None) -> list[str]:
        """The intents of up to `max_turns` user turns, stopping after the first terminal one.

        With `length` (a dialogue-length latent), the path is drawn from the chain conditioned on its
        first terminal intent falling on turn min(length, max_turns) exactly, so the dialogue has that
        many user lines and ends with a closing one; where the chain cannot end there, it runs free.
        The path is drawn up front from the dialogue's own generator, so it depends only on the
        seed, the dialogue index and the profile, never on what the models say.
        """
        matrix = self.matrix_for(profile)
        if length is not None:
            path = self._path_of_length(matrix, rng, min(length, max_turns))
            if path is not None:
                return [self.intents[i].name for i in path]
        path = [int(rng.choice(len(self.intents), p=np.array(self.start)))]
        while len(path) < max_turns and not self.intents[path[-1]].terminal:
            path.append(int(rng.choice(len(self.intents), p=matrix[path[-1]])))
        return [self.intents[i].name for i in path]

    def _path_of_length(self, matrix: np.ndarray, rng: np.random.Generator, n: int) -> list[int] | None:
        """A path whose first terminal intent is its n-th, drawn exactly (backward messages); None if none exists.

        beta[t][s] is proportional to P(the first terminal intent comes at turn n | turn t is s); turn t+1 is drawn
        from matrix[s] * beta[t+1] (the start row * beta[0] for the first turn)."""
        terminal = np.array([i.terminal for i in self.intents])
        beta = [terminal.astype(np.float64)]
        for _ in range(n - 1):
            b = np.where(terminal, 0.0, matrix @ beta[0])
            total = b.sum()
            if total <= 0:
                return None
            beta.insert(0, b / total)  # rescaled: only ratios within a step matter
        path: list[int] = []
        weights = np.array(self.start) * beta[0]
        for t in range(n):
            if weights.sum() <= 0:
                return None
            path.append(int(rng.choice(len(self.intents), p=weights / weights.sum())))
            if t + 1 < n:
                weights = matrix[path[-1]] * beta[t + 1]
        return path


def load_intent_model(raw: Any, source: str, profile_names: tuple[str, ...] = (), where: str | None = None) -> IntentModel:
    """Validate an intent model: a mapping, or the path of its own YAML file relative to `source`'s folder."""
    if isinstance(raw, str):
        path = Path(raw) if Path(raw).is_absolute() else Path(source).parent / raw
        if not path.is_file():
            raise ConfigError(f"{source}: intent_model: file {str(path)!r} not found; give its path relative to the scenario file's folder, or write the intent model inline.")
        return load_intent_model(load_yaml(path), str(path), profile_names, where=str(path))
    where = where or f"{source}: intent_model"
    check_keys(where, raw, {"intents", "start", "transitions", "modifiers", "aliases", "label_rules"}, required={"intents", "start"})
    declared = raw["intents"]
    if not isinstance(declared, dict) or not declared:
        raise ConfigError(f"{where}: `intents` must be a non-empty mapping of intent name -> {{description, terminal}}.")
    intents = []
    for name, spec in declared.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: intent names must be strings, got {name!r}.")
        if isinstance(spec, str):
            spec = {"description": spec}
        check_keys(f"{where}.intents.{name}", spec, {"description", "terminal"}, required={"description"})
        terminal = spec.get("terminal", False)
        if not isinstance(terminal, bool):
            raise ConfigError(f"{where}.intents.{name}.terminal: expected true or false, got {terminal!r}.")
        intents.append(Intent(name, str(spec["description"]), terminal))
    names = [i.name for i in intents]
    index = {n: i for i, n in enumerate(names)}

    start = _row(f"{where}.start", raw["start"], names)
    transitions_raw = raw.get("transitions") or {}
    if not isinstance(transitions_raw, dict):
        raise ConfigError(f"{where}.transitions: expected a mapping from-intent -> {{to-intent: probability}}.")
    for name in transitions_raw:
        if name not in index:
            raise ConfigError(f"{where}.transitions: transition from undefined intent {name!r}.{did_you_mean(str(name), names)} Declare it under `intents`.")
    matrix = []
    for intent in intents:
        if intent.terminal:
            if intent.name in transitions_raw:
                raise ConfigError(f"{where}.transitions.{intent.name}: {intent.name} is terminal, so it has no outgoing transitions; remove the row or set terminal: false.")
            matrix.append(tuple(0.0 for _ in names))
        elif intent.name not in transitions_raw:
            raise ConfigError(f"{where}.transitions: no row for non-terminal intent {intent.name!r}; add `{intent.name}: {{...}}` or mark it terminal.")
        else:
            matrix.append(_row(f"{where}.transitions.{intent.name}", transitions_raw[intent.name], names))

    modifiers = _modifiers(where, raw.get("modifiers") or [], names, profile_names)
    aliases = raw.get("aliases") or {}
    if not isinstance(aliases, dict):
        raise ConfigError(f"{where}.aliases: expected a mapping raw label -> intent, e.g. {{ASK: INQ}}.")
    for label, target in aliases.items():
        if target not in index:
            raise ConfigError(f"{where}.aliases.{label}: {target!r} is not a declared intent.{did_you_mean(str(target), names)}")
    rules = _label_rules(where, raw.get("label_rules") or [], names)
    model = IntentModel(tuple(intents), start, tuple(matrix), modifiers, source, {str(k): str(v) for k, v in aliases.items()}, rules)
    _check_reachability(where, model)
    return model


def _row(where: str, raw: Any, names: list[str]) -> tuple[float, ...]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{where}: expected a non-empty mapping intent -> probability.")
    row = [0.0] * len(names)
    for to, p in raw.items():
        if to not in names:
            raise ConfigError(f"{where}: transition to undefined intent {to!r}.{did_you_mean(str(to), names)} Declared intents: {', '.join(names)}.")
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or p < 0:
            raise ConfigError(f"{where}.{to}: probability must be a finite number >= 0, got {p!r}.")
        row[names.index(to)] = float(p)
    total = sum(row)
    if total <= 0:
        raise ConfigError(f"{where}: all probabilities are zero; give at least one intent a positive weight.")
    if abs(total - 1) > 1e-6:
        # weights are accepted and normalised, but a near-miss of 1 is probably a typo: say so
        if 0.9 < total < 1.1:
            raise ConfigError(f"{where}: probabilities sum to {total:.6g}, not 1; fix them (or use weights that are clearly not probabilities).")
    return tuple(p / total for p in row)


def _modifiers(where: str, raw: Any, names: list[str], profile_names: tuple[str, ...]) -> tuple[Modifier, ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"{where}.modifiers: expected a list of {{when, scale[, from]}}.")
    out = []
    for i, m in enumerate(raw):
        at = f"{where}.modifiers[{i}]"
        check_keys(at, m, {"when", "scale", "from"}, required={"when", "scale"})
        when = m["when"]
        if not isinstance(when, str):
            raise ConfigError(f"{at}.when: expected a jinja2 expression string over profile variables.")
        known = (*profile_names, "backstory") if profile_names else None
        jinja.check_expression(f"{at}.when", when, known, "reads {name}, which the profile space does not declare")
        scale = m["scale"]
        if not isinstance(scale, dict) or not scale:
            raise ConfigError(f"{at}.scale: expected a mapping to-intent -> factor.")
        for to, f in scale.items():
            if to not in names:
                raise ConfigError(f"{at}.scale: undefined intent {to!r}.{did_you_mean(str(to), names)}")
            if isinstance(f, bool) or not isinstance(f, (int, float)) or not math.isfinite(f) or f <= 0:
                raise ConfigError(f"{at}.scale.{to}: factor must be a finite number > 0 (0 could cut the way to a terminal intent), got {f!r}.")
        rows = m.get("from")
        if rows is not None:
            rows = [rows] if isinstance(rows, str) else rows
            bad = [r for r in rows if r not in names] if isinstance(rows, list) else [rows]
            if bad:
                raise ConfigError(f"{at}.from: undefined intent {bad[0]!r}.")
            rows = tuple(rows)
        out.append(Modifier(when, tuple((k, float(v)) for k, v in scale.items()), rows))
    return tuple(out)


def _label_rules(where: str, raw: Any, names: list[str]) -> tuple[LabelRule, ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"{where}.label_rules: expected a list of {{intent[, when][, matches]}}, the first that holds naming a line's intent.")
    out = []
    for i, r in enumerate(raw):
        at = f"{where}.label_rules[{i}]"
        check_keys(at, r, {"intent", "when", "matches"}, required={"intent"})
        if r["intent"] not in names:
            raise ConfigError(f"{at}.intent: {r['intent']!r} is not a declared intent.{did_you_mean(str(r['intent']), names)}")
        when, matches = r.get("when"), r.get("matches")
        if when is not None:
            if not isinstance(when, str):
                raise ConfigError(f"{at}.when: expected a jinja2 expression string over {', '.join(RULE_VARIABLES)}.")
            jinja.check_expression(f"{at}.when", when, RULE_VARIABLES, "reads {name}; a rule can read " + ", ".join(RULE_VARIABLES))
        if matches is not None:
            if not isinstance(matches, str):
                raise ConfigError(f"{at}.matches: expected a regular expression string, got {matches!r}.")
            try:
                re.compile(matches, re.IGNORECASE)
            except re.error as e:
                raise ConfigError(f"{at}.matches: {matches!r} is not a valid regular expression: {e}.") from None
        out.append(LabelRule(str(r["intent"]), when, matches))
    return tuple(out)


def _check_reachability(where: str, model: IntentModel) -> None:
    names = model.names
    if not any(i.terminal for i in model.intents):
        raise ConfigError(f"{where}: no intent is terminal, so dialogues could only end at --max-turns; mark one (e.g. a goodbye) `terminal: true`.")
    n = len(names)
    # forward: what the chain can visit from the start distribution
    visited = {i for i in range(n) if model.start[i] > 0}
    queue = deque(visited)
    while queue:
        i = queue.popleft()
        for j in range(n):
            if model.transitions[i][j] > 0 and j not in visited:
                visited.add(j)
                queue.append(j)
    # backward: what can reach a terminal intent (modifiers never zero an edge, so this holds for every profile)
    reaches = {i for i in range(n) if model.intents[i].terminal}
    changed = True
    while changed:
        changed = False
        for i in range(n):
            if i not in reaches and any(model.transitions[i][j] > 0 for j in reaches):
                reaches.add(i)
                changed = True
    stuck = sorted(names[i] for i in visited - reaches)
    if stuck:
        raise ConfigError(
            f"{where}: no terminal intent can be reached from {', '.join(map(repr, stuck))}; "
            "add a transition from them toward a terminal intent."
        )


def transition_counts(paths: list[list[str]], names: tuple[str, ...]) -> Mapping[str, Mapping[str, int]]:
    """(from, to) -> count over sampled paths; for tests and diagnostics."""
    counts: dict[str, dict[str, int]] = {a: {b: 0 for b in names} for a in names}
    for path in paths:
        for a, b in zip(path, path[1:]):
            counts[a][b] += 1
    return counts
