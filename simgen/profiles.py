"""Profile spaces: the session-level latent variables of a simulated user, and their sampler.

A profile space is the `profile:` block of a scenario YAML:

    profile:
      variables:
        age_group: {type: categorical, values: {"18-29": 3, "30-49": 4, "50+": 3}}
        age:                                   # conditional on age_group
          type: int
          given: age_group
          cases:
            "18-29": {dist: uniform, low: 18, high: 29}
            "30-49": {dist: uniform, low: 30, high: 49}
            "50+":   {dist: truncnormal, mean: 60, std: 8, low: 50, high: 90}
        patience: {type: float, dist: truncnormal, mean: 0.55, std: 0.2, low: 0, high: 1}
        liked_genres: {type: list, values: [action, comedy, drama], k: [1, 2]}
        disliked_genres: {type: list, values: [action, comedy, drama], k: [0, 1], exclude: [liked_genres]}
      constraints:                             # jinja2 expressions; samples that fail are redrawn
        - "not (age < 23 and occupation == 'retired')"
      backstory: "{{ name }} is {{ age }} and likes {{ liked_genres | join(', ') }}."

Variable types: `categorical` (values as a list, uniform, or a value -> weight mapping), `int` and
`float` (`dist`: uniform | normal | truncnormal), `list` (k of n without replacement, `k` an int or
[min, max], optional weights and `exclude`). Any variable may be conditional (`given` + `cases`: a
case's fields override the variable's own). A categorical, int or list variable may say how a person
states its value (`stated`: regular expressions with a `(?P<value>...)` group, such as
"i'm from (?P<value>[a-z ]+)"); `simgen tune` reads them to set a real person's training persona from
their own lines. A categorical variable may take its values from a real corpus instead of listing them
(`values_from: {corpus: chitchat, column: topic}`: each value of that column at its share of the
corpus's train dialogues, read when the scenario loads, so corpus text stays in the corpus); `simgen
tune` then sets each real dialogue's value from the same column. Any variable may be `shared: true`:
the other side knows it too, and the assistant template may read it (of the profile, it reads nothing
else). Sampling is seeded per dialogue: dialogue i of a run gets the same profile whatever
else happens in the run. This module does not know about intents, templates or models.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from simgen import jinja
from simgen.config import check_keys
from simgen.data import ProfileLatent
from simgen.errors import ConfigError, DataError, SimgenError, did_you_mean

TYPES = ("categorical", "int", "float", "list")
DISTS = ("uniform", "normal", "truncnormal")
# Names the templates provide themselves; a profile variable may not take them.
RESERVED = frozenset({"profile", "intent", "intent_description", "turn", "scenario", "backstory", "history"})
MAX_REJECTIONS = 1000
_FIELDS = {
    "categorical": {"type", "values", "values_from", "given", "cases", "description", "stated", "shared"},
    "int": {"type", "dist", "low", "high", "mean", "std", "given", "cases", "description", "stated", "shared"},
    "float": {"type", "dist", "low", "high", "mean", "std", "round", "given", "cases", "description", "shared"},
    "list": {"type", "values", "k", "exclude", "given", "cases", "description", "stated", "shared"},
}
_OWN = ("given", "cases", "description", "stated", "values_from", "shared")  # a variable's fields that are not its distribution's
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Distribution:
    """One fully specified distribution of a variable (a variable, or one case of it)."""

    type: str
    values: tuple[Any, ...] = ()  # categorical / list: the options, in declaration order
    weights: tuple[float, ...] = ()  # normalised, same length as values
    dist: str = "uniform"
    low: float | None = None
    high: float | None = None
    mean: float | None = None
    std: float | None = None
    round: int = 2
    k: tuple[int, int] = (1, 1)
    exclude: tuple[str, ...] = ()

    def sample(self, rng: np.random.Generator, drawn: Mapping[str, Any]) -> Any:
        if self.type == "categorical":
            return self.values[rng.choice(len(self.values), p=self.weights)]
        if self.type == "list":
            return self._sample_list(rng, drawn)
        x = self._sample_number(rng)
        if self.type == "int":
            return int(round(x))
        return float(round(x, self.round))

    def _sample_number(self, rng: np.random.Generator) -> float:
        if self.dist == "uniform":
            if self.type == "int":  # inclusive of both ends
                return float(rng.integers(int(self.low), int(self.high) + 1))
            return float(rng.uniform(self.low, self.high))
        if self.dist == "normal":
            return float(rng.normal(self.mean, self.std))
        # truncnormal: redraw until inside [low, high]; fall back to clipping if the mass is tiny
        for _ in range(MAX_REJECTIONS):
            x = rng.normal(self.mean, self.std)
            if self.low <= x <= self.high:
                return float(x)
        return float(min(max(rng.normal(self.mean, self.std), self.low), self.high))

    def _sample_list(self, rng: np.random.Generator, drawn: Mapping[str, Any]) -> list[Any]:
        banned: set[Any] = set()
        for other in self.exclude:
            value = drawn[other]
            banned.update(value if isinstance(value, list) else [value])
        pool = [i for i, v in enumerate(self.values) if v not in banned]
        k = int(rng.integers(self.k[0], self.k[1] + 1))
        k = min(k, len(pool))
        if k == 0:
            return []
        p = np.array([self.weights[i] for i in pool])
        p = p / p.sum() if p.sum() > 0 else None
        chosen = rng.choice(pool, size=k, replace=False, p=p)
        return [self.values[i] for i in sorted(int(c) for c in chosen)]


@dataclass(frozen=True)
class ValuesFrom:
    """A categorical variable's values read off a real corpus: each distinct value of `column` at its share
    of the train split's dialogues that have one (`simgen.corpora.dialogue_values`)."""

    corpus: str  # as `simgen.corpora.load_corpus` takes it: a registered name, or a path (relative: to the scenario's folder)
    column: str
    values: tuple[str, ...]
    weights: tuple[float, ...]  # normalised
    dialogues: int  # train dialogues with a value
    sha256: str  # of the values and weights: what the scenario's fingerprint records

    def describe(self) -> dict[str, str]:
        """The scenario's `files` entry for it (`Scenario.fingerprint` reads the sha256)."""
        return {"path": f"{self.corpus}: column {self.column} (train split, {self.dialogues} dialogues)", "sha256": self.sha256}


