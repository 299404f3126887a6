"""Memory of the checks and exports on a big run: do they read it lazily?

Generating a million turns takes days on 2 CPU cores, so this builds a big run from a real one:
the dialogues of a finished run (default: scale.py's 1,000 embedded-model dialogues) repeated
under new dialogue ids until the run holds `--turns` turns, the words of each line shuffled in
every copy after the first, so copies are neither equal nor near-duplicates (the export's duplicate
search would otherwise face 250 near-copies of every dialogue). The manifest is the source run's,
with the counts changed.

Each step then runs in its own child process, and the child's peak RSS (`ru_maxrss` from wait4)
is compared with a peer that reads the same run eagerly:

- load: `Run.scan()` aggregations (per-role counts and mean lengths) vs `Run.turns` (the whole frame);
- realism: the corpus read by `simgen realism --max-dialogues K` (a sample on the scan, the
  columns it uses) vs reading the whole run, then sampling it;
- consistency: `simgen consistency --chunk-dialogues 500` vs one chunk holding every scored
  dialogue (what reading the run whole does), on the first `--score` dialogues; the judge is the
  tests' tiny random Llama, since what is measured is what the check holds, not what it judges;
- export: `simgen export hub` of the big run, with and without duplicate removal, reading 20,000
  dialogues at a time (5,000 dialogues' text at a time for the duplicate search) vs one chunk
  holding the whole run.

    python benchmarks/scale_checks.py                          # 1,000,000 turns from outputs/scale/embedded-n1000
    python benchmarks/scale_checks.py --turns 200000 --score 1000,4000

It prints a table and writes outputs/scale_checks.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl

REPO = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024
sys.path.insert(0, str(REPO / "benchmarks"))
from scale import tiny_model  # noqa: E402  (the tests' tiny model, built once)


def build_big_run(source: Path, out: Path, turns: int) -> dict[str, Any]:
    """Repeat `source`'s dialogues under new ids into `out` until it holds `turns` turns (streamed)."""
    base = pl.scan_parquet(source / "turns.parquet")
    per_copy = base.select(pl.len()).collect().item()
    copies = -(-turns // per_copy)
    if out.exists():
        shutil.rmtree(out)
    (out / "parts").mkdir(parents=True)
    for c in range(copies):  # one file per copy, so no step here holds more than the source run
        base.with_columns(
            (pl.col("dialogue_id") + pl.lit(f"-c{c:05d}")).alias("dialogue_id"),
            # copy 0 as it was; later copies shuffle each line's words, so no copy is a near-duplicate of another
            (pl.col("text") if c == 0 else
             pl.col("text").str.split(" ").list.sample(fraction=1.0, shuffle=True, seed=c).list.join(" ")).alias("text"),
        ).sink_parquet(out / "parts" / f"{c:05d}.parquet")
    pl.scan_parquet(sorted((out / "parts").glob("*.parquet"))).head(turns).sink_parquet(out / "turns.parquet", compression="zstd")
    shutil.rmtree(out / "parts")
    manifest = json.loads((source / "manifest.json").read_text())
    stats = pl.scan_parquet(out / "turns.parquet").select(pl.col("dialogue_id").n_unique().alias("dialogues"), pl.len().alias("turns"),
                                                          (pl.col("role") == "user").sum().alias("user_turns")).collect().row(0, named=True)
    manifest["counts"] = {**manifest["counts"], **stats}
    manifest["note"] = f"built by benchmarks/scale_checks.py: {copies} copies of {source}"
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return {**stats, "mib": round((out / "turns.parquet").stat().st_size / MIB, 1), "copies": copies}


# The child's own peak RSS: VmHWM of its address space. (ru_maxrss would not do: exec keeps the
# high-water mark of the forked parent, which holds the big run's polars buffers here.)
PEAK = "\nprint('VmHWM', next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))"


def child(code: str, *args: str) -> dict[str, Any]:
    """Run `code` in a fresh interpreter; its peak RSS (VmHWM at exit) and seconds."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code + PEAK, *args], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    *lines, peak = proc.stdout.strip().splitlines()
    return {"peak_rss_mib": round(int(peak.split()[1]) / 1024, 1), "seconds": round(time.perf_counter() - t0, 2),
            "out": lines[-1] if lines else ""}


IMPORTS = "import sys, polars as pl; from simgen.generation.run import load_run; from simgen.corpora import load_corpus; "
LOAD_LAZY = IMPORTS + """
r = load_run(sys.argv[1]).scan()
print(r.group_by("role").agg(pl.len(), pl.col("text").str.len_chars().mean()).collect(engine="streaming").height)
"""
LOAD_EAGER = IMPORTS + """
t = load_run(sys.argv[1]).turns
print(t.group_by("role").agg(pl.len(), pl.col("text").str.len_chars().mean()).height)
"""
REALISM_LAZY = IMPORTS + """
c = load_corpus(sys.argv[1], max_dialogues=int(sys.argv[2]), columns=("intent",))
print(c.n_dialogues)
"""
REALISM_EAGER = IMPORTS + """
from simgen.corpora import sample_ids
t = load_corpus(sys.argv[1]).turns
print(t.filter(pl.col("dialogue_id").is_in(sample_ids(t["dialogue_id"], int(sys.argv[2]), 0).implode()))["dialogue_id"].n_unique())
"""
CONSISTENCY = """
import sys
from simgen.consistency import ConsistencyConfig, check_run
r = check_run(sys.argv[1], "llm:" + sys.argv[2], out=sys.argv[3],
              config=ConsistencyConfig(qa=False, axis=False, max_dialogues=int(sys.argv[4]), chunk_dialogues=int(sys.argv[5])))
print(r["overall"]["lines"])
"""
EXPORT = """
import sys
import simgen.export.hub, simgen.export.splits
from simgen.export.splits import SplitConfig
if sys.argv[3] == "whole":  # the peer: one chunk holding the whole run
    simgen.export.splits.DEDUP_CHUNK = simgen.export.hub.EXPORT_CHUNK = 10**9
print(simgen.export.hub.export_hub(sys.argv[1], sys.argv[2], split=SplitConfig(dedup=sys.argv[4] == "dedup"))["selection"]["kept"])
"""
BASELINE = IMPORTS + "print(1)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", type=Path, default=REPO / "outputs" / "scale" / "embedded-n1000", help="finished run to repeat")
    p.add_argument("--turns", type=int, default=1_000_000)
    p.add_argument("--sample", type=int, default=2000, help="realism --max-dialogues")
    p.add_argument("--score", default="1000,4000,16000", help="dialogues scored by the consistency check, comma-separated")
    p.add_argument("--work", type=Path, default=REPO / "outputs" / "scale" / "big")
    p.add_argument("--json", type=Path, default=REPO / "outputs" / "scale_checks.json")
    args = p.parse_args()
    if not (args.source / "turns.parquet").is_file():
        raise SystemExit(f"{args.source} is not a finished run; make it with: python benchmarks/scale.py --model embedded -n 1000 ...")

    t0 = time.perf_counter()
    big = args.work / "run"
    result: dict[str, Any] = {"source": str(args.source.relative_to(REPO)) if args.source.is_relative_to(REPO) else str(args.source)}
    result["big_run"] = build_big_run(args.source, big, args.turns) | {"build_seconds": round(time.perf_counter() - t0, 1)}
    print(f"big run: {result['big_run']}", flush=True)
    rows: list[tuple[str, dict, dict | None]] = []

    def measure(name: str, lazy: tuple, eager: tuple | None) -> None:
        a = child(*lazy)
        b = child(*eager) if eager else None
        rows.append((name, a, b))
        result[name] = {"lazy": a, "eager": b}
        print(f"{name}: lazy {a}" + (f"  eager {b}" if b else ""), flush=True)

    measure("baseline (imports)", (BASELINE,), None)
    measure("load: aggregate the run", (LOAD_LAZY, str(big)), (LOAD_EAGER, str(big)))
    measure(f"realism: read a {args.sample:,}-dialogue sample", (REALISM_LAZY, str(big), str(args.sample)),
            (REALISM_EAGER, str(big), str(args.sample)))
    judge = str(tiny_model(REPO / "outputs" / "scale" / "tiny-model"))
    for n in (int(x) for x in args.score.split(",")):
        rep = args.work / f"cons-{n}"
        measure(f"consistency: score {n:,} dialogues", (CONSISTENCY, str(big), judge, str(rep), str(n), "500"),
                (CONSISTENCY, str(big), judge, str(rep), str(n), str(n)))
    to = args.work / "export"
    for dedup in ("no-dedup", "dedup"):
        measure(f"export hub --{dedup}", (EXPORT, str(big), str(to), "chunks", dedup), (EXPORT, str(big), str(to) + "-peer", "whole", dedup))
        shutil.rmtree(to, ignore_errors=True)
        shutil.rmtree(str(to) + "-peer", ignore_errors=True)
    result["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}

    print(f"\n{result['big_run']['turns']:,} turns, {result['big_run']['dialogues']:,} dialogues, "
          f"turns.parquet {result['big_run']['mib']} MiB")
    print("| step | lazy: peak RSS (MiB) / s | eager peer: peak RSS (MiB) / s |\n| --- | --- | --- |")
    for name, a, b in rows:
        print(f"| {name} | {a['peak_rss_mib']:,.0f} / {a['seconds']:.1f} | "
              + (f"{b['peak_rss_mib']:,.0f} / {b['seconds']:.1f} |" if b else "- |"))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
