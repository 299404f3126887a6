"""The cost of a `simgen tune` step on the embedded model, in one process: the trainer as shipped
with `--dtype auto` (mixed precision where the CPU or GPU has bf16 arithmetic, float32 elsewhere)
and with `--dtype float32`, against `simgen/tune.py` as it was at git revision `--before REF`
(TRL's fused LM head over every position, TRL's default activation checkpointing, float32). Every
row trains the shipped movie-recommendation recipe (both sides, batch 8, LoRA rank 8, 256 tokens)
for the same steps on the same examples from the same seed; the validation loss after them shows
that the rows learn alike.

    python benchmarks/bench_tune.py --corpus ../shared/data/iard --steps 16 --before ecbe4e5
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from bench_pick import module_at

RECIPE = dict(roles="both", batch_size=8, learning_rate=1e-3, lora_r=8, lora_alpha=16, max_length=256, eval_examples=48,
              profile_match=32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", required=True, help="movie-recommendation's real corpus (e.g. ../shared/data/iard); its train split trains")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--before", default=None, help="a git revision: add a row with simgen/tune.py as it was there")
    parser.add_argument("--out", type=Path, default=None, help="where the rows' folders go (default: a temporary folder)")
    args = parser.parse_args(argv)

    import simgen.tune as shipped

    out = args.out or Path(tempfile.mkdtemp(prefix="bench_tune-"))
    steps = dict(max_steps=args.steps, save_every=args.steps)
    rows = [(f"simgen/tune.py at {args.before} (float32)", module_at(args.before, "simgen/tune.py", "tune_before"), {})] if args.before else []
    rows += [("float32", shipped, {"dtype": "float32"}), (f"auto ({shipped.training_precision('auto')} here)", shipped, {"dtype": "auto"})]
    results = []
    for i, (name, module, extra) in enumerate(rows):
        config = module.TuneConfig(**RECIPE, **steps, **extra)
        card = module.tune("movie-recommendation", args.corpus, out / f"row{i}", config=config, progress=False, log=lambda m: None)
        results.append((name, card))
        print(f"{name}: {card['seconds'] / card['steps']:.2f} s/step", file=sys.stderr)

    slowest = max(card["seconds"] for _, card in results)
    print(f"\n{args.steps} steps of 8 examples, movie-recommendation's recipe (both sides, LoRA rank 8, 256 tokens)\n")
    print("| row | s/step | x the slowest | train loss first -> last | validation loss (base -> after) |")
    print("| --- | --- | --- | --- | --- |")
    for name, card in results:
        loss = card["train_loss"]
        print(f"| {name} | {card['seconds'] / card['steps']:.2f} | {slowest / card['seconds']:.2f}x | {loss['first']:.3f} -> {loss['last']:.3f} "
              f"| {card['base_validation_loss']:.3f} -> {card['validation_loss']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
