"""Fixtures for the consistency tests: hand-built dialogues, a rule judge, tiny judges and models.

`RuleJudge` is a deterministic stand-in judge (a contradiction is a listed (premise word, line word)
pair): it checks the metric arithmetic without any model. The tiny LLM judge reuses the random
2-layer Llama of tests/conftest.py; the tiny NLI judge is a random 2-layer BertForSequenceClassification
with id2label {0: entailment, 1: neutral, 2: contradiction} and a WordPiece tokenizer built here.
Neither can tell a contradiction: tests on them check the contract (shapes, ranges, determinism,
errors). The planted-contradiction tests use the embedded SmolLM2 and are marked slow.
"""

from __future__ import annotations

import json
import string
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from simgen.consistency.judges import Judge, Pair

PRIYA = {
    "name": "Priya", "age": 19, "occupation": "student", "diet": "vegetarian", "liked_genres": ["comedy", "animation"],
    "backstory": "Priya is 19 and a first-year college student. She has been a vegetarian all her life. "
                 "She loves comedy and animation movies.",
}


def dialogue_frame(dialogues: dict[str, tuple[dict[str, Any], Sequence[tuple[str, str]]]]) -> pl.DataFrame:
    """{dialogue_id: (profile, [(role, text), ...])} -> a turns frame with turns.parquet's columns."""
    rows = []
    for did, (profile, lines) in dialogues.items():
        for i, (role, text) in enumerate(lines):
            rows.append({"dialogue_id": did, "turn": i, "role": role, "text": text, "intent": "ASK" if role == "user" else None,
                         "n_tokens": 0, "finish_reason": "stop", "stop_reason": "max_turns" if i == len(lines) - 1 else None,
                         "profile": profile})
    return pl.DataFrame(rows)


# A vegetarian who grills steak at turn 5 (her third line), and its clean twin.
VEGETARIAN = [
    ("user", "hi! i want a funny movie for tonight"),
    ("assistant", "Sure! Do you like animated comedies?"),
    ("user", "yes, animation is my favorite, i'm a college student so something light"),
    ("assistant", "How about Paddington 2? What are you having for dinner?"),
    ("user", "{dinner}"),
    ("assistant", "Sounds good. Enjoy the movie!"),
]
STEAK = "i'm grilling a big juicy beef steak for dinner, i eat meat every day"
VEGGIE = "i'm grilling some veggie skewers with tofu for dinner, no meat for me"

# Age 19, then "since I retired".
AGE = [
    ("user", "hey, i'm 19 and looking for a comedy"),
    ("assistant", "Great! Any favorites?"),
    ("user", "{line}"),
    ("assistant", "Got it, I'll find something."),
]
RETIRED = "since i retired from my job forty years ago i watch movies all day"
STUDENT = "since i started college this year i watch movies on weekends"


def fill(lines: Sequence[tuple[str, str]], **values: str) -> list[tuple[str, str]]:
    return [(role, text.format(**values)) for role, text in lines]


class RuleJudge(Judge):
    """P(contradiction) = 0.9 when the premise holds word a and the line word b for a rule (a, b), else 0.1."""

    name = "rule"

    def __init__(self, rules: Sequence[tuple[str, str]] = (("vegetarian", "steak"), ("19", "retired"), ("comedy", "hate comedies"))) -> None:
        self.rules = tuple(rules)
        self.calls: list[list[Pair]] = []

    def contradiction(self, pairs: Sequence[Pair]) -> list[float]:
        self.calls.append(list(pairs))
        return [0.9 if any(a in p.premise.lower() and b in p.line.lower() for a, b in self.rules) else 0.1 for p in pairs]


@pytest.fixture
def rule_judge() -> RuleJudge:
    return RuleJudge()


@pytest.fixture(scope="session")
def tiny_llm_judge(tiny_model_dir: Path) -> Judge:
    from simgen.consistency.judges import LLMJudge

    return LLMJudge(str(tiny_model_dir), dtype="float32")


@pytest.fixture(scope="session")
def tiny_nli_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer BERT NLI classifier with a WordPiece tokenizer over characters and a few words."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    out = tmp_path_factory.mktemp("tiny-nli")
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    words = ["i", "am", "a", "the", "she", "he", "is", "and", "vegetarian", "steak", "retired", "student", "movie"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *[c for c in chars if c not in words], *[f"##{c}" for c in chars]]
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(out / "vocab.txt"), do_lower_case=True)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=512, num_labels=3,
                        id2label={0: "entailment", 1: "neutral", 2: "contradiction"},
                        label2id={"entailment": 0, "neutral": 1, "contradiction": 2})
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_nli_judge(tiny_nli_dir: Path) -> Judge:
    from simgen.consistency.judges import NLIJudge

    return NLIJudge(str(tiny_nli_dir))


@pytest.fixture(scope="session")
def movie_scenario() -> Any:
    from simgen.scenario import load_scenario

    return load_scenario("movie-recommendation")


@pytest.fixture(scope="session")
def tiny_backend(tiny_model_dir: Path) -> Any:
    from simgen.backends.transformers import TransformersBackend

    return TransformersBackend(str(tiny_model_dir), dtype="float32")


class Stub(BaseHTTPRequestHandler):
    """Answers /v1/chat/completions with top_logprobs: 'No' when the prompt mentions steak, else 'Yes'; letters B > A."""

    requests: list[dict] = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Stub.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        if self.path != "/v1/chat/completions":
            self.send_response(404)
            self.end_headers()
            return
        text = body["messages"][-1]["content"]
        if "Answer with the letter" in text:
            top = [("B", -0.2), ("A", -1.9), (" C", -3.0)]
        elif "steak" in text:
            top = [("No", -0.1), (" yes", -2.5), ("Maybe", -4.0)]
        else:
            top = [("Yes", -0.05), ("no", -3.2), ("The", -5.0)]
        content = [{"token": top[0][0], "logprob": top[0][1], "top_logprobs": [{"token": t, "logprob": lp} for t, lp in top]}]
        payload = json.dumps({"choices": [{"message": {"content": top[0][0]}, "logprobs": {"content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture
def stub_url():
    server = HTTPServer(("127.0.0.1", 0), Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Stub.requests.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()
