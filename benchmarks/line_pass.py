"""What one packed pass of the line schedule costs, part by part, beside what this machine can do.

    python benchmarks/line_pass.py                  # 60 decoding rows, as a busy movie-recommendation run
    python benchmarks/line_pass.py --prefill 108    # + 108 prompt tokens prefilled beside them (the run's mean)
    python benchmarks/line_pass.py --unfused        # the projections and element-wise ops one by one in torch, as before
    python benchmarks/line_pass.py --versus-unfused 8   # both, alternately in one process (the machine's drift cancels)

Builds a `LineEngine` of `--slots` rows on the embedded model (bf16 where the CPU has it, as `simgen
generate`), fills each row's cache with random tokens, and times passes that feed one token to
each of `--rows` decoding rows (and `--prefill` tokens to one more row, as a line starting). The
caches are as wide as a movie-recommendation run's under the default workload (`line_steps.py`):
two rows in three on the user side (~200 tokens: its context budget) and one in three on the
assistant side (~133). Per pass it times the weight matmuls (`F.linear`), attention (SDPA) and the
rest, and sets them beside figures measured in the same process:

- the compute bound: the best bf16 matmul FLOP/s over a few shapes (`bench_generate.py`'s bound
  row), and what the pass's tokens would take at it;
- the matmuls' own rate on this pass's shapes;
- the memory bandwidth (a sum over 512 MB), and the rate at which attention reads the cached keys
  and values.

So it says how far each part of a pass is from what the hardware allows.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_generate import matmul_flops  # noqa: E402


def bandwidth(megabytes: int = 512) -> float:
    """Bytes per second a sum over a `megabytes` tensor reads (best of 5)."""
    x = torch.ones(megabytes * 2**20 // 4)
    x.sum()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - start)
    return x.numel() * 4 / best


class Timer:
    """Seconds spent in a torch function while patched (`with Timer(F, "linear") as t`), in all
    (`seconds`, `calls`) and in the calls `which(*args)` is true of (`picked`, `picked_calls`)."""

    def __init__(self, owner, name: str, which=lambda *args: False) -> None:  # noqa: ANN001
        self.owner, self.name, self.which = owner, name, which
        self.seconds, self.calls, self.picked, self.picked_calls = 0.0, 0, 0.0, 0

    def __enter__(self) -> Timer:
        self.inner = getattr(self.owner, self.name)

        def timed(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            start = time.perf_counter()
            out = self.inner(*args, **kwargs)
            took = time.perf_counter() - start
            self.seconds += took
            self.calls += 1
            if self.which(*args):
                self.picked += took
                self.picked_calls += 1
            return out

        setattr(self.owner, self.name, timed)
        return self

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        setattr(self.owner, self.name, self.inner)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slots", type=int, default=64)
    ap.add_argument("--rows", type=int, default=60, help="decoding rows a pass")
    ap.add_argument("--user", type=int, default=200, help="a user-side row's cached tokens")
    ap.add_argument("--assistant", type=int, default=133, help="an assistant-side row's cached tokens")
    ap.add_argument("--prefill", type=int, default=0, help="prompt tokens prefilled beside the decoding rows (one row)")
    ap.add_argument("--passes", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sdpa", action="store_true", help="decoding rows through torch's SDPA, not simgen's kernel (lines.FUSED_DECODE off)")
    ap.add_argument("--versus-unfused", type=int, default=0, metavar="ROUNDS",
                    help="then time ROUNDS rounds of 5 passes each way, alternately, in this process: fused and glue kernels against torch ops")
    ap.add_argument("--unfused", action="store_true",
                    help="each projection and element-wise op through torch, not fused projections and simgen's glue kernels (lines.FUSED_GEMMS off)")
    args = ap.parse_args(argv)
    if not 0 < args.rows < args.slots:
        ap.error(f"--rows must be in 1..{args.slots - 1} (one row is left for --prefill), got {args.rows}")

    import simgen.backends.kernels as kernels
    import simgen.backends.lines as lines
    from simgen.backends import local_model

    lines.FUSED_DECODE = not args.sdpa
    lines.FUSED_GEMMS = not args.unfused
    backend = local_model()
    for key in ("decode_steps", "decoded_rows", "prefill_tokens"):
        backend.stats.setdefault(key, 0)
    cfg, dtype = backend.model.config, backend.model.dtype
    params = sum(p.numel() for p in backend.model.parameters())
    gen = torch.Generator().manual_seed(args.seed)
    engine = lines.LineEngine(backend, args.slots)
    widths = [args.assistant if row % 3 == 2 else args.user for row in range(args.slots)]
    tokens = [torch.randint(100, cfg.vocab_size, (w,), generator=gen).tolist() for w in widths]
    spare = args.slots - 1  # the row that prefills
    with torch.inference_mode():
        for lo in range(0, args.slots, 8):
            engine._forward([(row, tokens[row]) for row in range(lo, min(lo + 8, args.slots))])

        def one() -> None:  # a pass; then every row is cut back to where it was
            feeds = [(row, [int(torch.randint(100, cfg.vocab_size, (1,), generator=gen))]) for row in range(args.rows)]
            if args.prefill:
                engine.lens[spare], engine.hist[spare] = widths[spare], tokens[spare][:]
                feeds.append((spare, torch.randint(100, cfg.vocab_size, (args.prefill,), generator=gen).tolist()))
            engine._forward(feeds)
            for row in range(args.rows):
                engine.lens[row], engine.hist[row] = widths[row], tokens[row][:]

        for _ in range(3):
            one()
        group = cfg.num_attention_heads // cfg.num_key_value_heads
        decoding = lambda q, *_: q.shape[2] == group  # noqa: E731  (the decoding rows' call: `group` query rows per key/value head)
        with Timer(F, "linear") as linear, Timer(F, "scaled_dot_product_attention", decoding) as sdpa, Timer(kernels, "attend") as kernel:
            start = time.perf_counter()
            for _ in range(args.passes):
                one()
            seconds = (time.perf_counter() - start) / args.passes
        if args.versus_unfused:  # the same passes, alternately with and without fused projections and glue kernels
            modes = {"fused, glue kernels": (engine.fused, engine.glue), "unfused, torch ops": ([None] * len(engine.fused), False)}
            versus: dict[str, list[float]] = {name: [] for name in modes}
            for _ in range(args.versus_unfused):
                for name, (fused, glue) in modes.items():
                    engine.fused, engine.glue = fused, glue
                    one()
                    start = time.perf_counter()
                    for _ in range(5):
                        one()
                    versus[name].append((time.perf_counter() - start) / 5)
            engine.fused, engine.glue = modes["fused, glue kernels"]
    linear_s, attention_s, decode_s = (t / args.passes for t in (linear.seconds, sdpa.seconds + kernel.seconds, sdpa.picked + kernel.seconds))
    calls = (sdpa.calls + kernel.calls) // args.passes

    peak = matmul_flops(dtype)
    bound = peak["flops_per_s"] / (2 * params)  # tokens/s, as bench_generate's bound row
    fed = args.rows + args.prefill
    nonembed = params - cfg.vocab_size * cfg.hidden_size * (1 if cfg.tie_word_embeddings else 2)
    head = cfg.vocab_size * cfg.hidden_size
    flops = 2 * (nonembed * fed + head * (args.rows + (1 if args.prefill else 0)))  # the layers for every token; lm_head for each row's last
    kv = 2 * len(engine.layers) * cfg.num_key_value_heads * engine.head_dim * torch.finfo(dtype).bits // 8  # bytes a cached token holds
    if engine.kernel is not None:  # each decoding row over its own slots
        read = kv * sum(w + 1 for w in widths[:args.rows])
    else:  # SDPA: as wide as the widest decoding row, all rows as a view when most decode (LineEngine._forward)
        read = kv * (args.slots if 2 * args.rows > args.slots else args.rows) * (max(widths[:args.rows]) + 1)
    mem = bandwidth()
    print(f"{args.rows} decoding rows ({args.user} / {args.assistant} cached tokens, user / assistant side)"
          + (f" + {args.prefill} tokens prefilled" if args.prefill else "") + f", {dtype}, {torch.get_num_threads()} threads:")
    print(f"  a pass: {1000 * seconds:.1f} ms for {fed} tokens: {fed / seconds:.0f} tokens/s, "
          f"{fed / seconds / bound:.1%} of the compute bound ({bound:.0f} tokens/s: {peak['flops_per_s'] / 1e9:.0f} GFLOP/s, {peak['shape']})")
    print(f"  weight matmuls: {1000 * linear_s:.1f} ms ({linear_s / seconds:.0%}), {flops / linear_s / 1e9:.0f} GFLOP/s "
          f"({flops / linear_s / peak['flops_per_s']:.0%} of the bound's rate); at the bound {1000 * flops / peak['flops_per_s']:.1f} ms")
    print(f"  attention ({'simgen kernel' if engine.kernel is not None else 'SDPA'} for the decoding rows): "
          f"{1000 * attention_s:.1f} ms ({attention_s / seconds:.0%}) in {calls} calls; "
          f"the decoding rows' ({1000 * decode_s:.1f} ms) read {read / 2**20:.0f} MiB of keys and values a pass at "
          f"{read / decode_s / 1e9:.1f} GB/s (memory: {mem / 1e9:.1f} GB/s, so {read / mem * 1000:.1f} ms at full bandwidth)")
    rest = seconds - linear_s - attention_s
    glue = "simgen's glue kernels" if engine.glue else "torch ops"
    print(f"  the rest (norms, rotary, cache writes, activation, embedding, gathers; {glue}): {1000 * rest:.1f} ms ({rest / seconds:.0%})")
    if args.versus_unfused:
        import statistics

        medians = {name: statistics.median(v) for name, v in versus.items()}
        print(f"  alternately, {args.versus_unfused} rounds of 5 passes each, median pass: "
              + ", ".join(f"{name} {1000 * m:.1f} ms" for name, m in medians.items())
              + f": {medians['unfused, torch ops'] / medians['fused, glue kernels']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
