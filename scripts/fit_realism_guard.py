"""Fit a scenario's realism guards (simgen/realism_guard.py): per side, people's lines from the
train split of a real corpus against the lines of a run of the scenario's own simulator.

The run is the simulator's side of the classifier, so it must be what the guard will judge: a
`simgen generate` run of this scenario with its default simulator, redraws and other guards as
they will run, the realism guard off (`--no-realism-guard`; a guarded run's lines are already
filtered, and the script refuses one), and a seed the sim-to-real benchmark does not use (it scores
seed 0). The corpus's validation and test splits stay unseen. Writes
`profiles/<scenario>.realism-guard.<side>.npz` (hashed feature buckets, idf, weights, the
threshold, and which corpus, run and simulator they came from; never text). Name the files in the
scenario (`realism_guard: {user: ..., assistant: ...}`) to use them.

    simgen generate --scenario movie-recommendation -n 200 --seed 1 --no-realism-guard --out outputs/guard/movie-fit
    python scripts/fit_realism_guard.py --scenario movie-recommendation --corpus ../shared/data/iard --run outputs/guard/movie-fit

`--run` may be repeated to fit on several such runs of the same simulator (more of its lines).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
import polars as pl  # noqa: E402
import yaml  # noqa: E402

from simgen.corpora import load_corpus  # noqa: E402
from simgen.errors import DataError, RunError  # noqa: E402
from simgen.generation.run import Run, load_run  # noqa: E402
from simgen.realism_guard import QUANTILE, SIDES, RealismGuard  # noqa: E402
from simgen.scenario import resolve_scenario_path  # noqa: E402


def scenario_run(path: Path, scenario: str) -> Run:
    """The run in `path` (`load_run`: a complete run folder); a DataError naming it when it is a run
    of another scenario. What this script and fit_dialogue_guard.py check first."""
    run = load_run(path)
    recorded = run.manifest.get("scenario", {})
    if recorded.get("name") != scenario:
        raise DataError(f"{path}: a run of scenario {recorded.get('name')!r}, not {scenario!r}; generate one of {scenario!r}.")
    return run


def run_lines(path: Path, scenario: str) -> tuple[pl.DataFrame, dict]:
    """The run's turns and its manifest (`scenario_run`); a DataError naming the run when it cannot
    be the simulator's side."""
    run = scenario_run(path, scenario)
    manifest = run.manifest
    recorded = manifest.get("scenario", {})
    if manifest.get("config", {}).get("realism_guard") and recorded.get("realism_guard"):
        raise DataError(f"{path}: written with the realism guard on, so its lines are already filtered; generate the run again "
                        "with --no-realism-guard.")
    return run.turns, manifest


def runs_lines(paths: list[Path], scenario: str) -> tuple[pl.DataFrame, list[dict]]:
    """`run_lines` of each run, their turns in one frame (dialogue ids prefixed by the run's index
    where there are several, so no two dialogues share one) and their manifests; a DataError when
    the runs were written by different simulators (the guard learns one simulator's tells)."""
    frames, manifests = [], []
    for i, path in enumerate(paths):
        turns, manifest = run_lines(path, scenario)
        if manifests and any(simulator_of(manifest, s) != simulator_of(manifests[0], s) for s in SIDES):
            raise DataError(f"{path}: written by another simulator than {paths[0]} ({simulator_of(manifest, 'user')['simulator']} "
                            f"against {simulator_of(manifests[0], 'user')['simulator']}); fit on runs of one simulator.")
        if len(paths) > 1:
            turns = turns.with_columns((pl.lit(f"{i}:") + pl.col("dialogue_id").cast(pl.String)).alias("dialogue_id"))
        frames.append(turns)
        manifests.append(manifest)
    return pl.concat(frames, how="diagonal_relaxed"), manifests


def simulator_of(manifest: dict, side: str) -> dict[str, str | None]:
    """The model that wrote the run's `side`: its name, and the sha256 of its `simgen tune` card
    where it is a tuned folder (what tests/test_realism_guard.py checks against the shipped simulator)."""
    model = manifest.get("backend", {}).get(side, {}).get("model", {}).get("id")
    card = Path(model) / "simgen_tune.json" if model else None
    return {"simulator": Path(model).name if model else None,
            "simulator_card_sha256": hashlib.sha256(card.read_bytes()).hexdigest() if card and card.is_file() else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", required=True, help="shipped scenario name or scenario YAML")
    parser.add_argument("--corpus", required=True, help="the real corpus (path or registered name); its train split is read")
    parser.add_argument("--run", required=True, type=Path, action="append",
                        help="a run of the scenario's simulator, written with --no-realism-guard (repeat it to fit on several runs "
                             "of the same simulator: more of its lines)")
    parser.add_argument("--sides", default=",".join(SIDES), help="comma-separated sides to fit (default: user,assistant)")
    parser.add_argument("--out-dir", type=Path, help="default: the scenario file's folder")
    parser.add_argument("--quantile", type=float, default=QUANTILE, help=f"share of real lines that would miss (default {QUANTILE})")
    args = parser.parse_args(argv)
    path = resolve_scenario_path(args.scenario)
    name = yaml.safe_load(path.read_text()).get("scenario") or path.stem  # not load_scenario: it wants the files this writes
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if not sides or set(sides) - set(SIDES):
        parser.error(f"--sides: expected some of {', '.join(SIDES)}, got {args.sides!r}")
    try:
        turns, manifests = runs_lines(args.run, name)
        corpus = load_corpus(args.corpus, split="train")
        for side in sides:
            real = corpus.turns.filter((pl.col("role") == side) & (pl.col("text").str.strip_chars() != ""))
            synthetic = turns.filter((pl.col("role") == side) & (pl.col("text").str.strip_chars() != ""))
            if real.height < 10 or synthetic.height < 10:
                raise DataError(f"{args.corpus if real.height < 10 else ', '.join(map(str, args.run))}: {min(real.height, synthetic.height)} {side} lines; "
                                "the realism guard needs at least 10 on each side.")
            seeds = [m.get("seed") for m in manifests]
            about = {"side": side, "run": ",".join(map(str, args.run)), "run_seed": seeds[0] if len(seeds) == 1 else seeds,
                     "run_dialogues": sum(m.get("counts", {}).get("dialogues") or 0 for m in manifests),
                     **simulator_of(manifests[0], side)}
            source = (f"{corpus.name} train split: {corpus.n_dialogues} dialogues, {real.height} {side} lines; against {synthetic.height} "
                      f"lines of {', '.join(map(str, args.run))}")
            guard = RealismGuard.fit(real["text"].to_list(), real["dialogue_id"].cast(pl.String).to_list(), synthetic["text"].to_list(),
                                     synthetic["dialogue_id"].cast(pl.String).to_list(), quantile=args.quantile, source=source, about=about)
            folder = args.out_dir or path.parent
            folder.mkdir(parents=True, exist_ok=True)
            out = guard.save(folder / f"{path.stem}.realism-guard.{side}.npz")
            print(f"wrote {out} ({out.stat().st_size / 1e3:.0f} kB): {source}; out-of-fold accuracy "
                  f"{guard.meta['out_of_fold_accuracy']}; a line passes at p(human) >= {guard.threshold:.3f}", file=sys.stderr)
    except (DataError, RunError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