@dataclass(frozen=True)
class Variable:
    name: str
    base: Distribution | None  # None when every case is given and the base alone is incomplete
    given: str | None = None
    cases: tuple[tuple[Any, Distribution], ...] = ()
    description: str = ""
    stated: tuple[re.Pattern[str], ...] = ()  # how a person says the value in a line: `(?P<value>...)` captures it (`simgen tune` reads them)
    values_from: ValuesFrom | None = None  # where its values came from (a corpus column), when it names one
    shared: bool = False  # the other side knows it too: the assistant template may read it (a starter both were shown)

    @property
    def type(self) -> str:
        return (self.base or self.cases[0][1]).type

    @property
    def distributions(self) -> tuple[Distribution, ...]:
        """Its base distribution (where complete on its own), then each case's."""
        return tuple(d for d in [self.base, *(d for _, d in self.cases)] if d is not None)

    def depends_on(self) -> set[str]:
        deps = {self.given} if self.given else set()
        for dist in self.distributions:
            deps.update(dist.exclude)
        return deps

    def distribution_for(self, drawn: Mapping[str, Any]) -> Distribution:
        if self.given is not None:
            parent = drawn[self.given]
            for key, dist in self.cases:
                if key == parent or str(key) == str(parent):
                    return dist
        assert self.base is not None  # guaranteed by validation
        return self.base


