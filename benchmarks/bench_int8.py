"""What PyTorch's dynamic int8 quantisation of the Linear layers (per tensor) would buy simgen on a
CPU, and what it costs: the embedded model's decoding step at 1, 8 and 64 rows over a 600-token
prompt, fp32 against int8 (one scale per matrix, and one per output channel) in one process, and
how far the int8 model's next-token distribution is from fp32's on 300 positions of English text
(this README): greedy agreement and KL, beside bf16 as the control. A probe for #15, not a simgen path.

    python benchmarks/bench_int8.py
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
    args = parser.parse_args(argv)

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


if __name__ == "__main__":
    raise SystemExit(main())
