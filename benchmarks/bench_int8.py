"""What PyTorch's dynamic int8 quantisation of the Linear layers (per tensor) would buy simgen on a
CPU, and what it costs: the embedded model's decoding step at 1, 8 and 64 rows over a 600-token
prompt, fp32 against int8 (one scale per matrix, and one per output channel) in one process, and
how far the int8 model's next-token distribution is from fp32's on 300 positions of English text
(this README): greedy agreement and KL, beside bf16 as the control. A probe for #15, not a simgen path.

`--kernels` times instead the weight-only kernels PyTorch ships for CPU, on the embedded model's
matrix shapes (random weights; one decoding step's Linear layers: 30 layers of q, k, v, o, gate,
up, down, and the tied 49,152-row head), summed per step at 1, 8 and 64 rows: fp32 `F.linear`, bf16,
int8 weights with one scale per output channel (`torch._weight_int8pack_mm`) and int4 weights with
a scale and zero per group of 32 (`torch.ops.aten._weight_int4pack_mm_for_cpu`, llama.cpp's Q4_1 kind).

    python benchmarks/bench_int8.py
    python benchmarks/bench_int8.py --kernels
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="1,8,64", help="batch sizes to time, comma-separated")
    parser.add_argument("--context", type=int, default=600, help="prompt tokens before the timed steps")
    parser.add_argument("--steps", type=int, default=10, help="decoding steps timed per row count")
    parser.add_argument("--kernels", action="store_true", help="time PyTorch's weight-only int8/int4 CPU kernels instead")
    args = parser.parse_args(argv)
    if args.kernels:
        return kernels([int(r) for r in args.rows.split(",")])

    import torch

    from simgen.backends import local_model

    backend = local_model(None, "float32")
    fp32 = backend.model
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    models = {"fp32": fp32,
              "int8": quantize_dynamic(copy.deepcopy(fp32), {torch.nn.Linear}, dtype=torch.qint8),
              "int8/ch": quantize_dynamic(copy.deepcopy(fp32), {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)}
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()[:20000]
    ids = backend.tokenizer(text, return_tensors="pt").input_ids[:, :args.context]

    print(f"{'rows':>5}" + "".join(f"{name + ' ms/step':>17}" for name in models))
    for rows in (int(r) for r in args.rows.split(",")):
        batch, cost = ids.expand(rows, -1).contiguous(), {}
        for name, model in models.items():
            with torch.inference_mode():
                out = model(input_ids=batch, use_cache=True, logits_to_keep=1)
                cache, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
                start = time.perf_counter()
                for _ in range(args.steps):
                    out = model(input_ids=nxt, past_key_values=cache, use_cache=True)
                    nxt = out.logits[:, -1:].argmax(-1)
                cost[name] = (time.perf_counter() - start) / args.steps * 1000
        print(f"{rows:>5}" + "".join(f"{cost[name]:>17.1f}" for name in models), flush=True)

    # bf16, a precision known to keep the model, as the control for what a benign change moves
    models["bf16"] = copy.deepcopy(fp32).to(torch.bfloat16)
    with torch.inference_mode():
        ref = fp32(input_ids=ids[:, :300]).logits[0].log_softmax(-1)
        for name in ("bf16", "int8", "int8/ch"):
            out = models[name](input_ids=ids[:, :300]).logits[0].float().log_softmax(-1)
            agree = (ref.argmax(-1) == out.argmax(-1)).float().mean().item()
            kl = (ref.exp() * (ref - out)).sum(-1).mean().item()
            print(f"{name}: greedy next token = fp32's at {agree:.0%} of {ref.shape[0]} positions, KL(fp32 || {name}) {kl:.4f} nats")
    return 0


# (out, in) features of the embedded model's Linear layers, and how many a decoding step runs
SHAPES = {(576, 576): 2 * 30, (192, 576): 2 * 30, (1536, 576): 2 * 30, (576, 1536): 30, (49152, 576): 1}


def kernels(row_counts: list[int], group: int = 32, repeats: int = 20) -> int:
    import torch
    import torch.nn.functional as F

    def timed(f) -> float:  # noqa: ANN001 - ms per call
        f()
        start = time.perf_counter()
        for _ in range(repeats):
            f()
        return (time.perf_counter() - start) / repeats * 1000

    torch.manual_seed(0)
    names = ("fp32", "bf16", "int8 weights", f"int4 weights, groups of {group}")
    print("| rows | " + " | ".join(f"{n} (ms/step)" for n in names) + " |")
    print("| --- |" + " --- |" * len(names))
    for rows in row_counts:
        total = dict.fromkeys(names, 0.0)
        for (n, k), count in SHAPES.items():
            w, x = torch.randn(n, k) * 0.02, torch.randn(rows, k)
            wb, xb = w.bfloat16(), x.bfloat16()
            scale = w.abs().amax(1) / 127
            w8 = torch.round(w / scale[:, None]).clamp(-128, 127).to(torch.int8)
            blocks = w.view(n, k // group, group)
            lo, hi = blocks.amin(-1), blocks.amax(-1)
            step = (hi - lo).clamp(min=1e-8) / 15
            w4 = torch.round((blocks - lo[..., None]) / step[..., None]).clamp(0, 15).to(torch.int32).view(n, k)
            scales_zeros = torch.stack([step.t(), (lo + 8 * step).t()], -1).contiguous()  # w = (q - 8) * step + zero
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(w4, 1)
            int4 = lambda: torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, group, scales_zeros)  # noqa: E731
            assert (int4() - x @ w.t()).abs().max() < 0.5  # the packing is right (4-bit rounding error only)
            for name, f in zip(names, (lambda: F.linear(x, w), lambda: F.linear(xb, wb),
                                       lambda: torch._weight_int8pack_mm(x, w8, scale), int4)):
                total[name] += count * timed(f)
        print(f"| {rows} | " + " | ".join(f"{total[n]:.1f}" for n in names) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
