"""Units and hand-made features for the realism check.

Two corpora (reference = side 0, synthetic = side 1) become two tables of units:
- user turns: one row per user turn, with its dialogue's key, its position, the previous turn;
- dialogues: one row per dialogue, with its user and assistant text joined.
A dialogue's key is `"<side>:<dialogue_id>"`, so equal ids on both sides stay apart; every
resample, fold and permutation works on keys, never splitting a dialogue.

Style features are cheap, vectorised string statistics (lengths, punctuation, casing,
informal-spelling markers, markdown, questions) plus context (position, lexical overlap with the
previous turn) and, per dialogue, structure (turn count, who opens, turn-length spread). "Typos" are
approximated by informal-spelling markers (lowercase "i", contractions without apostrophes,
elongated letters): there is no spelling dictionary offline, and the report says so.

It leaves out model-based features: embeddings live in `embed.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

# feature name -> (regex counted in the text, human description)
_COUNTS: dict[str, tuple[str, str]] = {
    "question_marks": (r"\?", "question marks"),
    "exclamations": (r"!", "exclamation marks"),
    "commas": (r",", "commas"),
    "periods": (r"\.", "full stops"),
    "ellipses": (r"\.\.\.|…", "ellipses"),
    "digits": (r"[0-9]", "digits"),
    "caps_words": (r"\b[A-Z]{2,}\b", "ALL-CAPS words"),
    "lowercase_i": (r"(?:^|\s)i(?:\s|$|')", "lowercase 'i' as a word"),
    "no_apostrophe": (r"(?i)\b(?:dont|cant|wont|im|ive|didnt|doesnt|isnt|thats|youre|theyre|whats|wasnt)\b",
                      "contractions without apostrophe"),
    # no backreferences in polars' regex engine: spell out aaa|bbb|...
    "elongation": ("(?i)(?:" + "|".join(c * 3 for c in "abcdefghijklmnopqrstuvwxyz") + ")", "elongated letters (sooo)"),
    "laughter": (r"(?i)\b(?:ha(?:ha)+|lol|lmao|hehe)\b", "laughter (haha, lol)"),
    "markdown": (r"\*\*|^#+ |(?m)^\s*(?:[-*•]|\d+\.) ", "markdown (bold, headers, lists)"),
    "colons": (r":", "colons"),
    "parentheses": (r"[()]", "parentheses"),
    "quotes": (r"[\"“”]", "quotation marks"),
    "non_ascii": (r"[^\x00-\x7F]", "non-ASCII characters (emoji, accents)"),
    "newlines": (r"\n", "line breaks"),
    "sentences": (r"[.!?]+(?:\s|$)", "sentence ends"),
}

DESCRIPTIONS: dict[str, str] = {
    "chars": "characters per turn",
    "words": "words per turn",
    "word_len": "mean word length",
    "upper_frac": "share of letters in upper case",
    "starts_upper": "turn starts with a capital",
    "ends_punct": "turn ends with . ! or ?",
    "all_lower": "turn is all lower case",
    "is_question": "turn contains a question",
    "position": "turn index in the dialogue",
    "is_opening": "turn opens the dialogue",
    "prev_words": "words in the previous turn",
    "overlap_prev": "word overlap (Jaccard) with the previous turn",
    "n_turns": "turns per dialogue",
    "n_user_turns": "user turns per dialogue",
    "user_share": "share of turns by the user",
    "opens_with_user": "dialogue opens with the user",
    "user_words_std": "spread of user-turn lengths",
    "assistant_words": "words per assistant turn",
    "assistant_questions": "question marks per assistant turn",
    "mean_overlap": "mean word overlap between adjacent turns",
    **{k: v[1] + " per turn" for k, v in _COUNTS.items()},
}


@dataclass(frozen=True)
class Units:
    """The two corpora as aligned tables (side 0 = reference, 1 = synthetic)."""

    turns: pl.DataFrame  # every turn: key, side, dialogue_id, turn, role, text, pos (0..), row (global index)
    user: pl.DataFrame  # user turns: key, side, dialogue_id, turn, text, prev_text, row, prev_row (-1 if none)
    dialogues: pl.DataFrame  # key, side, dialogue_id, n_turns, user_text, assistant_text, opens_with_user

    @property
    def y_user(self) -> np.ndarray:
        return self.user["side"].to_numpy()

    @property
    def y_dialogue(self) -> np.ndarray:
        return self.dialogues["side"].to_numpy()


def build_units(reference: pl.DataFrame, synthetic: pl.DataFrame) -> Units:
    """Stack two canonical turns frames into `Units` (extra columns, e.g. intent, are kept on turns)."""
    frames = []
    for side, df in ((0, reference), (1, synthetic)):
        keep = [c for c in ("dialogue_id", "turn", "role", "text", "intent") if c in df.columns]
        f = df.select(keep)
        if "intent" not in f.columns:
            f = f.with_columns(pl.lit(None, dtype=pl.String).alias("intent"))
        frames.append(
            f.with_columns(
                pl.lit(side, dtype=pl.Int8).alias("side"),
                (pl.lit(f"{side}:") + pl.col("dialogue_id")).alias("key"),
                pl.col("intent").cast(pl.String),
            )
        )
    turns = (
        pl.concat(frames, how="diagonal_relaxed")
        .sort("side", "dialogue_id", "turn")
        .with_columns(pl.int_range(pl.len()).over("key").alias("pos"), pl.int_range(pl.len()).alias("row"))
        .with_columns(
            pl.col("text").shift(1).over("key").alias("prev_text"),
            pl.col("row").shift(1).over("key").fill_null(-1).alias("prev_row"),
        )
    )
    user = turns.filter(pl.col("role") == "user").select(
        "key", "side", "dialogue_id", "turn", "pos", "text", "prev_text", "row", "prev_row", "intent"
    )
    dialogues = (
        turns.group_by("key", maintain_order=True)
        .agg(
            pl.col("side").first(),
            pl.col("dialogue_id").first(),
            pl.len().alias("n_turns"),
            pl.col("text").filter(pl.col("role") == "user").str.join(" \n ").alias("user_text"),
            pl.col("text").filter(pl.col("role") == "assistant").str.join(" \n ").alias("assistant_text"),
            (pl.col("role").first() == "user").alias("opens_with_user"),
        )
        .with_columns(pl.col("user_text").fill_null(""), pl.col("assistant_text").fill_null(""))
    )
    return Units(turns=turns, user=user, dialogues=dialogues)


def text_features(text: pl.Expr) -> list[pl.Expr]:
    """Per-text style statistics as polars expressions (one column each)."""
    words = text.str.count_matches(r"\S+")
    letters = text.str.count_matches(r"[A-Za-z]")
    exprs = [
        text.str.len_chars().cast(pl.Float64).alias("chars"),
        words.cast(pl.Float64).alias("words"),
        (text.str.count_matches(r"[A-Za-z]") / words.clip(1)).alias("word_len"),
        (text.str.count_matches(r"[A-Z]") / letters.clip(1)).alias("upper_frac"),
        text.str.contains(r"^\s*[A-Z]").cast(pl.Float64).alias("starts_upper"),
        text.str.contains(r"[.!?]\s*$").cast(pl.Float64).alias("ends_punct"),
        (~text.str.contains(r"[A-Z]")).cast(pl.Float64).alias("all_lower"),
        text.str.contains(r"\?").cast(pl.Float64).alias("is_question"),
    ]
    exprs += [text.str.count_matches(rx).cast(pl.Float64).alias(name) for name, (rx, _) in _COUNTS.items()]
    return exprs


def _jaccard(a: list[str | None], b: list[str | None]) -> np.ndarray:
    out = np.zeros(len(a))
    for i, (x, y) in enumerate(zip(a, b)):
        if x is None or y is None:
            continue
        sx, sy = set(x.lower().split()), set(y.lower().split())
        if sx or sy:
            out[i] = len(sx & sy) / len(sx | sy)
    return out


def user_turn_style(units: Units) -> tuple[np.ndarray, list[str]]:
    """(n_user_turns, F) style + context features and their names."""
    u = units.user
    f = u.select(
        *text_features(pl.col("text")),
        pl.col("pos").cast(pl.Float64).alias("position"),
        (pl.col("pos") == 0).cast(pl.Float64).alias("is_opening"),
        pl.col("prev_text").fill_null("").str.count_matches(r"\S+").cast(pl.Float64).alias("prev_words"),
    ).with_columns(pl.Series("overlap_prev", _jaccard(u["text"].to_list(), u["prev_text"].to_list())))
    return f.to_numpy().astype(np.float64), f.columns


def dialogue_style(units: Units) -> tuple[np.ndarray, list[str]]:
    """(n_dialogues, F) per-dialogue structure + mean user-turn style features and their names."""
    t = units.turns
    overlap = _jaccard(t["text"].to_list(), t["prev_text"].to_list())
    per_turn = t.select("key", "role", *text_features(pl.col("text"))).with_columns(
        pl.Series("overlap", overlap), (t["prev_text"].is_not_null()).alias("has_prev")
    )
    style_cols = [c for c in per_turn.columns if c not in ("key", "role", "overlap", "has_prev")]
    agg = per_turn.group_by("key", maintain_order=True).agg(
        pl.len().cast(pl.Float64).alias("n_turns"),
        (pl.col("role") == "user").sum().cast(pl.Float64).alias("n_user_turns"),
        (pl.col("role") == "user").mean().alias("user_share"),
        (pl.col("role").first() == "user").cast(pl.Float64).alias("opens_with_user"),
        pl.col("words").filter(pl.col("role") == "user").std().fill_null(0).alias("user_words_std"),
        pl.col("words").filter(pl.col("role") == "assistant").mean().fill_null(0).alias("assistant_words"),
        pl.col("question_marks").filter(pl.col("role") == "assistant").mean().fill_null(0).alias("assistant_questions"),
        pl.col("overlap").filter(pl.col("has_prev")).mean().fill_null(0).alias("mean_overlap"),
        *[pl.col(c).filter(pl.col("role") == "user").mean().fill_null(0).alias(c) for c in style_cols],
    )
    agg = units.dialogues.select("key").join(agg, on="key", how="left", maintain_order="left").drop("key")
    return agg.to_numpy().astype(np.float64), agg.columns


def length_bins(words: np.ndarray, edges: tuple[int, ...]) -> tuple[np.ndarray, list[str]]:
    """Bin word counts: edges (1, 3, 6) -> labels '1-2', '3-5', '6+' ; returns (bin index, labels)."""
    labels = [f"{a}-{b - 1}" if b - 1 > a else f"{a}" for a, b in zip(edges[:-1], edges[1:])] + [f"{edges[-1]}+"]
    idx = np.clip(np.searchsorted(np.asarray(edges), words, side="right") - 1, 0, len(labels) - 1)
    return idx, labels
