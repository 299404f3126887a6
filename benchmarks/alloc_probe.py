"""Is the RSS rise of a long embedded-model run live memory, or freed memory glibc keeps?

scale.py sees the embedded run's RSS climb over its first few hundred dialogues, then level off.
This runs `simgen.generate` in this process on the embedded model and, after every shard is
written (the moment a batch's tensors are all freed), records RSS; with `--trim` it then calls
glibc's `malloc_trim(0)`, which hands freed heap pages back to the kernel, and records RSS again.
RSS after the trim is what the process really holds between batches.

    python benchmarks/alloc_probe.py --trim -n 320     # RSS before and after malloc_trim, per shard
    python benchmarks/alloc_probe.py -n 320            # the same run, never trimmed (the peer)

Linux with glibc only. Same work as scale.py's embedded run: batches of 32, 2 turns, 16 tokens a line.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import psutil

import simgen.generation.run
from simgen.config import SamplingConfig
from simgen.generation.pipeline import generate

MIB = 1024 * 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=320)
    p.add_argument("--trim", action="store_true", help="call malloc_trim(0) after each shard")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    libc = ctypes.CDLL("libc.so.6")
    me = psutil.Process()
    rows: list[dict[str, float]] = []
    write_shard = simgen.generation.run.RunWriter.write_shard

    def probed(self, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        write_shard(self, *a, **k)
        before = me.memory_info().rss / MIB
        if args.trim:
            libc.malloc_trim(0)
        rows.append({"dialogues": self.manifest["progress"]["dialogues_done"], "rss_mib": round(before),
                     "after_trim_mib": round(me.memory_info().rss / MIB) if args.trim else None})
        print(rows[-1], flush=True)

    simgen.generation.run.RunWriter.write_shard = probed
    out = Path(tempfile.mkdtemp(prefix="simgen-alloc-")) / "run"
    try:
        line = replace(SamplingConfig(), max_new_tokens=16)
        generate(n=args.n, seed=0, out=out, max_turns=2, batch_size=32, user=line, assistant_sampling=line, progress=False)
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps({"trim": args.trim, "n": args.n, "shards": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
