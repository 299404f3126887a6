"""Fit a scenario's intent model (start and transitions) on the train split of a real corpus.

The corpus is read through simgen.corpora (a file, a corpus folder, a run folder or a registered
name such as `chitchat`); only its `train` split. Each user line gets the intent `simgen tune` gives
it (`IntentModel.label_lines`: its own label through `aliases`, else the first of the model's
`label_rules` that holds), and each dialogue becomes the chain of its user lines' intents:
- `start`: the intent of the first user line;
- `transitions`: counts between consecutive user lines, add-`alpha` smoothed over every target the
  model keeps, so any intent can follow any other; rows of terminal intents stay empty. A chain
  that does not end on a terminal intent (unlabelled lines cut it) counts no move into one.
Descriptions, `label_rules`, `modifiers` and `aliases` are copied from the scenario's current
intent model: edit them there (in the file this script writes, once the scenario points to it)
and rerun to refit the numbers. An intent that no train line is labelled with is left out, and the
file says so. Probabilities are rounded to 4 decimals with the residue on each row's largest
entry, so every row sums to 1. Only counts are written, never text.

Usage (from the repo root):
    python scripts/fit_intents.py --scenario chitchat --corpus chitchat
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from simgen.corpora import load_corpus  # noqa: E402
from simgen.errors import DataError  # noqa: E402
from simgen.intents import IntentModel  # noqa: E402
from simgen.scenario import load_scenario, resolve_scenario_path  # noqa: E402


def chains(model: IntentModel, turns: pl.DataFrame) -> list[list[str | None]]:
    """Each dialogue's user-line intents in turn order (None: a line no rule labels)."""
    users = model.label_lines(turns).filter((pl.col("role") == "user") & (pl.col("text").str.strip_chars() != ""))
    grouped = users.sort("dialogue_id", "turn").group_by("dialogue_id", maintain_order=True).agg(pl.col("intent"))
    return grouped["intent"].to_list()


def rounded(counts: dict[str, float]) -> dict[str, float]:
    """Counts as probabilities to 4 decimals that sum to 1 exactly (the residue on the largest; ties alphabetical),
    no positive count rounding to 0."""
    total = sum(counts.values())
    out = {k: max(round(v / total, 4), 0.0001) if v > 0 else 0.0 for k, v in counts.items()}
    top = max(sorted(out), key=out.__getitem__)
    out[top] = round(out[top] + 1 - sum(out.values()), 4)
    return {k: v for k, v in out.items() if v > 0}


def fit(model: IntentModel, seqs: list[list[str | None]], alpha: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the intent model as a YAML mapping, the raw counts for the comments)."""
    used = {i for seq in seqs for i in seq if i is not None}
    kept = [i for i in model.intents if i.name in used]
    if not any(i.terminal for i in kept):
        raise DataError(f"no train line is labelled with a terminal intent ({', '.join(i.name for i in model.intents if i.terminal)}); "
                        "add a label rule for it (e.g. {intent: BYE, when: last}) so dialogues can end.")
    names = [i.name for i in kept]
    starts = Counter(seq[0] for seq in seqs if seq and seq[0] is not None)
    moves: dict[str, Counter] = {n: Counter() for n in names}
    for seq in seqs:
        for a, b in zip(seq, seq[1:]):
            if a is not None and b is not None:
                moves[a][b] += 1
    transitions = {i.name: rounded({to: moves[i.name][to] + alpha for to in names}) for i in kept if not i.terminal}
    raw: dict[str, Any] = {"intents": {i.name: {"description": i.description, "terminal": i.terminal} for i in kept}}
    if model.label_rules:
        raw["label_rules"] = [{k: v for k, v in (("intent", r.intent), ("when", r.when), ("matches", r.matches)) if v is not None}
                              for r in model.label_rules if r.intent in used]
    raw["start"] = rounded({n: starts[n] for n in names if starts[n]})
    raw["transitions"] = transitions
    if model.modifiers:
        # a dropped intent leaves each modifier's `scale` and `from`; a modifier left with neither target nor row goes
        raw["modifiers"] = [{"when": m.when, "scale": {k: v for k, v in m.scale if k in used}}
                            | ({"from": [r for r in m.rows if r in used]} if m.rows else {})
                            for m in model.modifiers
                            if any(k in used for k, _ in m.scale) and (not m.rows or any(r in used for r in m.rows))]
    if model.aliases:
        raw["aliases"] = {k: v for k, v in model.aliases.items() if v in used}
    dropped = [i.name for i in model.intents if i.name not in used]
    return raw, {"starts": starts, "moves": moves, "dropped": dropped,
                 "lines": sum(len(s) for s in seqs), "unlabelled": sum(i is None for s in seqs for i in s)}


def render(raw: dict[str, Any], counts: dict[str, Any], source: str, alpha: float) -> str:
    head = [f"# generated by scripts/fit_intents.py from {source}; refit the numbers with it",
            "# descriptions, label_rules and modifiers are copied from the scenario's intent model: edit them here, then rerun",
            f"# {counts['lines']} user lines, {counts['unlabelled']} of them unlabelled (no rule holds); transitions add-{alpha} smoothed",
            f"# left out (no train line labelled with them): {', '.join(counts['dropped']) or 'none'}"]
    tail = [f"# raw counts of first user lines (n={sum(counts['starts'].values())} dialogues): "
            + ", ".join(f"{k} {v}" for k, v in sorted(counts["starts"].items())),
            "# raw transition counts per from-intent row (before smoothing):"]
    tail += [f"#   {a}: n={sum(c.values())} (" + ", ".join(f"{b} {n}" for b, n in sorted(c.items())) + ")"
             for a, c in counts["moves"].items() if c]
    body = yaml.safe_dump(raw, sort_keys=False, width=200, allow_unicode=True)
    return "\n".join(head) + "\n" + body + "\n".join(tail) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", required=True, help="shipped scenario name or scenario YAML")
    parser.add_argument("--corpus", required=True, help="the real corpus (path or registered name)")
    parser.add_argument("--out", type=Path, help="default: <scenario folder>/<scenario>.intents.yaml")
    parser.add_argument("--alpha", type=float, default=0.1, help="add-alpha smoothing of the transitions (default 0.1)")
    args = parser.parse_args(argv)
    path = resolve_scenario_path(args.scenario)
    scenario = load_scenario(path)
    corpus = load_corpus(args.corpus, split="train")
    seqs = chains(scenario.intents, corpus.turns)
    raw, counts = fit(scenario.intents, seqs, args.alpha)
    out = args.out or path.parent / f"{scenario.name}.intents.yaml"
    source = f"{args.corpus} train split: {len(seqs)} dialogues"
    out.write_text(render(raw, counts, source, args.alpha), encoding="utf-8")
    print(f"wrote {out}: {len(raw['intents'])} intents from {len(seqs)} dialogues ({counts['lines']} user lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
