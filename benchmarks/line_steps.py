"""Where a line-scheduled run's time goes: every packed pass of `simgen generate --schedule lines`,
timed with the rows it decodes and the prompt tokens it prefills.

    python benchmarks/line_steps.py --scenario movie-recommendation -n 64 --batch-size 64

Prints the passes grouped by decoding rows, and the run cut into tenths by pass: rows, prefilled
tokens and milliseconds per pass. On a CPU a pass of few rows costs nearly what a full one does
(the weights are read once per pass), so the tenths show how much of a run is its tail.

Then what the prefilled tokens were, by the cache each line started from: a side's first prompt
(no cache of its own yet; the prefix another chat's cache shares with it is copied, not
prefilled: `--no-share` turns that off), a line whose prompt extends its side's cache (only the new
messages prefilled), one whose prompt drops a few cached tokens (its side's last line was cut at a
sentence end, or its text tokenizes otherwise than it was drawn), and one whose prompt drops more
(a tuned side's window dropped its oldest exchange, so everything after the system prompt is
prefilled again).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import simgen
import simgen.backends.lines as lines


FEW = 16  # a prompt that drops at most this many cached tokens re-reads the end of its last line (cut at a sentence end, or re-tokenized)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="movie-recommendation")
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--refill", type=int, default=None, help="default: simgen generate's (4 shards a stream)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("outputs/line-steps"))
    ap.add_argument("--no-share", action="store_true", help="prefill first prompts whole (lines.SHARE_PREFIXES off)")
    args = ap.parse_args()
    lines.SHARE_PREFIXES = not args.no_share

    passes = []  # (decoding rows, prefilled tokens, seconds)
    forward = lines.LineEngine._forward

    def timed(self, feeds):  # noqa: ANN001, ANN202
        start = time.perf_counter()
        out = forward(self, feeds)
        passes.append((sum(len(t) == 1 for _, t in feeds), sum(len(t) for _, t in feeds if len(t) > 1), time.perf_counter() - start))
        return out

    takes = []  # (cached tokens, of them still a prefix of the prompt, prompt tokens) per line started
    take = lines.LineEngine._take

    def counted(self, row, req):  # noqa: ANN001, ANN202
        hist = self.stash[req.key][0] if req.key in self.stash else []
        rest = take(self, row, req)
        takes.append((len(hist), len(req.prompt) - len(rest), len(req.prompt)))
        return rest

    lines.LineEngine._forward = timed
    lines.LineEngine._take = counted
    start = time.perf_counter()
    simgen.generate(scenario=args.scenario, n=args.n, batch_size=args.batch_size, refill=args.refill, seed=args.seed,
                    schedule="lines", out=args.out / args.scenario, progress=False)
    total = time.perf_counter() - start
    a = np.array(passes)
    print(f"{args.scenario}: {args.n} dialogues, {args.batch_size} rows, refill {args.refill or 'default'}: {total:.1f} s, "
          f"{len(a)} passes ({a[:, 2].sum():.1f} s), {a[:, 0].mean():.1f} decoding rows a pass, {a[:, 1].sum():.0f} tokens prefilled")
    edges = sorted({0, 2, 8, args.batch_size // 4, args.batch_size // 2, args.batch_size + 1})
    for lo, hi in zip(edges, edges[1:]):
        m = (a[:, 0] >= lo) & (a[:, 0] < hi)
        if m.any():
            print(f"  {lo:3d}-{hi - 1:3d} decoding rows: {m.sum():5d} passes, {a[m, 2].sum():6.1f} s, {1000 * a[m, 2].mean():4.0f} ms a pass, "
                  f"{a[m, 1].sum():6.0f} tokens prefilled")
    for i, part in enumerate(np.array_split(a, 10)):
        print(f"  tenth {i}: {part[:, 0].mean():5.1f} rows, {part[:, 1].mean():4.0f} prefilled, {1000 * part[:, 2].mean():4.0f} ms a pass")
    t = np.array(takes)
    dropped = t[:, 0] - t[:, 1]  # cached tokens the prompt no longer starts with
    kinds = {"first prompts (no cache)": t[:, 0] == 0,
             "prompts that extend the cache": (t[:, 0] > 0) & (t[:, 1] >= np.minimum(t[:, 0], t[:, 2] - 1)),
             f"dropping 1-{FEW} cached tokens": (t[:, 0] > 0) & (t[:, 1] < np.minimum(t[:, 0], t[:, 2] - 1)) & (dropped <= FEW),
             "dropping more (window slid)": (t[:, 0] > 0) & (t[:, 1] < np.minimum(t[:, 0], t[:, 2] - 1)) & (dropped > FEW)}
    print(f"  {len(t)} lines started, {(t[:, 2] - t[:, 1]).sum()} prompt tokens prefilled:")
    for kind, m in kinds.items():
        print(f"    {kind:32} {m.sum():5d} lines, {(t[m, 2] - t[m, 1]).sum():7d} tokens prefilled, "
              f"{(t[m, 2] - t[m, 1]).mean() if m.any() else 0:5.1f} a line")
    first = kinds["first prompts (no cache)"]
    print(f"  first prompts: {t[first, 1].sum()} tokens copied from another chat's cache (prefix sharing, "
          f"lines.SHARE_PREFIXES={lines.SHARE_PREFIXES}), {t[first, 2].sum()} in all")


if __name__ == "__main__":
    main()
