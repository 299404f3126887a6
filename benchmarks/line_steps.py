"""Where a line-scheduled run's time goes: every packed pass of `simgen generate --schedule lines`,
timed with the rows it decodes and the prompt tokens it prefills.

    python benchmarks/line_steps.py --scenario movie-recommendation -n 64 --batch-size 64

Prints the passes grouped by decoding rows, and the run cut into tenths by pass: rows, prefilled
tokens and milliseconds per pass. On a CPU a pass of few rows costs nearly what a full one does
(the weights are read once per pass), so the tenths show how much of a run is its tail.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import simgen
import simgen.backends.lines as lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="movie-recommendation")
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--refill", type=int, default=1)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("outputs/line-steps"))
    args = ap.parse_args()

    passes = []  # (decoding rows, prefilled tokens, seconds)
    forward = lines.LineEngine._forward

    def timed(self, feeds):  # noqa: ANN001, ANN202
        start = time.perf_counter()
        out = forward(self, feeds)
        passes.append((sum(len(t) == 1 for _, t in feeds), sum(len(t) for _, t in feeds if len(t) > 1), time.perf_counter() - start))
        return out

    lines.LineEngine._forward = timed
    start = time.perf_counter()
    simgen.generate(scenario=args.scenario, n=args.n, batch_size=args.batch_size, refill=args.refill, seed=args.seed,
                    schedule="lines", out=args.out / args.scenario, progress=False)
    total = time.perf_counter() - start
    a = np.array(passes)
    print(f"{args.scenario}: {args.n} dialogues, {args.batch_size} rows, refill {args.refill}: {total:.1f} s, "
          f"{len(a)} passes ({a[:, 2].sum():.1f} s), {a[:, 0].mean():.1f} decoding rows a pass, {a[:, 1].sum():.0f} tokens prefilled")
    edges = sorted({0, 2, 8, args.batch_size // 4, args.batch_size // 2, args.batch_size + 1})
    for lo, hi in zip(edges, edges[1:]):
        m = (a[:, 0] >= lo) & (a[:, 0] < hi)
        if m.any():
            print(f"  {lo:3d}-{hi - 1:3d} decoding rows: {m.sum():5d} passes, {a[m, 2].sum():6.1f} s, {1000 * a[m, 2].mean():4.0f} ms a pass, "
                  f"{a[m, 1].sum():6.0f} tokens prefilled")
    for i, part in enumerate(np.array_split(a, 10)):
        print(f"  tenth {i}: {part[:, 0].mean():5.1f} rows, {part[:, 1].mean():4.0f} prefilled, {1000 * part[:, 2].mean():4.0f} ms a pass")


if __name__ == "__main__":
    main()
