"""The cost of drawing the next token (`pick_tokens`) for a batch of rows, on the embedded model's
real next-token logits, in one process: the compiled kernel as shipped (`kernels.pick`), against
torch's path (top NUCLEUS_FIRST, then NUCLEUS_WIDE: what runs without a compiler) and against
top-p over the whole sorted vocabulary; with the share of rows on which the kernel and torch's
path draw the same token. `--before REF` adds `pick_tokens` as it was at git revision REF.

    python benchmarks/bench_pick.py --rows 16 --top-p 0.95
    python benchmarks/bench_pick.py --rows 60 --top-p 0.95 --temperature 1.0 --penalty 1.15 --before adbdd4a~1   # the tuned sides
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def module_at(ref: str, path: str, name: str):  # noqa: ANN201
    """The file `path` of this repository at git revision `ref`, loaded as a module of its own called
    `name` (the rest of simgen as it is now): the "before" rows of bench_pick.py and bench_tune.py."""
    source = subprocess.run(["git", "show", f"{ref}:{path}"], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[1]).stdout
    file = Path(tempfile.mkdtemp()) / f"{name}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def pick_tokens_at(ref: str):  # noqa: ANN201
    """`pick_tokens` from simgen/backends/transformers.py at git revision `ref`."""
    return module_at(ref, "simgen/backends/transformers.py", "transformers_before").pick_tokens


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--penalty", type=float, default=1.0, help="repetition penalty on the prompt's tokens (1 = off)")
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--before", default=None, help="a git revision: add a row with pick_tokens as it was there")
    args = parser.parse_args(argv)

    import torch

    import simgen.backends.transformers as tb
    from simgen.config import SamplingConfig

    backend = tb.TransformersBackend(None)
    chats = [[{"role": "user", "content": f"Hi! Can you recommend a good movie for tonight? I like genre number {i}."}] for i in range(args.rows)]
    ids = [backend.encode(c) for c in chats]
    width = max(map(len, ids))
    batch = torch.tensor([[backend.pad_id] * (width - len(x)) + x for x in ids])
    mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
    with torch.inference_mode():
        logits = backend.model(input_ids=batch, attention_mask=mask).logits[:, -1, :].contiguous()
    seen = None
    if args.penalty != 1.0:
        seen = torch.zeros(logits.shape, dtype=torch.bool)
        for row, x in enumerate(ids):
            seen[row, x] = True
    sampling = SamplingConfig(temperature=args.temperature, top_p=args.top_p, repetition_penalty=args.penalty, max_new_tokens=1)
    shipped, times, drawn = (tb.NUCLEUS_FIRST, tb.NUCLEUS_WIDE), {}, {}
    rows = [("torch: the whole vocabulary sorted", tb.pick_tokens, False, 1 << 30, 1 << 30),
            (f"torch: top {shipped[0]}, then top {shipped[1]} (no compiler)", tb.pick_tokens, False, *shipped),
            ("compiled kernel, as shipped", tb.pick_tokens, True, *shipped)]
    if args.before:
        rows.append((f"pick_tokens at {args.before}", pick_tokens_at(args.before), True, *shipped))
    for name, pick, kernel, first, wide in rows:
        tb.NUCLEUS_FIRST, tb.NUCLEUS_WIDE, tb.PICK_KERNEL = first, wide, kernel
        try:
            generators = lambda: [torch.Generator().manual_seed(i) for i in range(args.rows)]  # noqa: E731
            drawn[name] = pick(logits, sampling, generators(), seen)  # warm-up
            t = time.perf_counter()
            for _ in range(args.repeat):
                pick(logits, sampling, generators(), seen)
            times[name] = (time.perf_counter() - t) / args.repeat
        finally:
            tb.NUCLEUS_FIRST, tb.NUCLEUS_WIDE, tb.PICK_KERNEL = (*shipped, True)
    probs = torch.softmax(tb._penalised(logits.float(), sampling, seen) / sampling.heat, dim=-1).sort(dim=-1, descending=True).values
    nucleus = ((probs.cumsum(-1) - probs) < args.top_p).sum(-1)
    print(f"{args.rows} rows, temperature {sampling.heat}, top-p {args.top_p}: nucleus of {nucleus.min()}-{nucleus.max()} tokens "
          f"(median {nucleus.median()}), {(nucleus > shipped[0]).sum()} rows wider than {shipped[0]}")
    for name, seconds in times.items():
        print(f"  {name}: {1000 * seconds:.1f} ms per draw")
    whole, torch_path, kernel = list(times.values())[:3]
    same = (drawn["compiled kernel, as shipped"] == list(drawn.values())[1]).float().mean()
    print(f"the kernel: {torch_path / kernel:.1f}x faster than torch's path, {whole / kernel:.1f}x than the whole vocabulary; "
          f"the same token as torch's path on {100 * same:.0f}% of rows")
    if args.before:
        print(f"the kernel: {times[f'pick_tokens at {args.before}'] / kernel:.1f}x faster than pick_tokens at {args.before}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