@dataclass(frozen=True)
class ProfileSpace:
    """The declared variables (in sampling order), constraints and backstory of a scenario."""

    variables: tuple[Variable, ...]
    constraints: tuple[str, ...] = ()
    backstory: str | None = None
    source: str = "<profile>"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variables)

    @property
    def shared(self) -> tuple[str, ...]:
        """The variables the other side knows too (`shared: true`): all the assistant template sees of a profile."""
        return tuple(v.name for v in self.variables if v.shared)

    def fields(self) -> tuple[str, ...]:
        """The keys of a sampled latent: the variables, then `backstory` if declared."""
        return self.names + (("backstory",) if self.backstory is not None else ())

    def sample(self, rng: np.random.Generator) -> ProfileLatent:
        """Draw one profile latent; constraints are met by redrawing the whole profile."""
        checks = [(c, jinja.expression(c)) for c in self.constraints]
        for _ in range(MAX_REJECTIONS):
            drawn: dict[str, Any] = {}
            for var in self.variables:
                drawn[var.name] = var.distribution_for(drawn).sample(rng, drawn)
            failed = next((text for text, check in checks if not _truthy(check, drawn, text, self.source)), None)
            if failed is None:
                break
        else:
            raise ConfigError(
                f"{self.source}: profile.constraints: {failed!r} rejected {MAX_REJECTIONS} samples in a "
                "row; it is (nearly) unsatisfiable. Loosen it or change the distributions it reads."
            )
        return self._latent({var.name: drawn[var.name] for var in self.variables})

    def replace(self, profile: ProfileLatent, values: Mapping[str, Any]) -> ProfileLatent:
        """`profile` with `values` in place of its own, its backstory rendered again from them (not checked
        against the distributions or constraints: `simgen tune` sets what a real person stated)."""
        return self._latent({var.name: values.get(var.name, profile.values[var.name]) for var in self.variables})

    def _latent(self, ordered: dict[str, Any]) -> ProfileLatent:
        if self.backstory is not None:
            ordered["backstory"] = render_backstory(self.backstory, ordered, self.source)
        return ProfileLatent(ordered)

    def polars_schema(self) -> pl.Struct:
        """The Struct dtype of the `profile` column of turns.parquet."""
        dtypes = {"categorical": pl.String(), "int": pl.Int64(), "float": pl.Float64(), "list": pl.List(pl.String())}
        fields_ = [pl.Field(v.name, dtypes[v.type]) for v in self.variables]
        if self.backstory is not None:
            fields_.append(pl.Field("backstory", pl.String()))
        return pl.Struct(fields_)


def _truthy(check: Any, drawn: dict[str, Any], text: str, source: str) -> bool:
    try:
        return bool(check(**drawn))
    except Exception as e:  # a user expression failed at run time: name it
        raise ConfigError(f"{source}: profile.constraints: {text!r} failed: {e}.") from None


def render_backstory(template: str, values: Mapping[str, Any], source: str = "<profile>") -> str:
    try:
        text = jinja.template(template).render(**values)
    except Exception as e:
        raise ConfigError(f"{source}: profile.backstory: {e}.") from None
    return " ".join(text.split())


# ---------------------------------------------------------------- parsing and validation


def parse_profile_space(raw: Any, source: str) -> ProfileSpace:
    """Validate the `profile:` block of `source` and build its `ProfileSpace`."""
    where = f"{source}: profile"
    check_keys(where, raw, {"variables", "constraints", "backstory"}, required={"variables"})
    raw_vars = raw["variables"]
    if not isinstance(raw_vars, dict) or not raw_vars:
        raise ConfigError(f"{where}.variables: expected a non-empty mapping of variable name -> spec.")
    variables: dict[str, Variable] = {}
    for name, spec in raw_vars.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"{where}.variables: {name!r} is not a valid name (letters, digits, _; not starting with a digit).")
        if name in RESERVED:
            raise ConfigError(f"{where}.variables.{name}: the name is reserved for templates; rename the variable.")
        variables[name] = _parse_variable(f"{where}.variables.{name}", name, spec, _folder(source))
    for var in variables.values():
        for dep in var.depends_on():
            if dep not in variables:
                raise ConfigError(
                    f"{where}.variables.{var.name}: refers to undefined variable {dep!r}."
                    f"{did_you_mean(dep, variables)} Declare it or fix the name."
                )
        if var.given is not None:
            _check_cases(where, var, variables[var.given])
    ordered = _topological(where, variables)

    constraints = raw.get("constraints") or []
    if not isinstance(constraints, list) or not all(isinstance(c, str) for c in constraints):
        raise ConfigError(f"{where}.constraints: expected a list of jinja2 expressions (strings).")
    for i, text in enumerate(constraints):
        jinja.check_expression(f"{where}.constraints[{i}]", text, variables)

    backstory = raw.get("backstory")
    if backstory is not None:
        if not isinstance(backstory, str):
            raise ConfigError(f"{where}.backstory: expected a jinja2 template string.")
        jinja.check_template(f"{where}.backstory", backstory, variables, "The backstory can read only the profile variables.")
    return ProfileSpace(tuple(ordered), tuple(constraints), backstory, source)


