"""`simgen judge-eval`: how well a judge agrees with hand-labelled consistency items.

The labelled file is JSON Lines, one item a line (the schema of ../shared/data/consistency/dev.jsonl):

    kind: prompt_to_line   persona {backstory, attributes}, context [{role, text}], line, label (1 = contradicts)
    kind: line_to_line     context (role "user" = the persona), line, label, conflicts_with (indices)
    kind: qa               persona, context, question, options (list), answer (index of the true option)

Per kind it reports accuracy, ROC-AUC and a confusion matrix, plus accuracy by difficulty:
- prompt_to_line: the score is P(contradiction) of (backstory, line), the question answered being
  the context's last assistant line; predicted 1 at P >= threshold.
- line_to_line: the score is the max P(contradiction) of the line against each earlier persona line.
- qa: the judge's option probabilities; accuracy = the top option is the answer; ROC-AUC and the
  confusion matrix over (item, option) pairs, positive = the true option, predicted = the top option.
The `note` field is for people and is never shown to the judge.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from simgen.consistency.judges import KINDS, Judge, Pair, Question, load_judge
from simgen.errors import DataError

_REQUIRED = {
    "prompt_to_line": ("persona", "line", "label"),
    "line_to_line": ("context", "line", "label"),
    "qa": ("persona", "question", "options", "answer"),
}


def read_labelled(path: str | Path) -> list[dict[str, Any]]:
    """Parse and check the labelled JSONL; a bad line is a DataError naming the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; pass a JSON Lines file of labelled items (see ../shared/data/consistency/dev.jsonl).") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read it as UTF-8 text ({e}).") from None
    items = []
    for n, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{path}:{n}"
        try:
            item = json.loads(raw)
        except ValueError as e:
            raise DataError(f"{where}: not valid JSON ({e}); each line must be one JSON object.") from None
        if not isinstance(item, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(item).__name__}.")
        kind = item.get("kind")
        if kind not in _REQUIRED:
            raise DataError(f"{where}: 'kind' must be one of {', '.join(KINDS)}, got {kind!r}.")
        missing = [k for k in _REQUIRED[kind] if k not in item]
        if missing:
            raise DataError(f"{where}: a {kind} item needs the field {missing[0]!r}.")
        if kind != "qa" and item["label"] not in (0, 1):
            raise DataError(f"{where}: 'label' must be 0 or 1, got {item['label']!r}.")
        if kind == "qa" and not (isinstance(item["options"], list) and len(item["options"]) >= 2
                                 and isinstance(item["answer"], int) and 0 <= item["answer"] < len(item["options"])):
            raise DataError(f"{where}: 'options' must be a list of at least 2 and 'answer' an index into it.")
        context = item.get("context") or []
        if not isinstance(context, list) or any(not isinstance(c, dict) or c.get("role") not in ("user", "assistant") or "text" not in c for c in context):
            raise DataError(f"{where}: 'context' must be a list of {{'role': 'user' | 'assistant', 'text': ...}}.")
        if kind == "line_to_line" and not any(c["role"] == "user" for c in context):
            raise DataError(f"{where}: a line_to_line item needs at least one earlier user line in 'context'.")
        if "persona" in item and not (isinstance(item["persona"], dict) and isinstance(item["persona"].get("backstory"), str)):
            raise DataError(f"{where}: 'persona' must be an object with a 'backstory' string.")
        items.append(item)
    if not items:
        raise DataError(f"{path}: no items; the file is empty.")
    return items


def roc_auc(labels: list[int], scores: list[float]) -> float | None:
    """ROC-AUC (simgen.stats.auc: ties count half); None when only one class is present."""
    from simgen.stats import auc

    value = auc(np.asarray(scores, dtype=float), np.asarray(labels, dtype=int)) if labels else math.nan
    return None if math.isnan(value) else value


