"""Fit a scenario's intent guard (simgen/intent_guard.py) on the train split of a real corpus.

Reads the corpus through simgen.corpora (a file, a corpus folder, a run folder or a registered
name), keeps its `train` split (validation and test stay unseen: the sim-to-real benchmark scores
against test), labels each user line with the scenario's intent (the intent model's `aliases`; the
trailing thank-you/goodbye lines of a dialogue as its terminal intent, as
scripts/fit_iard_intents.py counts them; where the intent model has `label_rules`, a line without a
label of its own gets the first rule that holds, as `simgen realism` labels a corpus such as
chitchat-dataset, which has none) and writes `profiles/<scenario>.intent-guard.npz`: hashed
feature buckets, idf, weights and thresholds, never text. The same corpus gives the same arrays.
Name the file in the scenario (`intent_guard: <file>`) to use it.

    python scripts/fit_intent_guard.py --scenario movie-recommendation --corpus ../shared/data/iard
    python scripts/fit_intent_guard.py --scenario chitchat --corpus chitchat
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from simgen.corpora import CLOSING_ACTS, load_corpus  # noqa: E402
from simgen.intent_guard import QUANTILE, IntentGuard, labelled_user_lines  # noqa: E402
from simgen.scenario import load_scenario, resolve_scenario_path  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", required=True, help="shipped scenario name or scenario YAML")
    parser.add_argument("--corpus", required=True, help="the real corpus (path or registered name), with an `intent` column or labelled by the intent model's `label_rules`")
    parser.add_argument("--out", type=Path, help="default: <scenario folder>/<scenario>.intent-guard.npz")
    parser.add_argument("--quantile", type=float, default=QUANTILE, help=f"share of real lines that miss their own intent (default {QUANTILE})")
    args = parser.parse_args(argv)
    path = resolve_scenario_path(args.scenario)
    intents = load_scenario(path).intents
    terminal = next((i.name for i in intents.intents if i.terminal), None)
    corpus = load_corpus(args.corpus, split="train")
    turns = intents.label_lines(corpus.turns) if intents.label_rules else corpus.turns
    lines = labelled_user_lines(turns, intents.label_of, closing=terminal, closing_acts=CLOSING_ACTS)
    source = f"{corpus.name} train split: {corpus.n_dialogues} dialogues, {lines.height} labelled user lines"
    guard = IntentGuard.fit(lines["text"].to_list(), lines["label"].to_list(), lines["dialogue_id"].to_list(),
                            quantile=args.quantile, source=source)
    out = guard.save(args.out or path.parent / f"{path.stem}.intent-guard.npz")
    print(f"wrote {out} ({out.stat().st_size / 1e3:.0f} kB): {source}; out-of-fold accuracy {guard.meta['out_of_fold_accuracy']}",
          file=sys.stderr)
    for c in guard.classes:
        print(f"  {c:6s} {guard.meta['lines_per_intent'][c]:5d} lines, threshold p >= {guard.thresholds[c]:.3f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
