"""Planted contradictions and Q&A on the embedded SmolLM2-135M-Instruct (slow: loads the real model).

Each judge that can run offline here gets the same hand-built dialogues: a vegetarian who grills a
steak at turn 4 (her third line), and a 19-year-old who later speaks "since i retired", each beside
its clean twin. Judges: `llm` (the embedded model through transformers) and `http` (the same model's
GGUF served by llama.cpp through the xllamacpp wheel, on 127.0.0.1; skipped where xllamacpp is not
installed). The `nli` judge has no real NLI model offline, so only its contract is tested
(test_judges.py). One case is a known miss of the 135M judge and is marked xfail(strict=True): if a
better prompt or model fixes it, the test fails and the mark must go.
"""

from __future__ import annotations

import pytest
from tests.consistency.conftest import AGE, PRIYA, RETIRED, STEAK, STUDENT, VEGETARIAN, VEGGIE, dialogue_frame, fill

from simgen.consistency.check import score_dialogues
from simgen.consistency.metrics import dialogues_from_turns
from simgen.consistency.qa import qa_scores

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def llamacpp_url():
    pytest.importorskip("xllamacpp")
    from simgen.backends.llamacpp import serve_gguf

    # no prompt cache: a reused prompt prefix shifts the quantised logits, so the same pair would score differently
    with serve_gguf(parallel=1, ctx_per_slot=4096, threads=2, cache_prompt=False) as url:
        yield url


@pytest.fixture(scope="module")
def embedded_judge():
    from simgen.consistency.judges import load_judge

    return load_judge("llm")


@pytest.fixture(params=["llm", "http"])
def judge(request, embedded_judge):
    if request.param == "llm":
        return embedded_judge
    from simgen.consistency.judges import load_judge

    return load_judge("http:" + request.getfixturevalue("llamacpp_url"))


@pytest.fixture(scope="module")
def planted():
    return dialogue_frame({
        "steak": (PRIYA, fill(VEGETARIAN, dinner=STEAK)), "veggie": (PRIYA, fill(VEGETARIAN, dinner=VEGGIE)),
        "retired": (PRIYA, fill(AGE, line=RETIRED)), "student": (PRIYA, fill(AGE, line=STUDENT)),
    })


_scored: dict[str, dict] = {}


def _dialogues(judge, planted) -> dict[str, dict]:
    key = judge.describe()["judge"]
    if key not in _scored:
        scored = score_dialogues(planted, judge)
        _scored[key] = {d["dialogue_id"]: d for d in scored.report["dialogues"]}
    return _scored[key]


def test_vegetarian_grilling_steak_scores_lower_prompt_to_line(judge, planted):
    d = _dialogues(judge, planted)
    assert d["steak"]["prompt_to_line"] < d["veggie"]["prompt_to_line"]


def test_nineteen_then_retired_scores_lower_line_to_line(judge, planted):
    d = _dialogues(judge, planted)
    assert d["retired"]["line_to_line"] < d["student"]["line_to_line"]


def test_nineteen_then_retired_scores_lower_prompt_to_line(request, judge, planted):
    if judge.name == "llm":
        request.applymarker(pytest.mark.xfail(strict=True, reason="the embedded 135M judge misses it (P(no) 0.9335 against 0.9359 for the clean line)"))
    d = _dialogues(judge, planted)
    assert d["retired"]["prompt_to_line"] < d["student"]["prompt_to_line"]


def test_stating_facts_against_the_profile_scores_lower_on_qa():
    """Same profile, same questions (same dialogue id); in one dialogue the user states its true facts,
    in the other false ones taken from the questions' wrong options."""
    from simgen.backends.transformers import TransformersBackend
    from simgen.scenario import load_scenario

    scenario = load_scenario("movie-recommendation")
    simulator = TransformersBackend(None)  # the embedded model as `simgen generate` runs it (dtype auto)
    profile = {"name": "Olga", "age_group": "25-39", "age": 31, "occupation": "nurse", "watching_with": "alone",
               "liked_genres": ["horror"], "disliked_genres": ["musical"], "favorite_movie": "Alien", "patience": 0.5,
               "verbosity": "casual",
               "backstory": "Olga is 31 and works as a nurse. They usually watch movies alone, in the evening. "
                            "They love horror movies and can't stand musical. Their all-time favorite is Alien."}

    def lines(name, age, job, genre, movie):
        return [("user", f"hi, i'm {name}, {age}, {job}, and i need a movie for tonight"), ("assistant", "Sure! What do you like?"),
                ("user", f"{genre} all the way, my favorite movie ever is {movie}"), ("assistant", "Great taste."),
                ("user", f"i get home late from work, so {genre} it is"), ("assistant", "Noted.")]

    def accuracy(dialogue):
        dialogues = dialogues_from_turns(dialogue_frame({"d": (profile, dialogue)}))
        # one checkpoint, after the third line: 7 questions
        out = qa_scores(simulator, scenario, dialogues, max_turns=6, every=3, skip=("age_group", "patience", "verbosity"))
        assert list(out) == [("d", 2)] and out[("d", 2)][0] == 7
        return out[("d", 2)][1] / 7

    true = accuracy(lines("Olga", 31, "a nurse", "horror", "Alien"))
    false = accuracy(lines("Mei", 49, "an electrician", "action", "Toy Story"))  # wrong options of the same questions
    print(f"Q&A accuracy: true facts {true:.3f}, false facts {false:.3f}")
    assert false < true, (true, false)