def _folder(source: str) -> Path | None:
    """The folder of the scenario file `source`, against which a relative `values_from` corpus path resolves."""
    path = Path(source)
    return path.parent if path.suffix in (".yaml", ".yml") else None


def _parse_variable(where: str, name: str, spec: Any, folder: Path | None = None) -> Variable:
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping with at least a `type`, got {spec!r:.60}.")
    vtype = spec.get("type")
    if vtype not in TYPES:
        raise ConfigError(f"{where}.type: unknown variable type {vtype!r}.{did_you_mean(str(vtype), TYPES)} Known types: {', '.join(TYPES)}.")
    check_keys(where, spec, _FIELDS[vtype])
    given = spec.get("given")
    base_fields = {k: v for k, v in spec.items() if k not in _OWN}
    stated = _parse_stated(f"{where}.stated", spec.get("stated"))
    shared = spec.get("shared", False)
    if not isinstance(shared, bool):
        raise ConfigError(f"{where}.shared: expected true or false (whether the assistant side knows the value too), got {shared!r:.60}.")
    source = None
    if "values_from" in spec:
        if "values" in spec or given is not None or "cases" in spec:
            raise ConfigError(f"{where}: `values_from` gives the variable its values and weights; drop `values`, `given` and `cases`, "
                              "or drop `values_from` and list the values.")
        source = values_from(f"{where}.values_from", spec["values_from"], folder)
        base_fields["values"] = dict(zip(source.values, source.weights))
    if given is None:
        if "cases" in spec:
            raise ConfigError(f"{where}: `cases` needs `given: <variable>` to say which variable they depend on.")
        return Variable(name, _parse_distribution(where, base_fields), description=str(spec.get("description", "")), stated=stated,
                        values_from=source, shared=shared)
    if not isinstance(given, str):
        raise ConfigError(f"{where}.given: expected the name of another variable.")
    cases_raw = spec.get("cases")
    if not isinstance(cases_raw, dict) or not cases_raw:
        raise ConfigError(f"{where}.cases: a conditional variable needs a non-empty mapping of {given} value -> fields.")
    cases = []
    for key, case in cases_raw.items():
        if not isinstance(case, dict):
            raise ConfigError(f"{where}.cases.{key}: expected a mapping of fields.")
        check_keys(f"{where}.cases.{key}", case, _FIELDS[vtype] - {"type", *_OWN})
        cases.append((key, _parse_distribution(f"{where}.cases.{key}", {**base_fields, **case})))
    try:
        base = _parse_distribution(where, base_fields)
    except ConfigError:
        base = None  # incomplete on its own: every parent value must then have a case
    return Variable(name, base, given, tuple(cases), str(spec.get("description", "")), stated, shared=shared)


def values_from(where: str, raw: Any, folder: Path | None = None) -> ValuesFrom:
    """Parse `values_from: {corpus, column}` and read the values off the corpus's train split (`ValuesFrom`);
    anything wrong is a ConfigError naming `where`. A relative corpus path resolves against `folder` (the
    scenario's) when it exists there."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping {{corpus: <a corpus name or path>, column: <its column>}}, got {raw!r:.60}.")
    check_keys(where, raw, {"corpus", "column"}, required={"corpus", "column"})
    corpus, column = raw["corpus"], raw["column"]
    if not isinstance(corpus, str) or not corpus.strip() or not isinstance(column, str) or not column.strip():
        raise ConfigError(f"{where}: `corpus` and `column` must be non-empty strings (got {corpus!r} and {column!r}).")
    spec = corpus
    if folder is not None and not Path(corpus).is_absolute() and (folder / corpus).exists():
        spec = str(folder / corpus)
    try:
        values, weights, dialogues = _column_shares(spec, column, _stamp(spec))
    except SimgenError as e:
        raise ConfigError(f"{where}: {e}") from None
    digest = hashlib.sha256(json.dumps([values, weights]).encode()).hexdigest()
    return ValuesFrom(corpus, column, values, weights, dialogues, digest)


def _stamp(spec: str) -> tuple[tuple[str, int, int], ...]:
    """(file, mtime, size) of every file under the corpus path `spec` (none for a registered name): the
    cache key's part that makes an edited corpus file read again."""
    path = Path(spec)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] if path.is_file() else []
    return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)


