"""The cost of drawing the next token (`pick_tokens`) for a batch of rows, top-p as shipped against
top-p over the whole sorted vocabulary and against the top NUCLEUS_FIRST tokens alone (a wider
nucleus sorted in full: before NUCLEUS_WIDE), on the embedded model's real next-token logits, in
one process.

    python benchmarks/bench_pick.py --rows 16 --top-p 0.95
    python benchmarks/bench_pick.py --rows 32 --top-p 0.95 --temperature 1.0   # the tuned sides' sampling
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--repeat", type=int, default=50)
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
        logits = backend.model(input_ids=batch, attention_mask=mask).logits[:, -1, :]
    sampling = SamplingConfig(temperature=args.temperature, top_p=args.top_p, max_new_tokens=1)
    shipped, times = (tb.NUCLEUS_FIRST, tb.NUCLEUS_WIDE), {}
    rows = (("whole vocabulary", 1 << 30, 1 << 30), (f"top {shipped[0]}, a wider nucleus sorted in full", shipped[0], 1 << 30),
            (f"top {shipped[0]}, then top {shipped[1]}, as shipped", *shipped))
    for name, first, wide in rows:
        tb.NUCLEUS_FIRST, tb.NUCLEUS_WIDE = first, wide
        try:
            generators = [torch.Generator().manual_seed(i) for i in range(args.rows)]
            tb.pick_tokens(logits, sampling, generators)  # warm-up
            t = time.perf_counter()
            for _ in range(args.repeat):
                tb.pick_tokens(logits, sampling, generators)
            times[name] = (time.perf_counter() - t) / args.repeat
        finally:
            tb.NUCLEUS_FIRST, tb.NUCLEUS_WIDE = shipped
    probs = torch.softmax(logits.float() / sampling.heat, dim=-1).sort(dim=-1, descending=True).values
    nucleus = ((probs.cumsum(-1) - probs) < args.top_p).sum(-1)
    print(f"{args.rows} rows, temperature {sampling.heat}, top-p {args.top_p}: nucleus of {nucleus.min()}-{nucleus.max()} tokens "
          f"(median {nucleus.median()}), {(nucleus > shipped[0]).sum()} rows wider than {shipped[0]}")
    for name, seconds in times.items():
        print(f"  {name}: {1000 * seconds:.1f} ms per draw")
    whole, one, two = times.values()
    print(f"as shipped: {whole / two:.1f}x faster than the whole vocabulary, {one / two:.1f}x than the top {shipped[0]} alone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
