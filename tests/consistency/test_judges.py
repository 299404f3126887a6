"""Every judge meets one contract: probabilities in [0, 1], one per pair, deterministic, clear errors.

The tiny random models cannot tell a contradiction from a clean line; whether a judge ranks them
right is tested on the embedded SmolLM2 in test_consistency_embedded.py (slow). The http judge is
checked here against a stub OpenAI-compatible server on 127.0.0.1 that returns canned log-probs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.consistency.conftest import Stub
from simgen.consistency.judges import REGISTRY, Judge, JudgeError, OpenAIJudge, Pair, Question, load_judge, sentences

PAIRS = [
    Pair("prompt_to_line", "Priya is 19 and a vegetarian. She loves comedies.", "i grilled a steak", "What's for dinner?"),
    Pair("prompt_to_line", "Priya is 19 and a vegetarian.", "tofu again tonight"),
    Pair("line_to_line", "i'm 19", "since i retired i watch tv"),
]
QUESTIONS = [
    Question("Priya is 19 and a vegetarian.", (("user", "hi"), ("assistant", "hello")), "What is your diet?", ("vegan", "vegetarian", "keto")),
    Question("Sam is 40.", (), "How old are you?", ("40", "19")),
]


@pytest.fixture(params=["llm", "nli"])
def judge(request, tiny_llm_judge, tiny_nli_judge) -> Judge:
    return {"llm": tiny_llm_judge, "nli": tiny_nli_judge}[request.param]


def test_contradiction_contract(judge):
    probs = judge.contradiction(PAIRS)
    assert len(probs) == len(PAIRS)
    assert all(isinstance(p, float) and 0.0 <= p <= 1.0 for p in probs)
    assert judge.contradiction(PAIRS) == pytest.approx(probs, abs=1e-6)  # deterministic
    assert judge.contradiction(PAIRS[::-1]) == pytest.approx(probs[::-1], abs=1e-5)  # batching does not mix rows
    assert judge.contradiction([]) == []


def test_answer_contract(judge):
    probs = judge.answer(QUESTIONS)
    assert [len(p) for p in probs] == [3, 2]
    for row in probs:
        assert sum(row) == pytest.approx(1.0)
        assert all(0.0 <= v <= 1.0 for v in row)
    again = judge.answer(QUESTIONS)
    assert all(a == pytest.approx(b, abs=1e-6) for a, b in zip(again, probs))


def test_describe_names_the_judge_and_model(judge, tiny_model_dir, tiny_nli_dir):
    d = judge.describe()
    assert d["judge"] in ("llm", "nli")
    assert str(tiny_model_dir if d["judge"] == "llm" else tiny_nli_dir) in d["model"]
    assert d["read_as"]


def test_llm_judge_reads_yes_and_no_from_the_full_distribution(tiny_llm_judge):
    """The judge keeps only the yes/no columns of each next-token distribution; P(no) over {yes,
    no} is the same as read from the whole vocabulary-wide log-softmax."""
    import torch

    from simgen.consistency.judges import pair_prompt
    from simgen.backends.scoring import next_token_logprobs

    full = next_token_logprobs(tiny_llm_judge.backend, [pair_prompt(p) for p in PAIRS])
    assert full.shape[1] == len(tiny_llm_judge.backend.tokenizer)
    yes = torch.logsumexp(full[:, tiny_llm_judge.yes_ids], dim=-1)
    no = torch.logsumexp(full[:, tiny_llm_judge.no_ids], dim=-1)
    assert tiny_llm_judge.contradiction(PAIRS) == pytest.approx(torch.sigmoid(no - yes).tolist(), abs=1e-6)


def test_nli_judge_takes_the_max_over_persona_sentences(tiny_nli_judge):
    persona = "Priya is 19. She is a vegetarian. She loves comedy."
    assert sentences(persona) == ["Priya is 19.", "She is a vegetarian.", "She loves comedy."]
    whole = tiny_nli_judge.contradiction([Pair("prompt_to_line", persona, "i eat steak")])[0]
    parts = tiny_nli_judge.contradiction([Pair("line_to_line", s, "i eat steak") for s in sentences(persona)])
    assert whole == pytest.approx(max(parts), abs=1e-6)


def test_load_judge_specs_and_errors(tiny_model_dir, tiny_nli_dir, tmp_path):
    assert set(REGISTRY) == {"llm", "nli", "http"}
    assert load_judge(f"llm:{tiny_model_dir}", dtype="float32").name == "llm"
    assert load_judge(f"nli:{tiny_nli_dir}").name == "nli"
    j = load_judge("http:http://127.0.0.1:9/v1")
    assert isinstance(j, OpenAIJudge) and j.base_url == "http://127.0.0.1:9/v1"
    with pytest.raises(JudgeError, match="Did you mean 'nli'"):
        load_judge("nil")
    with pytest.raises(JudgeError, match="no such folder"):
        load_judge(f"llm:{tmp_path / 'missing'}")
    with pytest.raises(JudgeError, match="needs a model folder"):
        load_judge("nli")
    with pytest.raises(JudgeError, match="no such model folder"):
        load_judge(f"nli:{tmp_path / 'missing'}")
    with pytest.raises(JudgeError, match="needs a server"):
        load_judge("http")
    with pytest.raises(JudgeError, match="not an http"):
        load_judge("http:127.0.0.1:8080")


def test_nli_folder_without_a_contradiction_label(tiny_nli_dir, tmp_path):
    import shutil

    bad = Path(shutil.copytree(tiny_nli_dir, tmp_path / "bad"))
    config = json.loads((bad / "config.json").read_text())
    config["id2label"] = {"0": "positive", "1": "negative", "2": "neutral"}
    config["label2id"] = {"positive": 0, "negative": 1, "neutral": 2}
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(JudgeError, match="no 'contradiction' label"):
        load_judge(f"nli:{bad}")


# ---------------------------------------------------------------- http, against a stub server


def test_http_judge_reads_logprobs_of_yes_and_no(stub_url, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    judge = load_judge(f"http:{stub_url}")
    probs = judge.contradiction(PAIRS[:2])
    assert probs[0] == pytest.approx(1 / (1 + math.exp(-2.5 - (-0.1))))  # P(no) = 1 / (1 + exp(yes - no))
    assert probs[0] > 0.9
    assert probs[1] == pytest.approx(1 / (1 + math.exp(-0.05 - (-3.2))))
    assert probs[1] < 0.05
    sent = Stub.requests[0]
    assert sent["body"]["logprobs"] is True and sent["body"]["top_logprobs"] == 20 and sent["body"]["max_tokens"] == 1
    assert sent["auth"] == "Bearer sk-test"
    answers = judge.answer(QUESTIONS[:1])
    a, b, c = (math.exp(v) for v in (-1.9, -0.2, -3.0))
    assert answers[0] == pytest.approx([a / (a + b + c), b / (a + b + c), c / (a + b + c)])


def test_http_judge_errors_are_clear(stub_url):
    with pytest.raises(JudgeError, match="cannot reach the server"):
        OpenAIJudge("http://127.0.0.1:9/v1", timeout=2).contradiction(PAIRS[:1])
    with pytest.raises(JudgeError, match="404"):
        OpenAIJudge(stub_url.removesuffix("/v1") + "/nope").contradiction(PAIRS[:1])


@pytest.mark.parametrize("name", ["llm", "nli", "http"])
def test_every_registered_judge_meets_the_contract(name, tiny_model_dir, tiny_nli_dir, request):
    """Built through the registry: llm on the tiny model, nli on the tiny NLI model, http on llama.cpp's real server."""
    assert set(REGISTRY) == {"llm", "nli", "http"}  # a new judge gets a row in the parametrize above
    spec = {"llm": f"llm:{tiny_model_dir}", "nli": f"nli:{tiny_nli_dir}"}.get(name) or f"http:{request.getfixturevalue('llamacpp')}"
    judge = load_judge(spec, **({"model": "smollm2"} if name == "http" else {}))
    probs = judge.contradiction(PAIRS)
    assert len(probs) == len(PAIRS) and all(isinstance(p, float) and 0.0 <= p <= 1.0 for p in probs)
    assert judge.contradiction([]) == []
    answers = judge.answer(QUESTIONS)
    assert [len(a) for a in answers] == [3, 2] and all(sum(a) == pytest.approx(1.0) for a in answers)
    assert judge.describe()["judge"] == name
