"""Sentence-embedding throughput for the realism check (#15 item 4): the ways to run the embedded
MiniLM on the CPU, side by side in one process on the same real chat turns.

Rows: float32 (what `simgen.realism.embed` runs), bfloat16 weights and activations, and int8 dynamic
quantisation of the Linear layers (torch.ao.quantization.quantize_dynamic: weights int8, activations
quantised per batch). For each: turns per second over the same
texts in the same order, the speed-up over float32, and the cosine of each text's vector with its
float32 vector (the issue's bar: >= 0.99 on real text), min / 1st percentile / mean.

Texts: user and assistant turns of real chitchat dialogues (chitchat-dataset, from PyPI), distinct,
the first N after a seeded shuffle; a warm-up batch runs before each row's clock starts.

    python benchmarks/bench_embed.py                 # 4,000 turns
    python benchmarks/bench_embed.py --turns 20000 --json outputs/bench_embed.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def texts(n: int) -> list[str]:
    from simgen.corpora import load_corpus

    turns = load_corpus("chitchat").turns["text"].unique().sort()
    return turns.sample(n=min(n, turns.len()), seed=0, shuffle=True).to_list()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--turns", type=int, default=4000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    import torch

    from simgen.realism import embed

    data = texts(args.turns)
    words = np.array([len(t.split()) for t in data])
    print(f"{len(data)} distinct chitchat turns, median {np.median(words):g} words; torch threads {torch.get_num_threads()}", flush=True)
    rows, base = [], None
    for name in ("float32", "bfloat16", "int8"):
        model = embed.load_model(name)
        embed.encode_texts(model, data[:args.batch_size], args.batch_size)  # warm-up
        t = time.perf_counter()
        vecs = embed.encode_texts(model, data, args.batch_size)
        seconds = time.perf_counter() - t
        if base is None:
            base = (vecs, seconds)
        cos = np.sum(vecs * base[0], axis=1) / (np.linalg.norm(vecs, axis=1) * np.linalg.norm(base[0], axis=1))
        row = {"row": name, "seconds": round(seconds, 2), "turns_per_s": round(len(data) / seconds, 1),
               "speedup": round(base[1] / seconds, 2), "cosine_min": round(float(cos.min()), 4),
               "cosine_p1": round(float(np.percentile(cos, 1)), 4), "cosine_mean": round(float(cos.mean()), 5)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| weights | seconds | turns/s | speed-up | cosine with float32: min / 1st pct / mean |\n| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['row']} | {r['seconds']} | {r['turns_per_s']} | {r['speedup']}x | {r['cosine_min']} / {r['cosine_p1']} / {r['cosine_mean']} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