@functools.lru_cache(maxsize=16)
def _column_shares(spec: str, column: str, stamp: tuple = ()) -> tuple[tuple[str, ...], tuple[float, ...], int]:
    """(values, most common first; their shares of the train dialogues that have one; how many have one).
    Cached per process (a scenario loads often), keyed by the files' `_stamp` too."""
    from simgen.corpora import REQUIRED_COLUMNS, dialogue_values, load_corpus

    if column in REQUIRED_COLUMNS:
        raise DataError(f"column {column!r} is one of the turn columns ({', '.join(REQUIRED_COLUMNS)}); name a column that labels dialogues.")
    corpus = load_corpus(spec, split="train")
    if column not in corpus.turns.columns:
        extra = [c for c in corpus.turns.columns if c not in REQUIRED_COLUMNS]
        raise DataError(f"corpus {corpus.source} has no column {column!r} (its other columns: {', '.join(map(repr, extra)) or 'none'}).")
    values = dialogue_values(corpus.turns, column)["value"]
    if values.is_empty():
        raise DataError(f"corpus {corpus.source}: column {column!r} holds no value in the train split.")
    counts = values.value_counts().sort(["count", "value"], descending=[True, False])
    total = int(counts["count"].sum())
    return tuple(counts["value"].to_list()), tuple(c / total for c in counts["count"].to_list()), total


def _parse_stated(where: str, raw: Any) -> tuple[re.Pattern[str], ...]:
    """A variable's `stated` patterns (one regular expression or a list), compiled case-insensitively;
    each must capture the value in a group named `value`."""
    if raw is None:
        return ()
    patterns = [raw] if isinstance(raw, str) else raw
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise ConfigError(f"{where}: expected a regular expression or a list of them, each with a (?P<value>...) group "
                          f"that captures the value a person states, got {raw!r:.60}.")
    out = []
    for i, pattern in enumerate(patterns):
        try:
            rx = re.compile(pattern, re.IGNORECASE)
        except re.error as e:
            raise ConfigError(f"{where}[{i}]: {pattern!r} is not a regular expression ({e}).") from None
        if "value" not in rx.groupindex:
            raise ConfigError(f"{where}[{i}]: {pattern!r} has no group named `value`; write the part that is the value "
                              "as (?P<value>...), e.g. \"i'm from (?P<value>[a-z ]+)\".")
        out.append(rx)
    return tuple(out)


def _number(where: str, spec: dict, key: str) -> float:
    value = spec.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}.{key}: expected a finite number, got {value!r}.")
    return float(value)


def _parse_distribution(where: str, spec: dict) -> Distribution:
    vtype = spec["type"]
    if vtype in ("categorical", "list"):
        values, weights = _parse_weighted(where, spec.get("values"))
        if vtype == "categorical":
            return Distribution(vtype, values, weights)
        k = spec.get("k", 1)
        if isinstance(k, int) and not isinstance(k, bool):
            k = (k, k)
        elif isinstance(k, list) and len(k) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in k):
            k = (k[0], k[1])
        else:
            raise ConfigError(f"{where}.k: expected an integer or [min, max], got {k!r}.")
        if not (0 <= k[0] <= k[1] <= len(values)):
            raise ConfigError(f"{where}.k: need 0 <= min <= max <= {len(values)} (the number of values), got {list(k)}.")
        exclude = spec.get("exclude", [])
        exclude = [exclude] if isinstance(exclude, str) else exclude
        if not isinstance(exclude, list) or not all(isinstance(x, str) for x in exclude):
            raise ConfigError(f"{where}.exclude: expected a variable name or a list of them.")
        return Distribution(vtype, values, weights, k=k, exclude=tuple(exclude))
    dist = spec.get("dist", "uniform")
    if dist not in DISTS:
        raise ConfigError(f"{where}.dist: unknown distribution {dist!r}.{did_you_mean(str(dist), DISTS)} Known: {', '.join(DISTS)}.")
    fields_: dict[str, Any] = {"dist": dist}
    if dist in ("uniform", "truncnormal"):
        fields_["low"], fields_["high"] = _number(where, spec, "low"), _number(where, spec, "high")
        if fields_["low"] > fields_["high"]:
            raise ConfigError(f"{where}: low ({fields_['low']:g}) must not exceed high ({fields_['high']:g}).")
    if dist in ("normal", "truncnormal"):
        fields_["mean"], fields_["std"] = _number(where, spec, "mean"), _number(where, spec, "std")
        if fields_["std"] <= 0:
            raise ConfigError(f"{where}.std: must be > 0, got {fields_['std']:g}.")
    if vtype == "float":
        digits = spec.get("round", 2)
        if isinstance(digits, bool) or not isinstance(digits, int) or not 0 <= digits <= 12:
            raise ConfigError(f"{where}.round: expected the number of decimals (0-12), got {digits!r}.")
        fields_["round"] = digits
    return Distribution(vtype, **fields_)


