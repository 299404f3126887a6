"""Consistency judges: does a line contradict a persona, or an earlier line of the same speaker?

A judge is a small ABC with one main method, `contradiction(pairs) -> [P(contradiction)]`, and an
optional `answer(questions) -> [option probabilities]` for multiple-choice questions about a persona
(the default answers through `contradiction`). Three ship:

    llm   any local transformers causal LM folder, or the embedded SmolLM2-135M-Instruct (default):
          asked "is the line consistent with ...? yes or no", read from the next-token log-probs of
          yes/no (P(contradiction) = P(no) over {yes, no}); no text parsing.
    nli   any local sequence-classification NLI folder: P(contradiction), the label found in
          `config.id2label`; persona descriptions are split into sentences and the max is taken.
    http  an OpenAI-compatible chat-completions server: the same question, read from the
          `logprobs`/`top_logprobs` of one generated token (standard library only).

Judges are named by a spec string `NAME[:ARG]` (`llm`, `llm:/models/qwen`, `nli:/models/nli`,
`http:http://127.0.0.1:8080/v1`), resolved through a lazy registry (`"name": "module:object"`), so
a judge from another module can be registered without importing it up front; torch and transformers
load only when a local judge is built. Nothing here downloads anything; a missing model folder is a
`JudgeError` that says what to pass instead. This module does not know about runs or dialogues.
"""

from __future__ import annotations

import math
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from simgen.errors import BackendError, JudgeError, ModelError, unknown_name
from simgen.lazy import resolve

Kind = Literal["prompt_to_line", "line_to_line"]
KINDS: tuple[str, ...] = ("prompt_to_line", "line_to_line", "qa")


@dataclass(frozen=True)
class Pair:
    """One contradiction question: does `line` contradict `premise`?"""

    kind: Kind
    premise: str  # prompt_to_line: the persona description; line_to_line: one earlier line of the same speaker
    line: str  # the line under test
    context: str | None = None  # the other side's line that `line` answers, if any


@dataclass(frozen=True)
class Question:
    """A multiple-choice question to a persona; exactly one option is true of it."""

    persona: str
    context: tuple[tuple[str, str], ...]  # earlier turns as (role, text); role "user" is the persona
    question: str
    options: tuple[str, ...]


class Judge(ABC):
    """Scores contradictions. Subclasses set `name` and implement `contradiction`."""

    name: ClassVar[str] = "judge"
    spec: tuple[str, dict[str, Any]] | None = None  # (spec, settings) when `load_judge` built it: how a Ray worker builds it again

    @abstractmethod
    def contradiction(self, pairs: Sequence[Pair]) -> list[float]:
        """P(the line contradicts its premise) in [0, 1] for each pair, in order."""

    def answer(self, questions: Sequence[Question]) -> list[list[float]]:
        """A probability per option of each question (rows sum to 1).

        The default asks `contradiction` whether "question answer" contradicts the persona and
        normalises 1 - P(contradiction) over the options.
        """
        pairs = [Pair("prompt_to_line", q.persona, f"{q.question} {o}") for q in questions for o in q.options]
        scores = iter(self.contradiction(pairs))
        out = []
        for q in questions:
            s = [1.0 - next(scores) for _ in q.options]
            total = sum(s)
            out.append([v / total for v in s] if total > 0 else [1.0 / len(s)] * len(s))
        return out

    def describe(self) -> dict[str, Any]:
        """What reports record about this judge."""
        return {"judge": self.name}


# judge name -> "module:class"; the class takes the spec's argument (or None) as its first parameter
REGISTRY: dict[str, str] = {
    "llm": "simgen.consistency.judges:LLMJudge",
    "nli": "simgen.consistency.judges:NLIJudge",
    "http": "simgen.consistency.judges:OpenAIJudge",
}
DEFAULT_SPEC = "llm"


def load_judge(spec: str | Judge | None = None, **kwargs: Any) -> Judge:
    """A judge from a spec `NAME[:ARG]` (default: `llm`, the embedded SmolLM2), or a Judge as is."""
    if isinstance(spec, Judge):
        return spec
    spec = DEFAULT_SPEC if spec is None or spec == "" else spec
    name, _, arg = spec.partition(":")
    if name not in REGISTRY:
        raise JudgeError(unknown_name("judge", name, REGISTRY) + " A spec is NAME[:ARG], e.g. llm, llm:/path/to/model, nli:/path/to/nli-model, http:http://127.0.0.1:8080/v1.")
    judge = resolve(REGISTRY, name, "judge", JudgeError)(arg or None, **kwargs)
    judge.spec = (spec, dict(kwargs))
    return judge


