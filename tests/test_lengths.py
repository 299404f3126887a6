"""The length latent (simgen.lengths): fitting, loading, sampling, cutting, and its path through a run."""

from __future__ import annotations

from collections import Counter

import numpy as np
import polars as pl
import pytest
from scipy import stats

import simgen
from simgen import rng
from simgen.config import SamplingConfig
from simgen.corpora import load_corpus, split_of
from simgen.data import Generation
from simgen.errors import ConfigError
from simgen.generation.plan import plan
from simgen.generation.simulator import finished_line
from simgen.lengths import cut_to_target, fit_lengths, load_lengths, sentence_ends, target_reached, words
from simgen.scenario import load_scenario


def test_fit_keeps_rows_with_enough_lines_and_an_overall_row():
    lines = [("A", "one two three")] * 40 + [("B", "one")] * 3 + [(None, "x y")] * 5 + [("A", "   ")]
    rows = fit_lengths(lines, min_count=30)
    assert set(rows) == {"*", "A"}  # B is too rare, the blank line is skipped
    assert rows["A"] == {3: 40} and rows["*"] == {1: 3, 2: 5, 3: 40}


@pytest.mark.parametrize("raw, message", [
    ({"lengths": {"IQU": {3: 1}}}, "'*' row"),
    ({"lengths": {"*": {3: 1}, "NOPE": {2: 1}}}, "'NOPE' is not an intent"),
    ({"lengths": {"*": {0: 1}}}, "not a positive word count"),
    ({"lengths": {"*": {3: -1}}}, "not a positive word count"),
    ({"unit": "tokens", "lengths": {"*": {3: 1}}}, "only 'words'"),
    ({"lengths": {"*": {3: 1}}, "extra": 1}, "extra"),
])
def test_bad_length_models_name_the_field(raw, message):
    with pytest.raises(ConfigError, match=message):
        load_lengths(raw, "scenario.yaml", ("IQU", "BYE"))


@pytest.mark.parametrize("name", ["movie-recommendation", "chitchat"])
def test_sampled_targets_follow_the_fitted_frequencies(name):
    """Chi-square goodness of fit of 4,000 drawn targets against the committed histogram, per row."""
    model = load_scenario(name).lengths
    generator = rng.generator(0, 0, rng.LENGTH)
    for label in list(model.rows)[:3]:
        values, probs = model.row(label)
        draws = Counter(model.sample(label, generator) for _ in range(4000))
        # pool bins into groups of expected count >= 5 so the test is valid
        expected, observed, acc_e, acc_o = [], [], 0.0, 0
        for v, p in zip(values, probs):
            acc_e += 4000 * p
            acc_o += draws.get(v, 0)
            if acc_e >= 5:
                expected.append(acc_e)
                observed.append(acc_o)
                acc_e, acc_o = 0.0, 0
        expected[-1] += acc_e
        observed[-1] += acc_o
        assert stats.chisquare(observed, expected).pvalue > 1e-3, (name, label)


def test_committed_lengths_match_the_real_train_split():
    """The chitchat length model is the train split's histogram (chitchat-dataset is on PyPI)."""
    model = load_scenario("chitchat").lengths
    corpus = load_corpus("chitchat", split="train")
    lens = [words(t) for t in corpus.turns.filter(pl.col("role") == "user")["text"].to_list() if words(t)]
    values, probs = model.row("*")
    assert sum(lens) / len(lens) == pytest.approx(float(np.dot(values, probs)), rel=1e-6)
    # and its dialogue lengths and last words: user lines per dialogue, and who spoke last, over the same dialogues
    spoken = corpus.turns.filter(pl.col("text").str.strip_chars() != "").sort("dialogue_id", "turn")
    shape = spoken.group_by("dialogue_id").agg((pl.col("role") == "user").sum().alias("n"), pl.col("role").last().alias("last"))
    shape = shape.filter(pl.col("n") > 0)
    values, probs = model.dialogues
    assert shape["n"].mean() == pytest.approx(float(np.dot(values, probs)), rel=1e-6) and max(values) == shape["n"].max()
    assert model.reply == pytest.approx((shape["last"] == "assistant").mean(), rel=1e-6)
    # and its assistant lines: chitchat's other side is a person too
    answers = [words(t) for t in corpus.turns.filter(pl.col("role") == "assistant")["text"].to_list() if words(t)]
    values, probs = model.assistant
    assert sum(answers) / len(answers) == pytest.approx(float(np.dot(values, probs)), rel=1e-6) and max(values) == max(answers)


