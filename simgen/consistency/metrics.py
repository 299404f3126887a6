"""The three persona-consistency scores per line and per dialogue, specificity, and drift by turn.

Input: a turns frame (turns.parquet's columns, with the `profile` struct). Output: the sidecar frame
`consistency.parquet`, one row per user line, keyed by (dialogue_id, turn):

    prompt-to-line  P(the line contradicts the persona), from the judge; the persona is the profile's
                    backstory (or its attributes as "name: value" lines when it has none)
    line-to-line    from the second user line on: P(contradiction) against each earlier user line of
                    the same dialogue; conflicts = pairs at or above the threshold
    Q&A             filled in by qa.py (questions from the profile latent, graded against it)
    specificity     how many profile attributes the line mentions (values matched as whole words)
    axis            filled in by axis.py (projection on the persona direction)

Dialogue scores are *expected* fractions under the judge's probabilities (prompt-to-line: mean of
1 - P(contradiction); line-to-line: mean over lines of 1 - expected conflicts / lines compared), so a
judge whose probabilities all sit on one side of 0.5 still ranks dialogues; the thresholded counts
are kept beside them. A persona that says nothing is never contradicted: read every consistency
score beside specificity. This module calls a judge; it loads no model and writes no file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from simgen.consistency.judges import Judge, Pair
from simgen.data import Dialogue, frame_to_dialogues
from simgen.errors import DataError

# the sidecar's columns, in order: (dialogue, user line) -> scores
COLUMNS: dict[str, pl.DataType] = {
    "dialogue_id": pl.String(),
    "turn": pl.Int32(),  # the row's `turn` in turns.parquet
    "user_turn": pl.Int32(),  # 0-based index among the dialogue's user lines: the drift axis
    "p2l_contradiction": pl.Float64(),  # P(line contradicts persona); null for an empty line
    "p2l_conflict": pl.Boolean(),  # p2l_contradiction >= threshold
    "l2l_compared": pl.Int32(),  # earlier user lines compared
    "l2l_expected_conflicts": pl.Float64(),  # sum of P(contradiction) over them
    "l2l_conflicts": pl.Int32(),  # pairs at or above the threshold
    "l2l_max_contradiction": pl.Float64(),
    "l2l_score": pl.Float64(),  # 1 - expected conflicts / compared; null when nothing was compared
    "qa_asked": pl.Int32(),  # questions asked at the checkpoint after this line (0: none)
    "qa_correct": pl.Int32(),
    "specificity": pl.Int32(),  # profile attributes the line mentions
    "attributes_mentioned": pl.List(pl.String()),
    "persona_projection": pl.Float64(),  # projection on the persona axis (axis.py); null when not computed
    "skipped": pl.String(),  # why a line was not judged (e.g. "empty line"), else null
}


@dataclass(frozen=True)
class ConsistencyConfig:
    """How `simgen consistency` scores a run."""

    threshold: float = field(default=0.5, metadata={"help": "P(contradiction) at or above which a pair counts as a conflict"})
    qa: bool = field(default=True, metadata={"help": "ask profile questions (needs the run's transformers model)"})
    qa_every: int = field(default=1, metadata={"help": "ask after every k-th user line"})
    qa_max_questions: int = field(default=8, metadata={"help": "questions per checkpoint at most"})
    qa_options: int = field(default=4, metadata={"help": "options per question"})
    qa_skip: tuple[str, ...] = field(default=(), metadata={"help": "profile variables not to ask about"})
    axis: bool = field(default=True, metadata={"help": "fit the persona axis and project each user line on it"})
    axis_layer: int | None = field(default=None, metadata={"help": "decoder layer of the axis; None = the middle layer"})
    pass_tokens: int = field(default=2048, metadata={"help": "tokens packed into one forward pass of the simulator model (bounds memory)"})
    seed: int = field(default=0, metadata={"help": "seed of the Q&A option order"})
    max_dialogues: int = field(default=0, metadata={"help": "score the first N dialogues only (0 = all)"})
    max_user_lines: int = field(default=0, metadata={"help": "score each dialogue's first N user lines only (0 = all): "
                                                             "bounds the line-to-line pairs and Q&A checkpoints of long dialogues"})
    l2l_window: int = field(default=0, metadata={"help": "compare each user line with its K latest earlier user lines only "
                                                         "(0 = every earlier one): line-to-line pairs grow with a dialogue's "
                                                         "length instead of its square"})
    chunk_dialogues: int = field(default=100, metadata={"help": "dialogues read and scored at a time: bounds memory, and a crash loses at most one chunk"})
    simulator_model: str = field(default="", metadata={"help": "the model Q&A and the axis read instead of the run's user "
                                                               "model (a folder, a cached id, a `simgen tune` folder, "
                                                               "embedded); empty: the run's own"})

    def __post_init__(self) -> None:
        from simgen.errors import ConfigError

        if not (0.0 < self.threshold < 1.0):
            raise ConfigError(f"threshold must be in (0, 1), got {self.threshold}.")
        for name in ("qa_every", "qa_max_questions", "pass_tokens", "chunk_dialogues"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
        for name in ("max_dialogues", "max_user_lines", "l2l_window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be a non-negative integer (0 = no limit), got {value!r}.")
        if not (isinstance(self.qa_options, int) and self.qa_options >= 2):
            raise ConfigError(f"qa_options must be an integer >= 2, got {self.qa_options!r}.")


def persona_text(profile: Mapping[str, Any]) -> str:
    """The persona a line is judged against: the backstory, else the attributes one per line."""
    backstory = profile.get("backstory")
    if isinstance(backstory, str) and backstory.strip():
        return " ".join(backstory.split())
    return "\n".join(f"{k.replace('_', ' ')}: {', '.join(map(str, v)) if isinstance(v, list) else v}"
                     for k, v in profile.items() if k != "backstory" and v is not None)


def attribute_values(profile: Mapping[str, Any]) -> dict[str, list[str]]:
    """attribute -> the strings that mention it (floats such as patience are traits, not stated facts)."""
    out: dict[str, list[str]] = {}
    for name, value in profile.items():
        if name == "backstory" or value is None or isinstance(value, (bool, float)):
            continue
        values = [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
        values = [v for v in values if v.strip()]
        if values:
            out[name] = values
    return out


def mentioned(text: str, values: Mapping[str, Sequence[str]]) -> list[str]:
    """The attributes whose value appears in `text` as a whole word or phrase (case-insensitive)."""
    low = text.lower()
    return [name for name, vs in values.items()
            if any(re.search(rf"(?<!\w){re.escape(v.lower())}(?!\w)", low) for v in vs)]


TURN_COLUMNS = ("dialogue_id", "turn", "role", "text", "profile", "intent")  # what scoring reads from turns.parquet (intent: when present)


def check_turns(turns: pl.LazyFrame) -> None:
    """Raise DataError unless the turns (read lazily: only what the checks need) can be scored."""
    schema = turns.collect_schema()
    missing = [c for c in ("dialogue_id", "turn", "role", "text") if c not in schema]
    if missing:
        raise DataError(f"the turns have no {missing[0]!r} column; pass a simgen run folder or a frame with turns.parquet's columns.")
    if "profile" not in schema or not turns.select(pl.col("profile").is_not_null().any()).collect(engine="streaming").item():
        raise DataError("the run has no profile latents (no 'profile' column, or all null), so there is nothing to check "
                        "persona consistency against. Generate it with `simgen generate`, which records each dialogue's profile.")
    spoken = (pl.col("role") == "user") & (pl.col("text").str.strip_chars().str.len_chars() > 0)
    if not turns.select(spoken.any()).collect(engine="streaming").item():
        raise DataError("the dialogues are empty: no user line has any text, so there is nothing to judge. "
                        "Check the run's stop reasons (`simgen show RUN`) and generate it again.")


def dialogues_from_turns(turns: pl.DataFrame, *, checked: bool = False) -> list[Dialogue]:
    """Check the turns frame and read it back into `Dialogue` records (`simgen.data.frame_to_dialogues`).

    `checked=True`: `check_turns` already ran on the whole run, so this frame (one chunk of it) may
    hold only empty lines.
    """
    if not checked:
        check_turns(turns.lazy())
    out = frame_to_dialogues(turns)
    for d in out:
        if not d.profile.values:
            raise DataError(f"dialogue {d.dialogue_id}: no profile latent on any of its rows; every dialogue needs one.")
    return out


def score_lines(dialogues: Sequence[Dialogue], judge: Judge, config: ConsistencyConfig = ConsistencyConfig()) -> pl.DataFrame:
    """Prompt-to-line, line-to-line and specificity for every user line: the sidecar frame (Q&A and axis empty)."""
    rows: list[dict[str, Any]] = []
    pairs: list[Pair] = []
    p2l_index: dict[int, int] = {}  # row -> its pair
    l2l_index: dict[int, list[int]] = {}  # row -> its pairs
    for d in dialogues:
        persona = persona_text(d.profile.values)
        values = attribute_values(d.profile.values)
        earlier: list[str] = []
        previous_other: str | None = None
        user_turn = 0
        for t in d.turns:
            text = t.text.strip()
            if t.role != "user":
                previous_other = text or None
                continue
            row = {c: None for c in COLUMNS}
            row.update(dialogue_id=d.dialogue_id, turn=t.turn, user_turn=user_turn, qa_asked=0, qa_correct=0,
                       attributes_mentioned=mentioned(text, values))
            row["specificity"] = len(row["attributes_mentioned"])
            i = len(rows)
            if text:
                p2l_index[i] = len(pairs)
                pairs.append(Pair("prompt_to_line", persona, text, previous_other))
                l2l_index[i] = []
                for prev in earlier[-config.l2l_window:] if config.l2l_window else earlier:
                    l2l_index[i].append(len(pairs))
                    pairs.append(Pair("line_to_line", prev, text))
                earlier.append(text)
            else:
                row["skipped"] = "empty line"
            rows.append(row)
            user_turn += 1
    probs = judge.contradiction(pairs) if pairs else []
    if len(probs) != len(pairs):
        raise RuntimeError(f"judge {judge.name!r} returned {len(probs)} scores for {len(pairs)} pairs")
    for i, row in enumerate(rows):
        if i in p2l_index:
            p = float(probs[p2l_index[i]])
            row["p2l_contradiction"] = p
            row["p2l_conflict"] = p >= config.threshold
            ps = [float(probs[k]) for k in l2l_index[i]]
            row["l2l_compared"] = len(ps)
            row["l2l_expected_conflicts"] = sum(ps)
            row["l2l_conflicts"] = sum(v >= config.threshold for v in ps)
            row["l2l_max_contradiction"] = max(ps) if ps else None
            row["l2l_score"] = 1.0 - sum(ps) / len(ps) if ps else None
        else:
            row["l2l_compared"] = 0
            row["l2l_conflicts"] = 0
    return pl.DataFrame(rows, schema=COLUMNS)


def aggregate(frame: pl.LazyFrame | pl.DataFrame, by: str) -> pl.LazyFrame:
    """The score aggregates of sidecar rows grouped by `by` (dialogue_id or user_turn), lazily.

    The one definition of a group's scores: reports, drift and the Hub export's per-dialogue means.
    """
    return (
        frame.lazy().group_by(by, maintain_order=True).agg(
            pl.len().alias("lines"),
            (1 - pl.col("p2l_contradiction")).mean().alias("prompt_to_line"),
            (~pl.col("p2l_conflict")).mean().alias("prompt_to_line_thresholded"),
            pl.col("l2l_score").mean().alias("line_to_line"),
            (1 - pl.col("l2l_conflicts").sum() / pl.col("l2l_compared").sum()).alias("line_to_line_thresholded"),
            (pl.col("qa_correct").sum() / pl.col("qa_asked").sum()).alias("qa"),
            pl.col("qa_asked").sum().alias("qa_asked"),
            pl.col("specificity").cast(pl.Float64).mean().alias("specificity"),
            (pl.col("specificity") > 0).mean().alias("specific_lines"),
            pl.col("persona_projection").mean().alias("persona_projection"),
        ).with_columns(pl.col(c).fill_nan(None) for c in ("line_to_line_thresholded", "qa"))
    )


def _scores(frame: pl.LazyFrame | pl.DataFrame, by: str) -> pl.DataFrame:
    return aggregate(frame, by).collect()


def dialogue_scores(sidecar: pl.DataFrame) -> pl.DataFrame:
    """One row per dialogue: the three scores, their thresholded versions, specificity, projection."""
    return _scores(sidecar, "dialogue_id")


def drift(sidecar: pl.DataFrame) -> pl.DataFrame:
    """One row per user-turn index: the same aggregates over all dialogues, with standard errors."""
    base = _scores(sidecar, "user_turn").sort("user_turn")
    spread = (
        sidecar.lazy().group_by("user_turn").agg(
            (pl.col("p2l_contradiction").std() / pl.col("p2l_contradiction").count().sqrt()).alias("prompt_to_line_se"),
            (pl.col("l2l_score").std() / pl.col("l2l_score").count().sqrt()).alias("line_to_line_se"),
        ).collect()
    )
    return base.join(spread, on="user_turn", how="left").sort("user_turn")


def overall(dialogues: pl.DataFrame) -> dict[str, Any]:
    """Means over dialogues (each dialogue weighs the same), with standard errors, and counts."""
    out: dict[str, Any] = {"dialogues": dialogues.height, "lines": int(dialogues["lines"].sum())}
    for col in ("prompt_to_line", "prompt_to_line_thresholded", "line_to_line", "line_to_line_thresholded", "qa",
                "specificity", "specific_lines", "persona_projection"):
        values = dialogues[col].drop_nulls()
        n = values.len()
        mean = float(values.mean()) if n else None
        se = float(values.std() / n ** 0.5) if n > 1 else None
        out[col] = {"mean": mean, "se": se, "n": n}
    return out
