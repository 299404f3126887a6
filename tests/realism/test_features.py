"""simgen.realism.features, lexicon and distort: units, style statistics, distortions."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from simgen.realism.distort import shuffle_turns, split_halves, swap_roles, truncate_text
from simgen.realism.features import build_units, dialogue_style, length_bins, text_features, user_turn_style
from simgen.realism.lexicon import LABELS, sentiment_labels


def test_units_keep_sides_apart_and_link_previous_turns(make_corpus) -> None:  # noqa: ANN001
    ref = make_corpus("human", 3, seed=0)
    syn = make_corpus("llm", 2, seed=0)  # same dialogue ids as ref: keys must still differ
    u = build_units(ref, syn)
    assert u.turns.height == ref.height + syn.height
    assert u.dialogues.height == 5
    assert set(u.dialogues["key"]) == {"0:d0000", "0:d0001", "0:d0002", "1:d0000", "1:d0001"}
    first = u.user.filter(pl.col("pos") == 0)
    assert first["prev_text"].null_count() == first.height and set(first["prev_row"]) == {-1}
    later = u.user.filter(pl.col("pos") > 0).row(0, named=True)
    assert u.turns["text"][later["prev_row"]] == later["prev_text"]
    assert u.y_user.sum() == syn.filter(pl.col("role") == "user").height


def test_text_features_count_what_they_say() -> None:
    df = pl.DataFrame({"t": ["lol i dont know?? sooo tired", "Certainly! **Here** is a list:\n- one\n- two."]})
    f = df.select(text_features(pl.col("t"))).rows(named=True)
    casual, formal = f
    assert casual["question_marks"] == 2 and casual["laughter"] == 1 and casual["lowercase_i"] == 1
    assert casual["no_apostrophe"] == 1 and casual["elongation"] == 1 and casual["all_lower"] == 1
    assert formal["markdown"] >= 2 and formal["starts_upper"] == 1 and formal["ends_punct"] == 1
    assert formal["newlines"] == 2 and formal["exclamations"] == 1
    assert casual["words"] == 6


def test_style_matrices_line_up_with_units(make_corpus) -> None:  # noqa: ANN001
    u = build_units(make_corpus("human", 4, seed=1), make_corpus("llm", 3, seed=1))
    X, names = user_turn_style(u)
    assert X.shape == (u.user.height, len(names)) and np.isfinite(X).all()
    D, dnames = dialogue_style(u)
    assert D.shape == (u.dialogues.height, len(dnames)) and np.isfinite(D).all()
    n_turns = D[:, dnames.index("n_turns")]
    assert n_turns.tolist() == u.dialogues["n_turns"].cast(pl.Float64).to_list()
    assert set(D[:, dnames.index("opens_with_user")]) == {1.0}


def test_length_bins() -> None:
    idx, labels = length_bins(np.array([0, 2, 3, 10, 100]), (0, 3, 11))
    assert labels == ["0-2", "3-10", "11+"]
    assert idx.tolist() == [0, 0, 1, 1, 2]


def test_lexicon_polarity_with_negation() -> None:
    labs = sentiment_labels(["I love this movie!", "this is boring and awful", "it is a film", "not good at all", "haha :)"])
    assert [LABELS[i] for i in labs] == ["positive", "negative", "neutral", "negative", "positive"]


def test_distortions_keep_shape_and_break_what_they_claim(make_corpus) -> None:  # noqa: ANN001
    df = make_corpus("human", 40, seed=2)
    a, b = split_halves(df, seed=0)
    assert set(a["dialogue_id"]).isdisjoint(set(b["dialogue_id"])) and a.height + b.height == df.height
    s = shuffle_turns(df, seed=0)
    for role in ("user", "assistant"):
        assert sorted(s.filter(pl.col("role") == role)["text"]) == sorted(df.filter(pl.col("role") == role)["text"])
    assert (s["text"] != df["text"]).mean() > 0.5
    assert s.select("dialogue_id", "turn", "role").equals(df.select("dialogue_id", "turn", "role"))
    w = swap_roles(df)
    assert (w["role"] != df["role"]).all() and w["text"].equals(df["text"])
    t = truncate_text(df)
    words_before = df["text"].str.count_matches(r"\S+")
    words_after = t["text"].str.count_matches(r"\S+")
    assert (words_after <= words_before).all() and (words_after >= 1).all()
    assert (words_after < words_before).mean() > 0.5


@pytest.mark.parametrize("fraction", [0.25, 0.5])
def test_truncate_fraction(fraction: float) -> None:
    df = pl.DataFrame({"dialogue_id": ["a"], "turn": [0], "role": ["user"], "text": ["one two three four five six seven eight"]})
    assert truncate_text(df, fraction)["text"][0].split() == "one two three four five six seven eight".split()[: int(8 * fraction)]
