"""Q&A: questions from the structured profile latent, answered by option likelihood, graded against the profile."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from tests.consistency.conftest import dialogue_frame

from simgen.consistency.metrics import dialogues_from_turns
from simgen.consistency.qa import option_probabilities, profile_questions, qa_by_attribute, qa_scores
from simgen.rng import generator


@pytest.fixture(scope="module")
def profile(movie_scenario):
    return movie_scenario.profile.sample(generator(0, 3, 0)).values


def test_questions_come_from_the_profile_and_know_the_answer(movie_scenario, profile):
    questions = profile_questions(movie_scenario.profile, profile, seed=1)
    by = {q.attribute: q for q in questions}
    assert "patience" not in by  # floats are traits, not stated facts
    assert {"name", "age", "occupation", "liked_genres", "favorite_movie"} <= set(by)
    for q in questions:
        assert len(q.options) == len(set(q.options)) == min(4, len(q.options))
        assert len(q.options) >= 3  # every variable here declares at least 3 values
        truth = q.options[q.answer]
        value = profile[q.attribute]
        if isinstance(value, list):
            assert truth in value
            assert not any(o in value for i, o in enumerate(q.options) if i != q.answer)
        else:
            assert truth == str(value)
    age = by["age"]
    assert age.question == "How old are you?"
    assert all(18 <= int(o) <= 88 for o in age.options)
    assert profile_questions(movie_scenario.profile, profile, seed=1) == questions  # seeded
    shuffled = [profile_questions(movie_scenario.profile, profile, seed=s)[0].answer for s in range(8)]
    assert len(set(shuffled)) > 1  # the true option is not always in the same place


def test_list_variable_with_nothing_sampled_is_skipped(movie_scenario, profile):
    questions = profile_questions(movie_scenario.profile, {**profile, "disliked_genres": []}, seed=0, skip=("name",))
    assert {q.attribute for q in questions}.isdisjoint({"disliked_genres", "name"})


def test_option_probabilities_contract(tiny_backend):
    chat = [{"role": "system", "content": "You are Sam."}, {"role": "user", "content": "How old are you?"}]
    probs = option_probabilities(tiny_backend, [(chat, ["19", "45", "67"]), (chat, ["yes", "no"])])
    assert [len(p) for p in probs] == [3, 2]
    assert all(sum(p) == pytest.approx(1.0) for p in probs)
    again = option_probabilities(tiny_backend, [(chat, ["yes", "no"])], shared=False)  # each option alone
    assert again[0] == pytest.approx(probs[1], abs=1e-5)


def test_qa_scores_asks_at_each_checkpoint(tiny_backend, movie_scenario, profile):
    lines = [("user", "hi, looking for a movie"), ("assistant", "Sure, what genre?"), ("user", "something fun"),
             ("assistant", "Comedy?"), ("user", "")]
    dialogues = dialogues_from_turns(dialogue_frame({"d0": (profile, lines)}))
    out = qa_scores(tiny_backend, movie_scenario, dialogues, max_turns=6, max_questions=3)
    assert sorted(out) == [("d0", 0), ("d0", 1)]  # the empty third line is no checkpoint
    assert all(asked == 3 and 0 <= correct <= 3 for asked, correct in out.values())
    assert qa_scores(tiny_backend, movie_scenario, dialogues, max_turns=6, max_questions=3) == out
    assert sorted(qa_scores(tiny_backend, movie_scenario, dialogues, max_turns=6, every=2, max_questions=1)) == [("d0", 1)]
    assert np.isfinite(sum(v[1] for v in out.values()))


def test_qa_by_attribute_counts_the_same_answers_per_profile_variable(tiny_backend, movie_scenario, profile):
    lines = [("user", "hi, looking for a movie"), ("assistant", "Sure, what genre?"), ("user", "something fun"),
             ("assistant", "Comedy?"), ("user", "maybe")]
    dialogues = dialogues_from_turns(dialogue_frame({"d0": (profile, lines)}))
    checkpoints = qa_scores(tiny_backend, movie_scenario, dialogues, max_turns=6, max_questions=4)
    attributes = qa_by_attribute(tiny_backend, movie_scenario, dialogues, max_turns=6, max_questions=4)
    asked = [q.attribute for q in profile_questions(movie_scenario.profile, profile, seed=[0, zlib.crc32(b"d0")])[:4]]
    assert sorted(attributes) == sorted(asked) and all(n == 3 for n, _ in attributes.values())  # each asked at all 3 checkpoints
    assert sum(c for _, c in attributes.values()) == sum(c for _, c in checkpoints.values())  # the same answers, grouped otherwise
    only = qa_by_attribute(tiny_backend, movie_scenario, dialogues, max_turns=6, max_questions=4, skip=[v.name for v in movie_scenario.profile.variables if v.name != asked[0]])
    assert list(only) == [asked[0]] and only[asked[0]][0] == 3
