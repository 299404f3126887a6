"""`simgen consistency`: score a run's persona consistency, write the sidecar and the report.

    RUN/consistency.parquet        one row per user line (metrics.COLUMNS), keyed by dialogue_id and turn
    RUN/reports/consistency.json   scores overall, per dialogue, drift by turn; judge and model used
    RUN/reports/consistency.html   the same for people, drift curves first
    RUN/reports/persona_axis.json  the fitted persona direction (for --persona-cap)

Prompt-to-line and line-to-line need only the judge. Q&A and the persona axis need the simulator's
own model through the transformers backend (the run's manifest names it) and the run's scenario;
when either is missing they are reported as not computed, with the reason, and the rest goes on.
turns.parquet is never rewritten. `score_dialogues` does the same on a turns frame, writing nothing.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

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
from simgen.generation.run import dialogue_spans, read_dialogues

SIDECAR = "consistency.parquet"


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
                    config: ConsistencyConfig = ConsistencyConfig(), progress: bool = False) -> Scored:
    """Score a turns frame (turns.parquet's columns, hand-built or from a run); writes nothing.

    `turns` may be lazy (`Run.scan()`): it is read `config.chunk_dialogues` dialogues at a time, so
    only one chunk's text and activations are in memory; the sidecar (numbers per line) is what
    grows with the run. Results do not depend on the chunk size. Q&A and the axis run when
    `scenario` and `simulator` (a TransformersBackend of the model that spoke the user lines) are
    given; the axis is fitted from running means over every chunk, then each line is projected.
    """
    judge = load_judge(judge)
    scan = turns.lazy()
    check_turns(scan)
    schema = scan.collect_schema()
    columns = [c for c in TURN_COLUMNS if c in schema]
    spans = dialogue_spans(scan)
    if config.max_dialogues:
        spans = spans.head(config.max_dialogues)
    ids = spans["dialogue_id"]
    if max_turns is None:
        max_turns = (scan.filter((pl.col("role") == "user") & pl.col("dialogue_id").is_in(ids.implode()))
                     .group_by("dialogue_id").len().select(pl.col("len").max()).collect(engine="streaming").item() or 1)
    not_computed = {k: f"turned off ({k}=False)" for k, on in (("qa", config.qa), ("axis", config.axis)) if not on}
    run_qa = run_axis = False
    if scenario is None or simulator is None:
        reason = "needs the run's scenario and its simulator model through the transformers backend"
        not_computed |= {k: reason for k in ("qa", "axis") if k not in not_computed}
    else:
        run_qa, run_axis = config.qa, config.axis
    layer = None
    if run_axis:
        from simgen.consistency.axis import AxisSums, default_layer, line_activations

        layer = config.axis_layer if config.axis_layer is not None else default_layer(simulator)
        sums = AxisSums()
    if run_qa:
        from simgen.consistency.qa import qa_scores

    parts: list[pl.DataFrame] = []
    qa: dict[tuple[str, int], tuple[int, int]] = {}
    with tempfile.TemporaryDirectory(prefix="simgen-axis-") as spill, \
            tqdm(total=len(ids), unit="dialogue", desc="consistency", disable=not progress) as bar:
        for start in range(0, len(ids), config.chunk_dialogues):
            frame = read_dialogues(scan.select(columns), spans.slice(start, config.chunk_dialogues))
            dialogues = dialogues_from_turns(frame, checked=True)
            parts.append(score_lines(dialogues, judge, config))
            if run_qa:
                qa.update(qa_scores(simulator, scenario, dialogues, max_turns, config.qa_every, config.qa_max_questions,
                                    config.qa_options, config.seed, config.batch_size, config.qa_skip))
            if run_axis:
                keys, persona, assistant = line_activations(simulator, scenario, dialogues, max_turns, layer, config.batch_size)
                sums.add(keys, persona, assistant, Path(spill) / f"{start}.npy")
            bar.update(len(dialogues))
        sidecar = pl.concat(parts) if parts else pl.DataFrame(schema=COLUMNS)
        axis = None
        if run_qa:
            sidecar = _fill(sidecar, {k: v[0] for k, v in qa.items()}, "qa_asked", pl.Int32(), 0)
            sidecar = _fill(sidecar, {k: v[1] for k, v in qa.items()}, "qa_correct", pl.Int32(), 0)
        if run_axis:
            axis = sums.fit(layer, simulator.source.fingerprint)
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
        "not_computed": not_computed,
        "notes": list(NOTES),
    }
    return Scored(sidecar, report, axis)


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


def _simulator(manifest: dict[str, Any], judge: Judge) -> tuple[Scorer | None, str | None]:
    """The run's user-side model in this process, as a `Scorer` (shared with an LLM judge of the same model), or (None, why not)."""
    from simgen.backends import REGISTRY, backend_class, local_model
    from simgen.errors import ModelError
    from simgen.models import spec_of

    user = (manifest.get("backend") or {}).get("user") or {}
    name = user.get("backend", "unknown")
    if name not in REGISTRY or not backend_class(name).scorer:
        return None, (f"the run's user side used the {name!r} backend, whose weights cannot be read here; "
                      "Q&A by option likelihood and the axis need a model run in this process")
    model = user.get("model") or {}
    backend = getattr(judge, "backend", None)
    if backend is not None and getattr(backend, "source", None) is not None and backend.source.fingerprint == model.get("fingerprint"):
        return backend, None
    try:
        return local_model(spec_of(model), user.get("dtype") or "auto"), None
    except ModelError as e:
        return None, f"the run's simulator model cannot be loaded here ({e})"


def check_run(run: Any, judge: Judge | str | None = None, out: str | Path | None = None,
              config: ConsistencyConfig = ConsistencyConfig(), progress: bool = False) -> dict[str, Any]:
    """Score a run folder (or `Run`): write RUN/consistency.parquet and the reports; return the report.

    The run is read lazily, `config.chunk_dialogues` dialogues at a time (see `score_dialogues`).
    """
    from simgen.errors import RunError, ScenarioChanged
    from simgen.files import atomic_write_parquet, now
    from simgen.generation.run import Run, load_run
    from simgen.scenario import load_recorded

    run = run if isinstance(run, Run) else load_run(run)
    judge = load_judge(judge)
    manifest = run.manifest
    scenario, simulator, why_sim = None, None, None
    if config.qa or config.axis:  # only these two rebuild the simulator's chats and need its model
        try:
            scenario = load_recorded(manifest.get("scenario") or {}, str(run.path),
                                     "Q&A and the persona axis would read the simulator in chats it never saw "
                                     "(--no-qa --no-axis scores the rest without them)")
        except ScenarioChanged:
            raise
        except RunError as e:
            why_sim = str(e)
        if scenario is not None:
            simulator, why_sim = _simulator(manifest, judge)
    max_turns = (manifest.get("config") or {}).get("max_turns")
    scored = score_dialogues(run.scan(), judge, scenario=scenario, simulator=simulator, max_turns=max_turns, config=config,
                             progress=progress)
    sidecar, report, axis = scored.lines, dict(scored.report), scored.axis
    if why_sim:
        report["not_computed"] = {k: v if v.startswith("turned off") else why_sim for k, v in report["not_computed"].items()}
    report = {"check": "consistency", "run": str(run.path), "created": now(), **report}
    atomic_write_parquet(run.path / SIDECAR, sidecar.select(list(COLUMNS)))
    out = Path(out) if out is not None else run.path / "reports"
    out.mkdir(parents=True, exist_ok=True)
    if axis is not None:
        report["axis"]["path"] = str(axis.save(out / "persona_axis.json"))
    report["sidecar"] = str(run.path / SIDECAR)
    write_report(report, out)
    return report
