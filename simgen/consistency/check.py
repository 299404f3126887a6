"""`simgen consistency`: score a run's persona consistency, write the sidecar and the report.

    RUN/consistency.parquet        one row per user line (metrics.COLUMNS), keyed by dialogue_id and turn
                                   (with `out`: OUT/consistency.parquet, and the run's own is left as it is)
    RUN/reports/consistency.json   scores overall, per dialogue, drift by turn; judge and model used
    RUN/reports/consistency.html   the same for people, drift curves first
    RUN/reports/persona_axis.json  the fitted persona direction (for --persona-cap)
    RUN/consistency.parts/         while it runs: each finished chunk of dialogues (`Parts`); a rerun after
                                   a crash or Ctrl-C picks up from there; removed once the sidecar is written
                                   (with `out`: OUT/consistency.parts/)

Prompt-to-line and line-to-line need only the judge. Q&A and the persona axis need the simulator's
own model through the transformers backend (the run's manifest names it) and the run's scenario;
when either is missing they are reported as not computed, with the reason, and the rest goes on.
turns.parquet is never rewritten. `score_dialogues` does the same on a turns frame, writing nothing.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from simgen.backends import Scorer
from simgen.checks import Check
from simgen.consistency.judges import Judge, load_judge
from simgen.consistency.metrics import (
    COLUMNS,
    TURN_COLUMNS,
    ConsistencyConfig,
    aggregate,
    check_turns,
    dialogue_scores,
    dialogues_from_turns,
    drift,
    overall,
    persona_text,
    score_lines,
)
from simgen.consistency.report import NOTES, write_report
from simgen.generation.run import dialogue_spans, most_user_turns, read_dialogues

SIDECAR = "consistency.parquet"
PARTS = "consistency.parts"  # finished chunks of an unfinished check (`Parts`), removed when it completes


class ConsistencyCheck(Check):
    """The consistency check as a `simgen.checks.Check` (`check_run` with options)."""

    name = "consistency"
    reads: ClassVar[tuple[str, ...]] = ("dialogue_id", "turn", "role", "text", "profile")  # and `intent`, when present
    sidecar = SIDECAR
    reports = ("consistency.json", "consistency.html", "persona_axis.json")

    def run(self, run: Any, judge: Judge | str | None = None, **options: Any) -> dict[str, Any]:
        return check_run(run, judge, **options)

    @classmethod
    def summary(cls, sidecar: pl.LazyFrame) -> pl.LazyFrame:
        """Per dialogue: the mean prompt-to-line, line-to-line, Q&A accuracy and specificity."""
        return aggregate(sidecar, "dialogue_id").select("dialogue_id", "prompt_to_line", "line_to_line", "qa", "specificity")


@dataclass(frozen=True)
class Scored:
    """What scoring a set of dialogues gives."""

    lines: pl.DataFrame  # the sidecar frame: one row per user line (metrics.COLUMNS)
    report: dict[str, Any]  # JSON-ready: judge, overall, per dialogue, drift, ...
    axis: Any = None  # the fitted PersonaAxis, when the simulator model was given


def score_dialogues(turns: pl.DataFrame | pl.LazyFrame, judge: Judge | str | None = None, *, scenario: Any = None,
                    simulator: Any = None, max_turns: int | None = None,
                    config: ConsistencyConfig = ConsistencyConfig(), progress: bool = False,
                    parts: str | Path | None = None) -> Scored:
    """Score a turns frame (turns.parquet's columns, hand-built or from a run); writes nothing but `parts`.

    `turns` may be lazy (`Run.scan()`): it is read `config.chunk_dialogues` dialogues at a time, so
    only one chunk's text and activations are in memory; the sidecar (numbers per line) is what
    grows with the run. Results do not depend on the chunk size. Q&A and the axis run when
    `scenario` and `simulator` (a TransformersBackend of the model that spoke the user lines) are
    given; the axis is fitted from running means over every chunk, then each line is projected.
    Within a chunk the stages run dialogue by dialogue (each stage one packed call per dialogue,
    see `simgen.backends.packing`), so the bar moves per dialogue and names the stage it is in;
    `report["seconds"]` holds each stage's time.

    parts: a folder where each finished chunk is saved (`Parts`); a rerun with the same judge,
    settings and dialogues reads those chunks back instead of scoring them again.
    """
    judge = load_judge(judge)
    scan = turns.lazy()
    plan = plan_chunks(scan, judge, scenario=scenario, simulator=simulator, max_turns=max_turns, config=config)
    if plan.run_axis:
        from simgen.consistency.axis import AxisSums

        sums = AxisSums()
    saved = Parts(parts, plan.state) if parts is not None else None
    seconds = {"judge": 0.0, "qa": 0.0, "axis": 0.0}
    lines: list[pl.DataFrame] = []
    with tempfile.TemporaryDirectory(prefix="simgen-axis-") as spill, \
            tqdm(total=len(plan.ids), unit="dialogue", desc="consistency", disable=not progress) as bar:
        for k, chunk_ids in enumerate(plan.chunks()):
            done = saved.load(k, chunk_ids) if saved is not None else None
            if done is None:
                done = score_chunk(plan, k, judge, scenario, simulator, config, bar, seconds)
                if saved is not None:
                    saved.save(k, chunk_ids, done)
            else:
                bar.update(len(chunk_ids))
            lines.append(done.lines)
            if plan.run_axis:
                sums.add(done.persona_keys, done.persona, done.assistant, Path(spill) / f"{k}.npy")
        sidecar = pl.concat(lines) if lines else pl.DataFrame(schema=COLUMNS)
        axis = None
        if plan.run_axis:
            axis = sums.fit(plan.layer, simulator.source.fingerprint)
            sidecar = _fill(sidecar, dict(sums.projections(axis)), "persona_projection", pl.Float64(), None)
    per_dialogue = dialogue_scores(sidecar)
    worst = sidecar.filter(pl.col("p2l_contradiction").is_not_null()).sort("p2l_contradiction", descending=True).head(10)
    report = {
        "check": "consistency",
        "judge": judge.describe(),
        "simulator": simulator.describe() if simulator is not None else None,
        "config": asdict(config),
        "overall": overall(per_dialogue),
        "dialogues": per_dialogue.to_dicts(),
        "drift": drift(sidecar).to_dicts(),
        "axis": {k: v for k, v in axis.to_dict().items() if k != "direction"} if axis else None,
        "worst_lines": _with_text(scan, worst.select("dialogue_id", "turn", "p2l_contradiction")),
        "not_computed": plan.not_computed,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "notes": list(NOTES),
    }
    return Scored(sidecar, report, axis)


@dataclass(frozen=True)
class ChunkPlan:
    """How a check splits its dialogues into chunks, and what each chunk is scored with (`plan_chunks`)."""

    scan: pl.LazyFrame
    columns: list[str]
    spans: pl.DataFrame  # one row per dialogue scored, in order (`dialogue_spans`)
    max_turns: int
    run_qa: bool
    run_axis: bool
    layer: int | None
    not_computed: dict[str, str]
    state: dict[str, Any]  # what `Parts` keys the saved chunks by
    size: int  # dialogues per chunk
    max_user_lines: int = 0  # each dialogue is read up to its N-th user line (0 = whole)

    @property
    def ids(self) -> pl.Series:
        return self.spans["dialogue_id"]

    def chunks(self) -> list[list[str]]:
        """The dialogue ids of each chunk, in order."""
        return [self.ids.slice(start, self.size).to_list() for start in range(0, len(self.ids), self.size)]

    def frame(self, k: int) -> pl.DataFrame:
        """Chunk k's turns, read from the scan (each dialogue up to its `max_user_lines`-th user line)."""
        return first_user_lines(read_dialogues(self.scan.select(self.columns), self.spans.slice(k * self.size, self.size)),
                                self.max_user_lines)


def first_user_lines(turns: pl.DataFrame, n: int) -> pl.DataFrame:
    """`turns` with each dialogue cut after its n-th user line (rows kept in their order; n = 0: all of it)."""
    if not n:
        return turns
    last = (turns.filter(pl.col("role") == "user").group_by("dialogue_id")
            .agg(pl.col("turn").sort().slice(n - 1, 1).first().alias("_last_turn")))
    return (turns.join(last, on="dialogue_id", how="left", maintain_order="left")
            .filter(pl.col("_last_turn").is_null() | (pl.col("turn") <= pl.col("_last_turn"))).drop("_last_turn"))


def plan_chunks(scan: pl.LazyFrame, judge: Judge, *, scenario: Any = None, simulator: Any = None, max_turns: int | None = None,
                config: ConsistencyConfig = ConsistencyConfig()) -> ChunkPlan:
    """The chunks of a check and their settings; the same on the driver and on every Ray worker (`cluster.py`)."""
    check_turns(scan)
    schema = scan.collect_schema()
    columns = [c for c in TURN_COLUMNS if c in schema]
    spans = dialogue_spans(scan)
    if config.max_dialogues:
        spans = spans.head(config.max_dialogues)
    ids = spans["dialogue_id"]
    if max_turns is None:
        max_turns = most_user_turns(scan.filter(pl.col("dialogue_id").is_in(ids.implode())))
    not_computed = {k: f"turned off ({k}=False)" for k, on in (("qa", config.qa), ("axis", config.axis)) if not on}
    run_qa = run_axis = False
    if scenario is None or simulator is None:
        reason = "needs the run's scenario and its simulator model through the transformers backend"
        not_computed |= {k: reason for k in ("qa", "axis") if k not in not_computed}
    else:
        run_qa, run_axis = config.qa, config.axis
    layer = None
    if run_axis:
        from simgen.consistency.axis import default_layer

        layer = config.axis_layer if config.axis_layer is not None else default_layer(simulator)
    state = {"judge": judge.describe(), "simulator": simulator.describe() if simulator is not None else None,
             "scenario": getattr(scenario, "fingerprint", None), "config": asdict(config), "layer": layer,
             "max_turns": max_turns}
    return ChunkPlan(scan, columns, spans, max_turns, run_qa, run_axis, layer, not_computed, state, config.chunk_dialogues,
                     config.max_user_lines)


def score_chunk(plan: ChunkPlan, k: int, judge: Judge, scenario: Any, simulator: Any, config: ConsistencyConfig,
                bar: Any = None, seconds: dict[str, float] | None = None) -> Chunk:
    """Score chunk k of `plan`, dialogue by dialogue (the bar, when given, moves per dialogue and names the stage)."""
    seconds = seconds if seconds is not None else {"judge": 0.0, "qa": 0.0, "axis": 0.0}
    if plan.run_qa:
        from simgen.consistency.qa import qa_scores
    if plan.run_axis:
        from simgen.consistency.axis import line_activations

    def stage(name: str, d: Any) -> None:
        if bar is not None:
            bar.set_postfix_str(f"{name} {d.dialogue_id}", refresh=name != "judge")

    rows, qa, persona_keys, persona, assistant = [], {}, [], [], []
    for d in dialogues_from_turns(plan.frame(k), checked=True):
        clock = time.perf_counter()
        stage("judge", d)
        rows.append(score_lines([d], judge, config))
        seconds["judge"] += time.perf_counter() - clock
        if plan.run_qa:
            clock = time.perf_counter()
            stage("Q&A", d)
            qa.update(qa_scores(simulator, scenario, [d], plan.max_turns, config.qa_every, config.qa_max_questions,
                                config.qa_options, config.seed, config.pass_tokens, config.qa_skip))
            seconds["qa"] += time.perf_counter() - clock
        if plan.run_axis:
            clock = time.perf_counter()
            stage("axis", d)
            keys, p, a = line_activations(simulator, scenario, [d], plan.max_turns, plan.layer, config.pass_tokens)
            persona_keys += keys
            persona.append(p)
            assistant.append(a)
            seconds["axis"] += time.perf_counter() - clock
        if bar is not None:
            bar.update(1)
    chunk = pl.concat(rows) if rows else pl.DataFrame(schema=COLUMNS)
    if plan.run_qa:
        chunk = _fill(chunk, {key: v[0] for key, v in qa.items()}, "qa_asked", pl.Int32(), 0)
        chunk = _fill(chunk, {key: v[1] for key, v in qa.items()}, "qa_correct", pl.Int32(), 0)
    hidden = simulator.model.config.hidden_size if plan.run_axis else 0
    return Chunk(chunk, persona_keys, _stack(persona, hidden), _stack(assistant, hidden))


def _stack(arrays: list[np.ndarray], hidden: int) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.zeros((0, hidden), dtype=np.float32)


@dataclass(frozen=True)
class Chunk:
    """What scoring one chunk of dialogues gives before the axis is fitted."""

    lines: pl.DataFrame  # its sidecar rows, Q&A filled in, projections not yet
    persona_keys: list[tuple[str, int]]  # (dialogue_id, user_turn) of each row of `persona`
    persona: np.ndarray  # (lines, hidden) persona-side activations (NaN rows: lines without text)
    assistant: np.ndarray  # (assistant lines, hidden)


class Parts:
    """Finished chunks of a `score_dialogues` call, saved so a crash or Ctrl-C loses only the chunk in flight.

        FOLDER/state.json      what the chunks were scored with (judge, simulator, scenario, settings)
        FOLDER/NNNNN.json      chunk NNNNN's dialogue ids and persona keys (written last: it marks the chunk done)
        FOLDER/NNNNN.parquet   its sidecar rows;  NNNNN.persona.npy / NNNNN.assistant.npy: its activations

    A folder scored with anything else is emptied first; a chunk whose dialogues differ (the run
    grew or changed) is scored again.
    """

    def __init__(self, folder: str | Path, state: dict[str, Any]) -> None:
        import json
        import shutil

        self.folder = Path(folder)
        state = json.loads(json.dumps(state, default=str))
        marker = self.folder / "state.json"
        if self.folder.exists():
            try:
                same = json.loads(marker.read_text()) == state
            except (OSError, ValueError):
                same = False
            if not same:
                shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        if not marker.exists():
            from simgen.files import atomic_write_json

            atomic_write_json(marker, state)

    def load(self, k: int, ids: list[str]) -> Chunk | None:
        import json

        index = self.folder / f"{k:05d}.json"
        try:
            meta = json.loads(index.read_text())
            if meta["ids"] != ids:
                return None
            return Chunk(pl.read_parquet(self.folder / f"{k:05d}.parquet"), [tuple(key) for key in meta["persona_keys"]],
                         np.load(self.folder / f"{k:05d}.persona.npy"), np.load(self.folder / f"{k:05d}.assistant.npy"))
        except (OSError, ValueError, KeyError):
            return None

    def save(self, k: int, ids: list[str], chunk: Chunk) -> None:
        import io

        from simgen.files import atomic_write_bytes, atomic_write_json, atomic_write_parquet

        atomic_write_parquet(self.folder / f"{k:05d}.parquet", chunk.lines)
        for name, array in (("persona", chunk.persona), ("assistant", chunk.assistant)):
            buffer = io.BytesIO()
            np.save(buffer, np.asarray(array, dtype=np.float32))
            atomic_write_bytes(self.folder / f"{k:05d}.{name}.npy", buffer.getvalue())
        atomic_write_json(self.folder / f"{k:05d}.json", {"ids": ids, "persona_keys": chunk.persona_keys})


def _with_text(scan: pl.LazyFrame, lines: pl.DataFrame) -> list[dict[str, Any]]:
    """`lines` (dialogue_id, turn, ...) with each line's persona and text, read from the scan for those lines only."""
    if lines.height == 0:
        return []
    dialogues = dialogues_from_turns(scan.filter(pl.col("dialogue_id").is_in(lines["dialogue_id"].unique().implode()))
                                     .collect(engine="streaming"), checked=True)
    persona_of = {d.dialogue_id: persona_text(d.profile.values) for d in dialogues}
    text_of = {(d.dialogue_id, t.turn): t.text for d in dialogues for t in d.turns}
    return [{**r, "persona": persona_of[r["dialogue_id"]], "text": text_of[(r["dialogue_id"], r["turn"])]} for r in lines.to_dicts()]


def _fill(sidecar: pl.DataFrame, values: dict[tuple[str, int], Any], column: str, dtype: pl.DataType, default: Any) -> pl.DataFrame:
    """Set `column` from (dialogue_id, user_turn) -> value; rows without a value get `default`."""
    series = [values.get((d, k), default) for d, k in zip(sidecar["dialogue_id"], sidecar["user_turn"])]
    return sidecar.with_columns(pl.Series(column, series, dtype=dtype))


def _simulator(manifest: dict[str, Any], judge: Judge, model_spec: str = "") -> tuple[Scorer | None, str | None]:
    """The run's user-side model in this process, as a `Scorer` (shared with an LLM judge of the same model), or (None, why not).
    `model_spec` (`--simulator-model`) names another local model to read instead; one that does not load is a ModelError."""
    from simgen.backends import REGISTRY, backend_class, local_model
    from simgen.errors import ModelError
    from simgen.models import resolve_model, spec_of

    if model_spec:
        try:
            spec, fingerprint, dtype = model_spec, resolve_model(model_spec).fingerprint, "auto"
        except ModelError as e:  # the user asked for this model: an error, not a score left out
            raise ModelError(f"--simulator-model: {e}") from None
    else:
        user = (manifest.get("backend") or {}).get("user") or {}
        name = user.get("backend", "unknown")
        if name not in REGISTRY or not backend_class(name).scorer:
            return None, (f"the run's user side used the {name!r} backend, whose weights cannot be read here; "
                          "Q&A by option likelihood and the axis need a model run in this process (or --simulator-model)")
        model = user.get("model") or {}
        spec, fingerprint, dtype = spec_of(model), model.get("fingerprint"), user.get("dtype") or "auto"
    backend = getattr(judge, "backend", None)
    if backend is not None and getattr(backend, "source", None) is not None and backend.source.fingerprint == fingerprint:
        return backend, None
    try:
        return local_model(spec, dtype), None
    except ModelError as e:
        if model_spec:
            raise ModelError(f"--simulator-model: {e}") from None
        return None, f"the run's simulator model cannot be loaded here ({e})"


def run_models(run: Any, judge: Judge, config: ConsistencyConfig) -> tuple[Any, Scorer | None, str | None]:
    """(the run's scenario, its simulator as a `Scorer`, why not) for Q&A and the axis; (None, None, None) when both are off."""
    from simgen.errors import ConfigError, RunError, ScenarioChanged, did_you_mean
    from simgen.scenario import load_recorded

    scenario, simulator, why_sim = None, None, None
    if config.qa or config.axis:  # only these two rebuild the simulator's chats and need its model
        try:
            scenario = load_recorded(run.manifest.get("scenario") or {}, str(run.path),
                                     "Q&A and the persona axis would read the simulator in chats it never saw "
                                     "(--no-qa --no-axis scores the rest without them)")
        except ScenarioChanged:
            raise
        except RunError as e:
            why_sim = str(e)
        if scenario is not None:
            unknown = [name for name in config.qa_skip if name not in scenario.profile.names]
            if unknown and config.qa:
                raise ConfigError(f"--qa-skip {unknown[0]}: scenario {scenario.name!r} has no such profile variable "
                                  f"(its variables: {', '.join(scenario.profile.names)}).{did_you_mean(unknown[0], scenario.profile.names)}")
            simulator, why_sim = _simulator(run.manifest, judge, config.simulator_model)
    return scenario, simulator, why_sim


def check_run(run: Any, judge: Judge | str | None = None, out: str | Path | None = None,
              config: ConsistencyConfig = ConsistencyConfig(), progress: bool = False, ray: Any = None) -> dict[str, Any]:
    """Score a run folder (or `Run`): write RUN/consistency.parquet and the reports; return the report.
    With `out`, the sidecar and reports go to OUT and the run's own sidecar and reports are left as they are
    (a scoring with another reader or subset does not replace the run's; exports read RUN's).

    The run is read lazily, `config.chunk_dialogues` dialogues at a time (see `score_dialogues`).
    ray: a `simgen.generation.cluster.RayConfig`: score the chunks on a Ray cluster (`cluster.py`); same scores.
    """
    from simgen.files import atomic_write_parquet, now
    from simgen.generation.run import Run, load_run

    run = run if isinstance(run, Run) else load_run(run)
    judge = load_judge(judge)
    scenario, simulator, why_sim = run_models(run, judge, config)
    max_turns = run.max_turns
    out = Path(out) if out is not None else run.path / "reports"
    home = run.path if out == run.path / "reports" else out  # where this scoring's sidecar and saved chunks go
    parts = home / PARTS
    if ray is not None:  # the chunks are scored on the cluster into `parts`; below, they are read back
        from simgen.consistency.cluster import score_parts

        plan = plan_chunks(run.scan(), judge, scenario=scenario, simulator=simulator, max_turns=max_turns, config=config)
        score_parts(run, judge, config, plan, ray, progress, parts)
    scored = score_dialogues(run.scan(), judge, scenario=scenario, simulator=simulator, max_turns=max_turns, config=config,
                             progress=progress, parts=parts)
    sidecar, report, axis = scored.lines, dict(scored.report), scored.axis
    if why_sim:
        report["not_computed"] = {k: v if v.startswith("turned off") else why_sim for k, v in report["not_computed"].items()}
    report = {"check": "consistency", "run": str(run.path), "created": now(), **report}
    out.mkdir(parents=True, exist_ok=True)
    side = home / SIDECAR
    atomic_write_parquet(side, sidecar.select(list(COLUMNS)))
    if axis is not None:
        report["axis"]["path"] = str(axis.save(out / "persona_axis.json"))
    report["sidecar"] = str(side)
    write_report(report, out)
    shutil.rmtree(parts, ignore_errors=True)  # the sidecar and reports are written: the chunks are no longer needed
    return report