def test_plan_draws_one_target_per_user_turn_from_the_dialogue_seed():
    sc = load_scenario("movie-recommendation")
    a, b = plan(sc, 7, 3, 12), plan(sc, 7, 3, 12)
    assert a == b and len(a.target_words) == len(a.intents) and all(t >= 1 for t in a.target_words)
    assert plan(sc, 7, 4, 12).target_words != a.target_words or plan(sc, 8, 3, 12).target_words != a.target_words


@pytest.mark.parametrize("text, target, finished, cut", [
    ("Hi! I want a funny movie. Something for tonight with my kids, maybe", 5, False, "Hi! I want a funny movie."),
    ("Hi! I want a funny movie. Something for tonight with my kids, maybe", 1, False, "Hi!"),
    ("Hi! I want a funny movie. Something for tonight", 12, False, "Hi! I want a funny movie."),  # capped: last end
    ("Hi! I want a funny movie for tonight", 8, True, "Hi! I want a funny movie for tonight"),  # its own end counts
    ("no sentence end at all", 3, False, None),
    ("Ask Mr. Smith. Then go", 2, False, "Ask Mr. Smith."),  # "Mr." ends nothing
])
def test_cut_to_target(text, target, finished, cut):
    assert cut_to_target(text, target, finished) == cut


def test_target_reached_only_once_the_cut_cannot_move():
    assert not target_reached("I like it.", 2)  # the "." may be "2.5": not yet confirmed
    assert target_reached("I like it. And", 2)
    assert not target_reached("Hi. I like", 3)  # the only end is before the target
    assert sentence_ends("Wait... what?! ok") == [7, 14]
    # the simulator counts words as the stored line will have them: without a speaker label
    from simgen.generation.simulator import _cut_known

    assert target_reached("User: Hi. And", 2) and not _cut_known("User: Hi. And", 2)


def test_finished_line_cuts_at_the_target_whatever_the_backend_did():
    on = SamplingConfig(trim=True)
    whole = Generation("Hi there. I want a comedy. Maybe two", n_tokens=12, finish_reason="length")
    early = Generation("Hi there. I want a comedy. ", n_tokens=8, finish_reason="until")
    assert finished_line(whole, on, 5) == finished_line(early, on, 5) == ("Hi there. I want a comedy.", "target")
    assert finished_line(Generation("no end here", finish_reason="length"), on, 3) == ("no end here", "length")


def test_tiny_run_records_targets_and_no_line_ends_mid_sentence(tiny_model_dir, tmp_path):
    run = simgen.generate(scenario="movie-recommendation", n=6, seed=2, model=str(tiny_model_dir), out=tmp_path / "r",
                          max_turns=4, batch_size=3, dtype="float32", progress=False)
    user = run.turns.filter(pl.col("role") == "user")
    assert user["target_words"].null_count() == 0
    assert run.turns.filter(pl.col("role") == "assistant")["target_words"].null_count() == run.turns.filter(pl.col("role") == "assistant").height
    reasons = set(user["finish_reason"].to_list())
    assert "target" in reasons
    kept = run.turns.filter(pl.col("finish_reason") == "length")
    # a capped line with no sentence end ends its dialogue, and nothing goes on from it
    for row in kept.iter_rows(named=True):
        assert row["stop_reason"] == "degenerate_output: unfinished_line"
    for row in user.filter(pl.col("finish_reason") == "target").iter_rows(named=True):
        assert row["text"][-1] in ".!?\"')]" or row["text"].endswith("\u2026")


def test_splits_are_fixed_by_id_and_disjoint():
    ids = [f"c{i}" for i in range(3000)]
    shares = Counter(split_of(i) for i in ids)
    assert abs(shares["train"] / 3000 - 0.8) < 0.03 and abs(shares["test"] / 3000 - 0.1) < 0.02
    assert [split_of(i) for i in ids[:50]] == [split_of(i) for i in ids[:50]]
    parts = [set(load_corpus("chitchat", split=s).turns["dialogue_id"].unique()) for s in ("train", "validation", "test")]
    assert not (parts[0] & parts[2]) and not (parts[0] & parts[1]) and not (parts[1] & parts[2])