def _binary(labels: list[int], scores: list[float], predicted: list[int]) -> dict[str, Any]:
    tp = sum(p == 1 and y == 1 for p, y in zip(predicted, labels))
    fp = sum(p == 1 and y == 0 for p, y in zip(predicted, labels))
    fn = sum(p == 0 and y == 1 for p, y in zip(predicted, labels))
    tn = sum(p == 0 and y == 0 for p, y in zip(predicted, labels))
    return {"roc_auc": roc_auc(labels, scores), "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn}}


def judge_eval(path: str | Path, judge: Judge | str | None = None, threshold: float = 0.5) -> dict[str, Any]:
    """Accuracy, ROC-AUC and confusion per kind of `judge` on the labelled file at `path`."""
    items = read_labelled(path)
    judge = load_judge(judge)
    report: dict[str, Any] = {"file": str(path), "judge": judge.describe(), "threshold": threshold, "kinds": {}, "items": []}

    # prompt_to_line and line_to_line: one batch of pairs for all items
    pairs: list[Pair] = []
    owners: list[int] = []
    for i, it in enumerate(items):
        context = it.get("context") or []
        if it["kind"] == "prompt_to_line":
            asked = next((c["text"] for c in reversed(context) if c["role"] == "assistant"), None)
            pairs.append(Pair("prompt_to_line", it["persona"]["backstory"], it["line"], asked))
            owners.append(i)
        elif it["kind"] == "line_to_line":
            for c in context:
                if c["role"] == "user":
                    pairs.append(Pair("line_to_line", c["text"], it["line"]))
                    owners.append(i)
    scores: dict[int, float] = {}
    for i, p in zip(owners, judge.contradiction(pairs)):
        scores[i] = max(scores.get(i, 0.0), float(p))
    qa_items = [i for i, it in enumerate(items) if it["kind"] == "qa"]
    questions = [Question(items[i]["persona"]["backstory"], tuple((c["role"], c["text"]) for c in items[i].get("context") or []),
                          items[i]["question"], tuple(str(o) for o in items[i]["options"])) for i in qa_items]
    answers = dict(zip(qa_items, judge.answer(questions))) if questions else {}

    for kind in KINDS:
        idx = [i for i, it in enumerate(items) if it["kind"] == kind]
        if not idx:
            continue
        if kind == "qa":
            labels, flat, predicted, correct = [], [], [], []
            for i in idx:
                probs = answers[i]
                top = int(np.argmax(probs))
                correct.append(top == items[i]["answer"])
                for j, p in enumerate(probs):
                    labels.append(int(j == items[i]["answer"]))
                    flat.append(float(p))
                    predicted.append(int(j == top))
                report["items"].append({"id": items[i].get("id"), "kind": kind, "answer": items[i]["answer"], "predicted": top,
                                        "probabilities": [round(float(p), 4) for p in probs]})
            summary = {"n": len(idx), "accuracy": float(np.mean(correct)), **_binary(labels, flat, predicted), "roc_auc_unit": "(item, option) pairs"}
            by = [(items[i].get("difficulty"), c) for i, c in zip(idx, correct)]
        else:
            labels = [int(items[i]["label"]) for i in idx]
            s = [scores.get(i, 0.0) for i in idx]
            predicted = [int(v >= threshold) for v in s]
            summary = {"n": len(idx), "accuracy": float(np.mean([p == y for p, y in zip(predicted, labels)])), **_binary(labels, s, predicted),
                       "positives": sum(labels)}
            by = [(items[i].get("difficulty"), p == y) for i, p, y in zip(idx, predicted, labels)]
            report["items"] += [{"id": items[i].get("id"), "kind": kind, "label": y, "score": round(v, 4)} for i, y, v in zip(idx, labels, s)]
        summary["accuracy_by_difficulty"] = {d: float(np.mean([c for dd, c in by if dd == d])) for d in sorted({d for d, _ in by if d})}
        report["kinds"][kind] = summary
    return report


def format_table(report: dict[str, Any]) -> str:
    """The per-kind table as Markdown."""
    j = report["judge"]
    lines = [f"judge: {j.get('judge')} {j.get('model', '')}".rstrip(),
             "", "| kind | n | accuracy | ROC-AUC | confusion (tp/fp/fn/tn) |", "| --- | --- | --- | --- | --- |"]
    for kind, s in report["kinds"].items():
        c = s["confusion"]
        auc = f"{s['roc_auc']:.3f}" if s["roc_auc"] is not None else "n/a"
        lines.append(f"| {kind} | {s['n']} | {s['accuracy']:.3f} | {auc} | {c['tp']}/{c['fp']}/{c['fn']}/{c['tn']} |")
    return "\n".join(lines)
