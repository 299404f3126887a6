"""Memory at scale: does `simgen generate` stay flat as a run grows, and stream to disk?

It runs the real CLI (`simgen generate`) in a child process and, from this process, samples the
child's resident memory (RSS, psutil) every 0.2 s. It records:

- RSS when 1k, 5k and 10k dialogues are done (read from the run's manifest, which lists every
  finished shard), the peak while generating, the peak while the shards are merged into
  turns.parquet, and the child's `ru_maxrss` (getrusage) as the kernel's own peak;
- that shards stream to disk: how many shard files were on disk at once, and that turns.parquet
  only appears at the end;
- a lazy read of the finished run (`Run.scan()`, polars streaming engine): per-role counts and
  text lengths, the stop reasons, and this process's RSS growth while it runs.

It prints a table and writes JSON (one key per model, so the tiny and embedded runs share a file).

    python benchmarks/scale.py                                   # 10,000 dialogues on the tiny random model
    python benchmarks/scale.py --model embedded -n 1000 --max-turns 4
    python benchmarks/scale.py -n 500 --json outputs/scale-smoke.json

The tiny model is tests/conftest.py's: a random 2-layer Llama (hidden 32) with the SmolLM2
tokenizer, so the run exercises the real code path with a model that costs almost nothing.
What it leaves out: speed (see bench_generate.py) and the realism/consistency checks.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "import sys; from simgen.cli import main; sys.argv[0] = 'simgen'; main()"]
MIB = 1024 * 1024


def tiny_model(folder: Path) -> Path:
    """The random tiny Llama of the tests, built once into `folder`."""
    if not (folder / "config.json").is_file():
        sys.path.insert(0, str(REPO))
        from simgen.models import embedded_model_dir
        from tests.conftest import build_tiny_model

        folder.mkdir(parents=True, exist_ok=True)
        build_tiny_model(folder, embedded_model_dir())
    return folder


class Sampler(threading.Thread):
    """Samples a child's RSS every `interval` s and what its run folder holds."""

    def __init__(self, pid: int, run: Path, n: int, checkpoints: list[int], interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.folder, self.n, self.interval = run, n, interval
        self.pending = sorted(c for c in checkpoints if c <= n)
        self.at: dict[int, dict[str, float]] = {}  # dialogues done -> RSS then
        self.peak = {"generate": 0, "merge": 0}
        self.max_shards_on_disk = 0
        self.turns_seen_before_done = False
        self.samples = 0
        self.stop = threading.Event()

    def done(self) -> int:
        try:
            return json.loads((self.folder / "manifest.json").read_text())["progress"]["dialogues_done"]
        except (OSError, ValueError, KeyError):
            return 0

    def run(self) -> None:  # noqa: D102 - threading.Thread's entry point
        while not self.stop.is_set():
            try:
                rss = self.proc.memory_info().rss
            except psutil.Error:
                break
            done = self.done()
            shards = self.folder / "shards"
            if shards.is_dir():
                self.max_shards_on_disk = max(self.max_shards_on_disk, sum(1 for _ in shards.glob("part-*.parquet")))
            if (self.folder / "turns.parquet").exists() and done < self.n:
                self.turns_seen_before_done = True
            phase = "merge" if done >= self.n else "generate"
            self.peak[phase] = max(self.peak[phase], rss)
            while self.pending and done >= self.pending[0]:
                self.at[self.pending.pop(0)] = {"dialogues_done": done, "rss_mib": rss / MIB, "seconds": time.perf_counter() - self.t0}
            self.samples += 1
            self.stop.wait(self.interval)

    def start(self) -> None:
        self.t0 = time.perf_counter()
        super().start()


def lazy_read(run: Path) -> dict[str, Any]:
    """Aggregate the finished run through `Run.scan()` with polars' streaming engine."""
    import polars as pl

    from simgen.generation.run import load_run

    me = psutil.Process()
    before = me.memory_info().rss
    t0 = time.perf_counter()
    scan = load_run(run).scan()
    by_role = (
        scan.group_by("role")
        .agg(pl.len().alias("turns"), pl.col("text").str.len_chars().mean().alias("mean_chars"),
             pl.col("n_tokens").sum().alias("tokens"))
        .sort("role")
        .collect(engine="streaming")
    )
    dialogues = scan.select(pl.col("dialogue_id").n_unique()).collect(engine="streaming").item()
    stops = (scan.filter(pl.col("stop_reason").is_not_null()).group_by("stop_reason").len()
             .sort("stop_reason").collect(engine="streaming"))
    return {
        "dialogues": dialogues,
        "by_role": by_role.to_dicts(),
        "stop_reasons": dict(stops.iter_rows()),
        "seconds": round(time.perf_counter() - t0, 3),
        "reader_rss_growth_mib": round((me.memory_info().rss - before) / MIB, 1),
        "turns_parquet_mib": round((run / "turns.parquet").stat().st_size / MIB, 2),
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    model = str(tiny_model(args.tiny_dir)) if args.model == "tiny" else args.model
    out = args.out or REPO / "outputs" / "scale" / f"{Path(args.model).name}-n{args.n}"
    if out.exists():  # this script's own previous run
        shutil.rmtree(out)
    cmd = [*CLI, "generate", "-n", str(args.n), "--seed", str(args.seed), "--model", model, "--out", str(out),
           "--batch-size", str(args.batch_size), "--max-turns", str(args.max_turns), "--quiet",
           *(["--user-max-new-tokens", str(args.user_max_new_tokens)] if args.user_max_new_tokens else []),
           *(["--assistant-max-new-tokens", str(args.assistant_max_new_tokens)] if args.assistant_max_new_tokens else [])]
    print("$", " ".join(cmd[3:]), flush=True)
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, cwd=REPO)
    sampler = Sampler(child.pid, out, args.n, args.checkpoints)
    sampler.start()
    rc = child.wait()
    sampler.stop.set()
    sampler.join()
    if rc != 0:
        raise SystemExit(f"simgen generate exited with {rc}")
    seconds = time.perf_counter() - t0
    manifest = json.loads((out / "manifest.json").read_text())
    return {
        "model": args.model,
        "command": "simgen " + " ".join(cmd[3:]).replace(model, args.model if args.model != "tiny" else "TINY_MODEL_DIR"),
        "n": args.n,
        "batch_size": args.batch_size,
        "max_turns": args.max_turns,
        "shards": manifest["progress"]["n_shards"],
        "turns": manifest["counts"]["turns"],
        "tokens": manifest["counts"]["tokens"],
        "wall_seconds": round(seconds, 1),
        "load_seconds": manifest["timings"].get("load_seconds"),
        "rss_at": {str(k): {kk: round(vv, 1) for kk, vv in v.items()} for k, v in sampler.at.items()},
        "peak_rss_generate_mib": round(sampler.peak["generate"] / MIB, 1),
        "peak_rss_merge_mib": round(sampler.peak["merge"] / MIB, 1),
        "ru_maxrss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "rss_samples": sampler.samples,
        "max_shard_files_on_disk": sampler.max_shards_on_disk,
        "turns_parquet_before_last_shard": sampler.turns_seen_before_done,
        "shards_left_after_merge": (out / "shards").exists(),
        "lazy_read": lazy_read(out),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
    }


def table(r: dict[str, Any]) -> str:
    rows = ["| dialogues done | RSS (MiB) | seconds |", "| --- | --- | --- |"]
    rows += [f"| {int(k):,} | {v['rss_mib']:.0f} | {v['seconds']:.0f} |" for k, v in r["rss_at"].items()]
    lazy = r["lazy_read"]
    return "\n".join([
        f"{r['model']}: {r['n']:,} dialogues, {r['turns']:,} turns, {r['shards']} shards of {r['batch_size']}, {r['wall_seconds']:.0f} s",
        *rows,
        f"peak RSS: generating {r['peak_rss_generate_mib']:.0f} MiB, merging {r['peak_rss_merge_mib']:.0f} MiB, "
        f"ru_maxrss {r['ru_maxrss_mib']:.0f} MiB",
        f"streaming: up to {r['max_shard_files_on_disk']} shard files on disk; turns.parquet before the last shard: "
        f"{r['turns_parquet_before_last_shard']}; shards left after the merge: {r['shards_left_after_merge']}",
        f"lazy read of {lazy['turns_parquet_mib']} MiB turns.parquet: {lazy['dialogues']:,} dialogues in {lazy['seconds']} s, "
        f"reader RSS +{lazy['reader_rss_growth_mib']} MiB",
    ])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny", help="tiny (the tests' random 2-layer Llama), embedded, or a model folder")
    p.add_argument("-n", type=int, default=10_000, help="dialogues")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-turns", type=int, default=6)
    p.add_argument("--user-max-new-tokens", type=int, default=None, help="default: the CLI's")
    p.add_argument("--assistant-max-new-tokens", type=int, default=None, help="default: the CLI's")
    p.add_argument("--checkpoints", type=lambda s: [int(x) for x in s.split(",")], default=[1000, 5000, 10000],
                   help="dialogue counts at which RSS is recorded")
    p.add_argument("--out", type=Path, default=None, help="run folder (default outputs/scale/MODEL-nN; replaced)")
    p.add_argument("--tiny-dir", type=Path, default=REPO / "outputs" / "scale" / "tiny-model")
    p.add_argument("--json", type=Path, default=REPO / "outputs" / "scale.json", help="results, one key per model")
    args = p.parse_args()
    result = measure(args)
    print(table(result))
    existing = json.loads(args.json.read_text()) if args.json.is_file() else {}
    existing[Path(args.model).name] = result
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(existing, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
