"""Ray's overhead: the same run on one process and on a local Ray cluster of single-CPU workers, one script.

Every row generates the same dialogues (scenario, seed, model, settings; the default model unless
--model), and the script checks that their turns.parquet are byte-identical:

- local:  `simgen.generate` in this process, torch on `--cpus` threads;
- ray:    `simgen.generate(..., ray=RayConfig(workers=--cpus, cpus=1))` on a Ray cluster this script
          starts (`ray.init(num_cpus=--cpus)`, on this machine): each worker loads the model once and
          makes whole shards;
- local1: this process on 1 thread; ray1: one Ray worker of 1 CPU. ray1 / local1 is Ray's own
          overhead (the same single core either way); ray / local is what the same cores give as
          processes rather than threads.

The per-worker rate (from ray1 when run, else ray) gives the paper estimate of single-CPU workers
per million dialogues an hour (rate x workers, no coordination cost beyond what the run measured).
Wall times include loading the model; `steady` leaves the load out.

    python benchmarks/bench_ray.py                         # 64 dialogues x 4 turns, the issue's work
    python benchmarks/bench_ray.py --rows local1,ray1      # Ray's own overhead: one worker against one thread
    python benchmarks/bench_ray.py -n 8 --max-turns 2      # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("--max-turns", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=16, help="dialogues per shard (every row)")
    ap.add_argument("--cpus", type=int, default=2, help="cores: local torch threads = Ray workers of 1 CPU")
    ap.add_argument("--model", default=None, help="default: the scenario's simulator (the default job)")
    ap.add_argument("--scenario", default="movie-recommendation")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rows", default="local,ray",
                    help="local (--cpus threads), ray (--cpus workers of 1 CPU), local1 (1 thread), ray1 (1 worker of 1 CPU): "
                         "ray1/local1 is Ray's own overhead, the others what the same cores give either way")
    ap.add_argument("--json", type=Path, default=Path("outputs/bench_ray.json"))
    args = ap.parse_args()

    import ray
    import torch

    import simgen
    from simgen.cluster import RayConfig

    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    # refill 1: each shard is a unit of its own, so 4 shards spread over the workers (with the default
    # --refill 4 they would be one stream, on one worker)
    settings = dict(scenario=args.scenario, n=args.n, seed=args.seed, max_turns=args.max_turns, batch_size=args.batch_size,
                    refill=1, model=args.model, progress=True)
    wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
    shapes = {"local": (1, args.cpus), "ray": (args.cpus, 1), "local1": (1, 1), "ray1": (1, 1)}  # (workers, threads each)
    rows, turns = {}, {}
    try:
        if any(r.startswith("ray") for r in wanted):
            ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        for name in wanted:
            workers, threads = shapes[name]
            torch.set_num_threads(threads)
            on = RayConfig(address="auto", workers=workers, cpus=1) if name.startswith("ray") else None
            t = time.perf_counter()
            run = simgen.generate(out=work / name, ray=on, **settings)
            rows[name] = _row(run.manifest, time.perf_counter() - t, workers=workers, threads=threads)
            turns[name] = (run.path / "turns.parquet").read_bytes()
        if ray.is_initialized():
            ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    out = {
        "work": {k: v for k, v in vars(args).items() if k != "json"} | {"json": str(args.json)},
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__,
                    "ray": ray.__version__},
        "rows": rows,
        "identical_turns": len(set(turns.values())) == 1,
    }
    for a, b in (("ray", "local"), ("ray1", "local1")):
        if a in rows and b in rows:
            out[f"{a}_over_{b}_wall"] = round(rows[a]["wall_s"] / rows[b]["wall_s"], 3)
            out[f"{a}_over_{b}_steady"] = round(rows[a]["steady_s"] / rows[b]["steady_s"], 3)
    ray_row = rows.get("ray1") or rows.get("ray")
    if ray_row:
        per_worker = ray_row["dialogues_per_hour_steady"] / ray_row["workers"]
        out["per_worker_dialogues_per_hour"] = round(per_worker, 1)
        out["workers_for_1M_dialogues_per_hour"] = int(-(-1_000_000 // per_worker))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(f"{'row':<6} {'wall s':>8} {'steady s':>9} {'load s':>7} {'tok/s':>8} {'dlg/h steady':>13}")
    for name, r in rows.items():
        print(f"{name:<6} {r['wall_s']:>8.1f} {r['steady_s']:>9.1f} {r['load_s']:>7.1f} {r['tokens_per_s']:>8.1f} "
              f"{r['dialogues_per_hour_steady']:>13.0f}")
    print(f"identical turns.parquet: {out['identical_turns']}; "
          + "; ".join(f"{k} {v:.2f}x" for k, v in out.items() if "_over_" in k)
          + (f"; per worker {out['per_worker_dialogues_per_hour']:.0f} dialogues/h -> {out['workers_for_1M_dialogues_per_hour']} "
             "single-CPU workers for a million dialogues an hour" if ray_row else "")
          + f"; wrote {args.json}")


def _row(manifest: dict, wall: float, *, workers: int, threads: int) -> dict:
    load = manifest["timings"].get("load_seconds") or 0.0
    steady = wall - load
    tokens = manifest["counts"]["tokens"]
    return {"wall_s": round(wall, 2), "load_s": round(load, 2), "steady_s": round(steady, 2), "tokens": tokens,
            "tokens_per_s": round(tokens / steady, 1), "dialogues": manifest["counts"]["dialogues"],
            "dialogues_per_hour_steady": round(manifest["counts"]["dialogues"] / steady * 3600, 1),
            "workers": workers, "threads_per_worker": threads}


if __name__ == "__main__":
    main()
