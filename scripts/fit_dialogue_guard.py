"""Fit a scenario's dialogue guard (simgen/dialogue_guard.py): whole dialogues of a real corpus's
train split against the dialogues of a run of the scenario's own simulator.

The run is the simulator's side of the classifier, so it must be what the guard will judge: a
`simgen generate` run of this scenario as it will run (its simulator, redraws and line guards),
with the dialogue guard's redraws off (`--dialogue-redraws 0`: a run written with them is already
filtered, and the script refuses one), and a seed the sim-to-real benchmark does not use (it
scores seed 0). The corpus's validation and test splits stay unseen. Writes
`profiles/<scenario>.dialogue-guard.npz` (hashed feature buckets, idf, weights, trees, the
threshold, and which corpus, run and simulator they came from; never text). Name the file in the
scenario (`dialogue_guard: ...`) to use it.

    simgen generate --scenario movie-recommendation -n 300 --seed 1 --dialogue-redraws 0 --out outputs/guard/dialogue-fit
    python scripts/fit_dialogue_guard.py --scenario movie-recommendation --corpus ../shared/data/iard --run outputs/guard/dialogue-fit
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "scripts"))
import yaml  # noqa: E402
from fit_realism_guard import scenario_run, simulator_of  # noqa: E402

from simgen.corpora import load_corpus  # noqa: E402
from simgen.dialogue_guard import QUANTILE, DialogueGuard, dialogues_of  # noqa: E402
from simgen.errors import DataError, RunError  # noqa: E402
from simgen.scenario import resolve_scenario_path  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", required=True, help="shipped scenario name or scenario YAML")
    parser.add_argument("--corpus", required=True, help="the real corpus (path or registered name); its train split is read")
    parser.add_argument("--run", required=True, type=Path, help="a run of the scenario's simulator, written with --dialogue-redraws 0")
    parser.add_argument("--out-dir", type=Path, help="default: the scenario file's folder")
    parser.add_argument("--quantile", type=float, default=QUANTILE, help=f"share of real dialogues that would miss (default {QUANTILE})")
    args = parser.parse_args(argv)
    path = resolve_scenario_path(args.scenario)
    name = yaml.safe_load(path.read_text()).get("scenario") or path.stem  # not load_scenario: it wants the file this writes
    try:
        run = scenario_run(args.run, name)
        manifest = run.manifest
        if manifest.get("config", {}).get("dialogue_redraws") and manifest.get("scenario", {}).get("dialogue_guard"):
            raise DataError(f"{args.run}: written with the dialogue guard's redraws on, so its dialogues are already filtered; generate "
                            "the run again with --dialogue-redraws 0.")
        corpus = load_corpus(args.corpus, split="train")
        source = (f"{corpus.name} train split: {corpus.n_dialogues} dialogues; against {run.turns['dialogue_id'].n_unique()} "
                  f"dialogues of {args.run}")
        about = {"run": str(args.run), "run_seed": manifest.get("seed"), **simulator_of(manifest, "user")}
        guard = DialogueGuard.fit(dialogues_of(corpus.turns), dialogues_of(run.turns), quantile=args.quantile, source=source, about=about)
        folder = args.out_dir or path.parent
        folder.mkdir(parents=True, exist_ok=True)
        out = guard.save(folder / f"{path.stem}.dialogue-guard.npz")
        print(f"wrote {out} ({out.stat().st_size / 1e3:.0f} kB): {source}; out-of-fold AUC {guard.meta['out_of_fold_auc']}; "
              f"{guard.meta['simulated_passing']:.0%} of the run's dialogues pass (score >= {guard.threshold:.3f})", file=sys.stderr)
    except (DataError, RunError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