def test_no_lengths_flag_turns_the_latent_off(tiny_model_dir, tmp_path):
    from click.testing import CliRunner

    from simgen.cli import cli

    out = tmp_path / "off"
    result = CliRunner().invoke(cli, ["generate", "-n", "2", "--max-turns", "2", "--model", str(tiny_model_dir), "--dtype", "float32",
                                      "--no-lengths", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    turns = pl.read_parquet(out / "turns.parquet")
    assert turns["target_words"].null_count() == turns.height and "target" not in turns["finish_reason"].to_list()


def test_a_run_recorded_before_the_latent_resumes_without_it():
    from simgen.config import GenerateConfig

    old = GenerateConfig.from_dict({"n": 2, "user": {"temperature": 0.8}})
    assert old.lengths is False and old.user.trim is False and GenerateConfig().lengths and GenerateConfig().user.trim


def test_stopping_early_stores_the_same_lines_as_cutting_afterwards(tiny_model_dir):
    """The `until` test only saves time: a session that stops a row once its cut is known stores the
    same line as one that writes to the cap and is cut afterwards, and it decodes fewer tokens."""
    import functools

    from simgen.backends import local_model

    backend = local_model(str(tiny_model_dir), dtype="float32")
    chats = [[{"role": "system", "content": "You are Sam."}, {"role": "user", "content": f"Say something about {x}."}]
             for x in ("films", "dogs", "rain", "work", "tea", "trains")]
    sampling = SamplingConfig(temperature=0.9, max_new_tokens=32, trim=True)
    targets = [2, 4, 6, 3, 8, 1]
    until = [functools.partial(target_reached, target=t) for t in targets]
    with backend.session() as a, backend.session() as b:
        early = a.generate(chats, sampling, list(range(6)), list(range(6)), until)
        whole = b.generate(chats, sampling, list(range(6)), list(range(6)))
    assert [finished_line(g, sampling, t) for g, t in zip(early, targets)] == [finished_line(g, sampling, t) for g, t in zip(whole, targets)]
    assert any(g.finish_reason == "until" for g in early)
    assert sum(g.n_tokens for g in early) < sum(g.n_tokens for g in whole)


def test_dialogue_lengths_are_drawn_per_dialogue_and_every_path_ends_with_its_closing():
    sc = load_scenario("movie-recommendation")
    values, probs = sc.lengths.dialogues
    jobs = [plan(sc, 0, i, 50) for i in range(3000)]
    drawn = Counter(len(j.intents) for j in jobs)
    expected = np.array(probs) * len(jobs)
    observed = [drawn.get(v, 0) for v in values]
    keep = expected >= 5  # chi-square over the bins with enough mass, the rest pooled into one
    obs, exp = list(np.array(observed)[keep]), list(expected[keep])
    if (~keep).any():
        obs, exp = obs + [np.array(observed)[~keep].sum()], exp + [expected[~keep].sum()]
    assert stats.chisquare(obs, exp).pvalue > 1e-3
    assert all(j.intents[-1] == "BYE" and "BYE" not in j.intents[:-1] for j in jobs)
    assert max(len(plan(sc, 0, i, 6).intents) for i in range(300)) == 6  # --max-turns still caps
    assert [len(plan(sc, 0, i, 50, lengths=False).intents) for i in range(50)] != [len(j.intents) for j in jobs[:50]]


def test_who_has_the_last_word_is_drawn_per_dialogue_at_the_fitted_rate():
    """IARD's train split: 138 of 265 dialogues end on the recommender's line. Each dialogue draws
    whether the assistant answers the closing line from its own stream, at that rate (a binomial
    test), and the draw does not move any other latent."""
    sc = load_scenario("movie-recommendation")
    assert sc.lengths.reply == pytest.approx(138 / 265)
    jobs = [plan(sc, 0, i, 14) for i in range(2000)]
    replies = sum(j.reply for j in jobs)
    assert stats.binomtest(replies, len(jobs), 138 / 265).pvalue > 1e-3
    assert not any(plan(sc, 0, i, 14, lengths=False).reply for i in range(200))


def test_who_has_the_first_word_is_drawn_per_dialogue_at_the_fitted_rate():
    """IARD's train split: 175 of 265 dialogues open on the recommender's line. Each dialogue draws
    whether the assistant opens it from its own stream, at that rate (a binomial test); the draw
    moves no other latent (the same plans with the row removed), and chitchat's strangers never
    let the second speaker open."""
    from dataclasses import replace

    sc = load_scenario("movie-recommendation")
    assert sc.lengths.opens == pytest.approx(175 / 265)
    jobs = [plan(sc, 0, i, 14) for i in range(2000)]
    assert stats.binomtest(sum(j.opens for j in jobs), len(jobs), 175 / 265).pvalue > 1e-3
    without = replace(sc, lengths=replace(sc.lengths, opens=None))
    assert [replace(j, opens=False) for j in jobs[:200]] == [plan(without, 0, i, 14) for i in range(200)]
    assert not any(plan(sc, 0, i, 14, lengths=False).opens for i in range(200))
    chitchat = load_scenario("chitchat")
    assert chitchat.lengths.opens == 0 and not any(plan(chitchat, 0, i, 30).opens for i in range(200))


@pytest.mark.parametrize("raw, message", [
    ({"lengths": {"*": {3: 1}}, "dialogues": {0: 4}}, r"dialogues: 0: 4 is not a positive number of user lines"),
    ({"lengths": {"*": {3: 1}}, "dialogues": []}, r"dialogues: expected a non-empty mapping"),
    ({"lengths": {"*": {3: 1}}, "last_word": {"user": 3}}, r"last_word: missing required field 'assistant'"),
    ({"lengths": {"*": {3: 1}}, "last_word": {"user": 0, "assistant": 0}}, r"last_word: expected dialogue counts"),
    ({"lengths": {"*": {3: 1}}, "last_word": {"user": 2, "assistant": -1}}, r"last_word: expected dialogue counts"),
    ({"lengths": {"*": {3: 1}}, "last_word": {"user": 2, "bot": 1}}, r"last_word: unknown field 'bot'"),
    ({"lengths": {"*": {3: 1}}, "first_word": {"user": 0, "assistant": 0}}, r"first_word: expected dialogue counts"),
    ({"lengths": {"*": {3: 1}}, "first_word": {"assistant": 2}}, r"first_word: missing required field 'user'"),
    ({"lengths": {"*": {3: 1}}, "assistant": {0: 4}}, r"assistant: 0: 4 is not a positive word count"),
])
def test_bad_dialogue_lengths_name_the_field(raw, message):
    with pytest.raises(ConfigError, match=message):
        load_lengths(raw, "scenario.yaml", ("IQU", "BYE"))


def test_assistant_targets_are_drawn_per_line_from_their_own_stream_at_the_fitted_frequencies():
    """With an `assistant` row each assistant line draws a target from its own stream: the chi-square
    fit of 4,000 draws; the user-side latents of every dialogue stay what they were without the row."""
    from dataclasses import replace

    sc = load_scenario("chitchat")
    values, probs = sc.lengths.assistant
    jobs = [plan(sc, 0, i, 30, assistant_lengths=True) for i in range(400)]
    draws = Counter(t for j in jobs for t in j.assistant_words)
    assert all(len(j.assistant_words) == len(j.intents) for j in jobs)
    n = sum(draws.values())
    expected = np.array(probs) * n
    keep = expected >= 5
    observed = np.array([draws.get(v, 0) for v in values])
    pooled_o, pooled_e = np.append(observed[keep], observed[~keep].sum()), np.append(expected[keep], expected[~keep].sum())
    assert stats.chisquare(pooled_o, pooled_e).pvalue > 1e-3
    without = replace(sc, lengths=replace(sc.lengths, assistant=None))
    for i in range(50):
        a, b = plan(sc, 0, i, 30, assistant_lengths=True), plan(without, 0, i, 30, assistant_lengths=True)
        assert (a.profile, a.intents, a.target_words, a.reply) == (b.profile, b.intents, b.target_words, b.reply)
        assert b.assistant_words == () and plan(sc, 0, i, 30) == b  # off by default (`--assistant-lengths`)