def _parse_weighted(where: str, raw: Any) -> tuple[tuple[Any, ...], tuple[float, ...]]:
    """`[a, b]` (uniform) or `{a: w, b: w}` -> (values, normalised weights)."""
    if isinstance(raw, list) and raw:
        values, weights = list(raw), [1.0] * len(raw)
    elif isinstance(raw, dict) and raw:
        values, weights = list(raw), list(raw.values())
    else:
        raise ConfigError(f"{where}.values: expected a non-empty list of values or a mapping value -> weight.")
    for v in values:
        if not isinstance(v, (str, int, float)) or isinstance(v, bool):
            raise ConfigError(f"{where}.values: {v!r} is not a string or number; quote it.")
    if len({str(v) for v in values}) != len(values):
        raise ConfigError(f"{where}.values: duplicate values; each value may appear once.")
    for v, w in zip(values, weights):
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ConfigError(f"{where}.values.{v}: weight must be a finite number >= 0, got {w!r}.")
    total = float(sum(weights))
    if total <= 0:
        raise ConfigError(f"{where}.values: all weights are zero; give at least one value a positive weight.")
    return tuple(str(v) for v in values), tuple(float(w) / total for w in weights)


def _check_cases(where: str, var: Variable, parent: Variable) -> None:
    if parent.type != "categorical":
        raise ConfigError(f"{where}.variables.{var.name}.given: {parent.name!r} must be categorical to condition on it (it is {parent.type}).")
    parent_values = {str(v) for dist in [parent.base, *(d for _, d in parent.cases)] if dist for v in dist.values}
    for key, _ in var.cases:
        if str(key) not in parent_values:
            raise ConfigError(
                f"{where}.variables.{var.name}.cases: {key!r} is not a value of {parent.name!r}."
                f"{did_you_mean(str(key), parent_values)} Values: {', '.join(sorted(parent_values))}."
            )
    if var.base is None:
        missing = sorted(parent_values - {str(k) for k, _ in var.cases})
        if missing:
            raise ConfigError(
                f"{where}.variables.{var.name}.cases: no case for {parent.name} = {missing[0]!r}; add it, "
                "or give the variable complete fields of its own as the default."
            )
    for _, dist in var.cases:
        if dist.type != var.type:  # pragma: no cover - type is shared by construction
            raise ConfigError(f"{where}.variables.{var.name}: cases must keep the variable's type.")


def _topological(where: str, variables: dict[str, Variable]) -> list[Variable]:
    """Declaration order, moved only as far as dependencies require; cycles are errors."""
    ordered: list[Variable] = []
    state: dict[str, int] = {}  # 1 = visiting, 2 = done

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = " -> ".join([*path[path.index(name):], name])
            raise ConfigError(f"{where}.variables: circular dependency {cycle}; break the cycle.")
        state[name] = 1
        for dep in sorted(variables[name].depends_on()):
            visit(dep, [*path, name])
        state[name] = 2
        ordered.append(variables[name])

    for name in variables:
        visit(name, [])
    return ordered