# ---------------------------------------------------------------- prompts (shared by llm and http)

SYSTEM = "You are a careful fact checker. You answer every question with yes or no."


def pair_prompt(pair: Pair) -> list[dict[str, str]]:
    """The chat that asks whether a pair is consistent; its answer starts with yes or no.

    P(contradiction) is read as P(no). The question asks "consistent?" rather than "contradict?":
    on dev.jsonl the embedded SmolLM2 says "yes" to both framings alike, and the "consistent?"
    framing ranks contradictions better (prompt-to-line ROC-AUC 0.68 against 0.34).
    """
    asked = f'They were asked: "{pair.context}"\n' if pair.context else ""
    if pair.kind == "prompt_to_line":
        text = (f"Here is a description of a person:\n{pair.premise}\n\n{asked}The person said: \"{pair.line}\"\n\n"
                "Is what the person said consistent with the description? Answer yes or no.")
    else:
        text = (f"A person said earlier: \"{pair.premise}\"\n{asked}Later the same person said: \"{pair.line}\"\n\n"
                "Are the two statements consistent with each other? Answer yes or no.")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]


def persona_chat(q: Question) -> list[dict[str, str]]:
    """The persona's own chat (roles flipped: the persona speaks as "assistant") ending in the question."""
    chat = [{"role": "system", "content": f"You are this person, and you answer as them.\nAbout you: {q.persona}"}]
    for role, text in q.context:
        chat.append({"role": "assistant" if role == "user" else "user", "content": text})
    chat.append({"role": "user", "content": q.question})
    return chat


YES = ("yes", "Yes", " yes", " Yes", "YES")
NO = ("no", "No", " no", " No", "NO")


# ---------------------------------------------------------------- llm: a local causal LM


class LLMJudge(Judge):
    """A local causal LM asked a yes/no question, read from its next-token log-probs of yes and no.

    float32 by default: in bfloat16 the same pair's score moves by up to 0.01 with the padding of its
    batch neighbours, more than the embedded model's margin between a contradiction and a clean line.
    """

    name = "llm"

    def __init__(self, model: str | None = None, dtype: str = "float32", pass_tokens: int | None = None, backend: Any = None) -> None:
        if backend is None:
            from simgen.backends import local_model

            try:
                backend = local_model(model, dtype)
            except ModelError as e:
                raise JudgeError(f"judge llm:{model or 'embedded'}: {e}") from None
        if not backend.scorer:
            raise JudgeError(f"judge llm: the {backend.name} backend cannot score text (it has no next-token log-probs); use a local model.")
        self.backend = backend
        self.pass_tokens = pass_tokens  # tokens per forward pass (None: the scorer's default)
        tok = backend.tokenizer
        self.yes_ids = sorted({tok.encode(v, add_special_tokens=False)[0] for v in YES})
        self.no_ids = sorted({tok.encode(v, add_special_tokens=False)[0] for v in NO})

    def describe(self) -> dict[str, Any]:
        return {"judge": self.name, "model": self.backend.source.id, "fingerprint": self.backend.source.fingerprint,
                "dtype": str(self.backend.model.dtype).removeprefix("torch."), "read_as": "P(no) to 'consistent?' from next-token log-probs of yes/no"}

    def contradiction(self, pairs: Sequence[Pair]) -> list[float]:
        if not pairs:
            return []
        import torch

        keep = [*self.yes_ids, *self.no_ids]
        logp = self.backend.next_token_logprobs([pair_prompt(p) for p in pairs], keep, pass_tokens=self.pass_tokens)  # (n, yes + no)
        yes = torch.logsumexp(logp[:, :len(self.yes_ids)], dim=-1)
        no = torch.logsumexp(logp[:, len(self.yes_ids):], dim=-1)
        return torch.sigmoid(no - yes).tolist()  # P(no) to "consistent?" over {yes, no}

    def answer(self, questions: Sequence[Question]) -> list[list[float]]:
        """Option likelihood under the model speaking as the persona (mean log-prob per token)."""
        from simgen.consistency.qa import option_probabilities

        return option_probabilities(self.backend, [(persona_chat(q), q.options) for q in questions], self.pass_tokens)


