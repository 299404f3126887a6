"""Benchmark and calibration table for `simgen realism`.

Speed (default): two disjoint sets of real chitchat dialogues, each with N user turns (default
10,000, about 2N turns in all), compared with the full default check (three discriminators at two
levels, stacking, attribute matching, MAUVE-style score, JSON + HTML). Run twice: cold (empty
embedding cache) and warm (both corpora cached). The peer is the embedding floor: encoding the same
texts with sentence-transformers, the one step no implementation can skip (the cold run's embed
stage). A matmul probe
prints the machine's speed at run time, since a shared 2-core machine varies.

    python benchmarks/bench_realism.py                      # speed, 10k vs 10k user turns
    python benchmarks/bench_realism.py --user-turns 2000    # a quicker look
    python benchmarks/bench_realism.py --calibrate          # the README calibration table

Nothing here downloads anything; chitchat-dataset and IARD (../shared/data/iard) are local.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]


def probe_gflops() -> float:
    a = np.random.default_rng(0).random((1000, 1000))
    t = time.perf_counter()
    for _ in range(10):
        a @ a
    return 10 * 2e9 / (time.perf_counter() - t) / 1e9


def chitchat_sides(user_turns: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Two disjoint sets of whole chitchat dialogues, each with at least `user_turns` user turns."""
    from simgen.corpora import load_corpus

    turns = load_corpus("chitchat").turns
    ids = turns["dialogue_id"].unique().sort().sample(fraction=1.0, seed=0, shuffle=True).to_list()
    per = dict(turns.filter(pl.col("role") == "user").group_by("dialogue_id").len().iter_rows())
    sides: list[list[str]] = [[], []]
    counts = [0, 0]
    for d in ids:
        s = 0 if counts[0] <= counts[1] else 1
        if counts[s] >= user_turns:
            s = 1 - s
            if counts[s] >= user_turns:
                break
        sides[s].append(d)
        counts[s] += per.get(d, 0)
    return tuple(turns.filter(pl.col("dialogue_id").is_in(side)) for side in sides)  # type: ignore[return-value]


def speed(user_turns: int) -> dict:
    from simgen.realism import RealismConfig, compare

    syn, ref = chitchat_sides(user_turns)
    print(f"synthetic: {syn['dialogue_id'].n_unique()} dialogues, {syn.height} turns, "
          f"{syn.filter(pl.col('role') == 'user').height} user turns; reference: {ref['dialogue_id'].n_unique()} "
          f"dialogues, {ref.height} turns, {ref.filter(pl.col('role') == 'user').height} user turns", flush=True)
    print(f"machine probe: {probe_gflops():.0f} GFLOP/s (float64 matmul)", flush=True)
    result: dict = {"user_turns_per_side": user_turns}
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
        os.environ["SIMGEN_CACHE"] = cache
        for run in ("cold", "warm"):
            t = time.perf_counter()
            report = compare(syn, ref, out, config=RealismConfig())
            wall = time.perf_counter() - t
            result[run] = {"wall_s": round(wall, 1), **{k: v for k, v in report["timing_s"].items() if k != "total"}}
            print(f"{run}: {wall:.1f} s  stages {report['timing_s']}  AUC {report['auc']:.3f} {report['auc_ci']}", flush=True)
    # the peer: sentence-transformers encoding the same texts, the one step no implementation can
    # skip; measured as the cold run's embed stage (the same encode call, plus a cache write)
    result["embedding_floor_s"] = result["cold"]["embed"]
    print(f"peer (embedding floor, cold embed stage): {result['embedding_floor_s']} s; everything else: "
          f"{result['cold']['wall_s'] - result['embedding_floor_s']:.1f} s cold, {result['warm']['wall_s']:.1f} s warm; "
          f"cold/floor = {result['cold']['wall_s'] / max(result['embedding_floor_s'], 1e-9):.2f}x", flush=True)
    print(f"machine probe after: {probe_gflops():.0f} GFLOP/s", flush=True)
    return result


def calibrate() -> list[dict]:
    """Real vs real halves and real vs distorted real, on chitchat and IARD (as in the tests)."""
    from simgen.corpora import load_corpus
    from simgen.realism import RealismConfig, compare
    from simgen.realism.distort import shuffle_turns, split_halves, swap_roles, truncate_text

    chit = load_corpus("chitchat").turns
    ids = chit["dialogue_id"].unique().sort().sample(600, seed=0, shuffle=True)
    chit = chit.filter(pl.col("dialogue_id").is_in(ids.implode()) & (pl.col("turn") < 10))
    iard_dir = REPO.parent / "shared" / "data" / "iard"
    iard = pl.concat([load_corpus(f).turns for f in sorted(iard_dir.glob("formatted_IARD_annotated_*.json"))])
    cfg = RealismConfig(n_boot=500, n_perm=500, seed=0)
    rows = []
    for name, turns in (("chitchat (600 dialogues, first 10 turns)", chit), ("IARD (336 dialogues)", iard)):
        a, b = split_halves(turns, seed=0)
        for case, other in (("real vs real", b), ("shuffled turns", shuffle_turns(b)),
                            ("roles swapped", swap_roles(b)), ("truncated text", truncate_text(b))):
            r = compare(other, a, config=cfg)
            max_jsd_lo = max(lab["jsd"]["ci"][0] for at in r["attributes"].values() for lab in at["labellers"])
            row = {"corpus": name, "case": case, "auc": r["auc"], "auc_ci": r["auc_ci"],
                   "per_discriminator": {k: v["dialogue"]["auc"] for k, v in r["discriminators"].items()},
                   "max_jsd_ci_low": max_jsd_lo, "mauve": r["mauve"]["mauve"], "timing_s": r["timing_s"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| corpus | case | ensemble AUC (95% CI) | tfidf | embedding | style | largest JSD CI low | MAUVE |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        p = r["per_discriminator"]
        print(f"| {r['corpus']} | {r['case']} | {r['auc']:.3f} ({r['auc_ci'][0]:.3f}-{r['auc_ci'][1]:.3f}) | "
              f"{p['tfidf']:.3f} | {p['embedding']:.3f} | {p['style']:.3f} | {r['max_jsd_ci_low']:.4f} | {r['mauve']:.3f} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--user-turns", type=int, default=10_000, help="user turns per side")
    ap.add_argument("--calibrate", action="store_true", help="print the calibration table instead")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.calibrate:
        calibrate()
    else:
        print(json.dumps(speed(args.user_turns)))


if __name__ == "__main__":
    main()