# ---------------------------------------------------------------- nli: a sequence-classification model

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def sentences(text: str) -> list[str]:
    """Split a persona description into sentences (premises short enough for NLI models)."""
    return [s.strip() for s in _SENTENCE.split(text.strip()) if s.strip()] or [text]


class NLIJudge(Judge):
    """P(contradiction) of a sequence-classification NLI model, premise -> line."""

    name = "nli"

    def __init__(self, model: str | None = None, batch_size: int = 16, max_length: int = 256) -> None:
        if model is None:
            raise JudgeError("judge nli needs a model folder: --judge nli:/path/to/nli-model (a local sequence-classification NLI model with a 'contradiction' label; simgen never downloads).")
        path = Path(model).expanduser()
        if not (path / "config.json").is_file():
            raise JudgeError(f"judge nli:{model}: no such model folder (no config.json there). Pass a local Hugging Face NLI model folder; simgen never downloads.")
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        config = AutoConfig.from_pretrained(path, local_files_only=True)
        labels = {int(k): str(v).lower() for k, v in (config.id2label or {}).items()}
        self.contradiction_id = next((i for i, lab in labels.items() if lab.startswith("contradict")), None)
        self.entailment_id = next((i for i, lab in labels.items() if lab.startswith("entail")), None)
        if self.contradiction_id is None:
            raise JudgeError(f"judge nli:{model}: config.id2label {config.id2label} has no 'contradiction' label, so this is not an NLI model simgen can read.")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            self.model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True).eval()
        except Exception as e:  # noqa: BLE001 - a broken user folder: say which
            raise JudgeError(f"judge nli:{model}: cannot load from {path}: {type(e).__name__}: {e}") from None
        self.path = path
        self.batch_size = batch_size
        self.max_length = max_length

    def describe(self) -> dict[str, Any]:
        from simgen.models import fingerprint

        return {"judge": self.name, "model": str(self.path), "fingerprint": fingerprint(self.path),
                "read_as": f"P(label {self.contradiction_id}: contradiction), max over persona sentences"}

    def _probs(self, premises: Sequence[str], hypotheses: Sequence[str]) -> Any:
        """Softmax over the labels for each (premise, hypothesis): (n, labels)."""
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(premises), self.batch_size):
                enc = self.tokenizer(list(premises[start:start + self.batch_size]), list(hypotheses[start:start + self.batch_size]),
                                     padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
                out.append(torch.softmax(self.model(**enc).logits.float(), dim=-1))
        return torch.cat(out) if out else torch.empty((0, 0))

    def contradiction(self, pairs: Sequence[Pair]) -> list[float]:
        # (pair) -> its premises: persona sentences for prompt_to_line, the one earlier line otherwise
        owners, premises, lines = [], [], []
        for i, p in enumerate(pairs):
            for s in (sentences(p.premise) if p.kind == "prompt_to_line" else [p.premise]):
                owners.append(i)
                premises.append(s)
                lines.append(p.line)
        if not premises:
            return []
        probs = self._probs(premises, lines)[:, self.contradiction_id].tolist()
        out = [0.0] * len(pairs)
        for i, v in zip(owners, probs):
            out[i] = max(out[i], v)
        return out

    def answer(self, questions: Sequence[Question]) -> list[list[float]]:
        """Entailment (else 1 - contradiction) of "question answer" by the persona, normalised over options."""
        if self.entailment_id is None:
            return super().answer(questions)
        premises = [q.persona for q in questions for _ in q.options]
        hyps = [f"{q.question} {o}" for q in questions for o in q.options]
        ent = iter(self._probs(premises, hyps)[:, self.entailment_id].tolist()) if premises else iter(())
        out = []
        for q in questions:
            s = [next(ent) for _ in q.options]
            total = sum(s)
            out.append([v / total for v in s] if total > 0 else [1.0 / len(s)] * len(s))
        return out


# ---------------------------------------------------------------- http: an OpenAI-compatible server


class OpenAIJudge(Judge):
    """An OpenAI-compatible chat-completions endpoint, read from the log-probs of one generated token.

    `base_url` ends in `/v1` (e.g. `http://127.0.0.1:8080/v1`); the key comes from `api_key` or
    `$OPENAI_API_KEY` (a local server needs none). Multiple-choice questions are asked with
    lettered options and read as P(letter).
    """

    name = "http"
    TOP = 20  # top_logprobs requested; OpenAI allows at most 20

    def __init__(self, base_url: str | None = None, model: str = "default", api_key: str | None = None, timeout: float = 60.0,
                 max_retries: int = 2, api_key_env: str = "OPENAI_API_KEY") -> None:
        from simgen.backends.openai import ChatClient

        if not base_url:
            raise JudgeError("judge http needs a server: --judge http:http://HOST:PORT/v1 (an OpenAI-compatible chat-completions endpoint).")
        if not base_url.startswith(("http://", "https://")):
            raise JudgeError(f"judge http:{base_url}: not an http(s) URL; pass e.g. http:http://127.0.0.1:8080/v1.")
        self.client = ChatClient(base_url, api_key if api_key is not None else os.environ.get(api_key_env), timeout, max_retries)
        self.base_url = self.client.base_url
        self.model = model

    def describe(self) -> dict[str, Any]:
        return {"judge": self.name, "model": self.model, "base_url": self.base_url, "read_as": "P(no) to 'consistent?' from top_logprobs of yes/no"}

    def _top_logprobs(self, messages: list[dict[str, str]]) -> dict[str, float]:
        """token -> log-prob of the first generated token's top alternatives (through the backend's
        ChatClient: keep-alive connections, retries on 429/5xx/timeouts, bounded)."""
        from simgen.backends.openai import Failed

        body = {"model": self.model, "messages": messages, "max_tokens": 1, "temperature": 0,
                "logprobs": True, "top_logprobs": self.TOP}
        try:
            return self.client.with_retries("POST", "/chat/completions", body, self._parse)
        except Failed as e:
            if e.status is not None:
                raise JudgeError(f"judge http:{self.base_url}: the server answered {e}") from None
            raise JudgeError(f"judge http:{self.base_url}: cannot reach the server ({e}); start it or fix the URL.") from None
        except BackendError as e:  # a refused key
            raise JudgeError(f"judge http: {e}") from None

    def _parse(self, payload: Any) -> dict[str, float]:
        try:
            first = payload["choices"][0]["logprobs"]["content"][0]
            out = {first["token"]: float(first["logprob"])}
            for alt in first.get("top_logprobs") or []:
                out.setdefault(alt["token"], float(alt["logprob"]))
        except (KeyError, IndexError, TypeError, ValueError):
            raise JudgeError(f"judge http:{self.base_url}: the answer has no choices[0].logprobs.content; "
                             "the server must support logprobs/top_logprobs.") from None
        return out

    @staticmethod
    def _group(top: dict[str, float], variants: Sequence[str]) -> float:
        """log of the summed probability of the tokens that spell one answer; -inf when none is listed."""
        values = [lp for tok, lp in top.items() if tok in variants or tok.strip() in variants]
        if not values:
            return -math.inf
        m = max(values)
        return m + math.log(sum(math.exp(v - m) for v in values))

    def contradiction(self, pairs: Sequence[Pair]) -> list[float]:
        out = []
        for p in pairs:
            top = self._top_logprobs(pair_prompt(p))
            yes, no = self._group(top, YES), self._group(top, NO)
            if yes == no == -math.inf:  # neither word among the top tokens: no evidence either way
                out.append(0.5)
                continue
            floor = min(top.values())  # an unlisted answer is at most as likely as the least listed token
            yes, no = max(yes, floor - 1e-3) if yes == -math.inf else yes, max(no, floor - 1e-3) if no == -math.inf else no
            out.append(1.0 / (1.0 + math.exp(yes - no)))  # P(no) to "consistent?"
        return out

    def answer(self, questions: Sequence[Question]) -> list[list[float]]:
        out = []
        for q in questions:
            letters = [chr(ord("A") + i) for i in range(len(q.options))]
            chat = persona_chat(q)
            listing = "\n".join(f"{letter}) {o}" for letter, o in zip(letters, q.options))
            chat[-1] = {"role": "user", "content": f"{q.question}\n{listing}\nAnswer with the letter only."}
            top = self._top_logprobs(chat)
            logs = [self._group(top, (letter,)) for letter in letters]
            floor = min(top.values()) - 1e-3
            logs = [v if v > -math.inf else floor for v in logs]
            m = max(logs)
            w = [math.exp(v - m) for v in logs]
            out.append([v / sum(w) for v in w])
        return out
