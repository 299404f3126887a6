"""Sentence-embedding throughput for the realism check (#15 item 4): the ways to run the embedded
MiniLM on the CPU, side by side in one process on the same real chat turns.

Rows: float32 (what `simgen.realism.embed` runs), bfloat16 weights and activations, and int8 dynamic
quantisation of the Linear layers (torch.ao.quantization.quantize_dynamic: weights int8, activations
quantised per batch). For each: turns per second over the same
texts in the same order, the speed-up over float32, and the cosine of each text's vector with its
float32 vector (the issue's bar: >= 0.99 on real text), min / 1st percentile / mean.

`--onnx` adds two ONNX Runtime rows (needs `pip install onnxruntime onnx`, which simgen does not
depend on): the same MiniLM exported with `torch.onnx.export` and run with every graph optimisation
on, in float32 and with ONNX Runtime's dynamic int8 quantisation (per-channel weights), mean-pooled
and normalised as sentence-transformers does.

Texts: user and assistant turns of real chitchat dialogues (chitchat-dataset, from PyPI), distinct,
the first N after a seeded shuffle; a warm-up batch runs before each row's clock starts.

    python benchmarks/bench_embed.py                 # 4,000 turns
    python benchmarks/bench_embed.py --turns 20000 --json outputs/bench_embed.json
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import numpy as np


def texts(n: int) -> list[str]:
    from simgen.corpora import load_corpus

    turns = load_corpus("chitchat").turns["text"].unique().sort()
    return turns.sample(n=min(n, turns.len()), seed=0, shuffle=True).to_list()


class OnnxMiniLM:
    """The float32 MiniLM exported to ONNX and run by ONNX Runtime (optionally int8-quantised); `encode` as
    `simgen.realism.embed.encode_texts` (inputs sorted by length and cut at 128 word pieces, mean pooling, L2)."""

    NAMES = ("input_ids", "attention_mask", "token_type_ids")

    def __init__(self, st_model, folder: Path, int8: bool) -> None:
        import onnxruntime as ort
        import torch

        class Hidden(torch.nn.Module):  # keyword arguments: BertModel's positional order is not the ONNX inputs'
            def __init__(self, bert) -> None:
                super().__init__()
                self.bert = bert

            def forward(self, input_ids, attention_mask, token_type_ids):
                return self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state

        self.tokenizer = st_model.tokenizer
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "minilm.onnx"
        sample = self.tokenizer(["a b", "c"], padding=True, return_tensors="pt")
        axes = {n: {0: "batch", 1: "tokens"} for n in (*self.NAMES, "hidden")}
        torch.onnx.export(Hidden(st_model[0].auto_model.eval()), tuple(sample[n] for n in self.NAMES), str(path), input_names=list(self.NAMES),
                          output_names=["hidden"], dynamic_axes=axes, opset_version=17, dynamo=False)
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(path), str(folder / "minilm-int8.onnx"), weight_type=QuantType.QInt8, per_channel=True)
            path = folder / "minilm-int8.onnx"
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), 384), dtype=np.float32)
        for i in range(0, len(texts), batch_size):
            rows = order[i:i + batch_size]
            enc = self.tokenizer([texts[j] for j in rows], padding=True, truncation=True, max_length=128, return_tensors="np")
            hidden = self.session.run(None, {n: enc[n].astype(np.int64) for n in self.NAMES})[0]
            mask = enc["attention_mask"][..., None].astype(np.float32)
            v = (hidden * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)
            out[rows] = v / np.linalg.norm(v, axis=1, keepdims=True)
        return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--turns", type=int, default=4000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--onnx", action="store_true", help="add ONNX Runtime rows (float32, int8); needs onnxruntime and onnx installed")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    import torch

    from simgen.realism import embed

    data = texts(args.turns)
    words = np.array([len(t.split()) for t in data])
    print(f"{len(data)} distinct chitchat turns, median {np.median(words):g} words; torch threads {torch.get_num_threads()}", flush=True)
    rows, base = [], None
    names = ["float32", "bfloat16", "int8"] + (["onnxruntime float32", "onnxruntime int8"] if args.onnx else [])
    for name in names:
        if name.startswith("onnxruntime"):
            import tempfile

            onnx = OnnxMiniLM(embed.load_model("float32"), Path(tempfile.mkdtemp(prefix="simgen-onnx-")), int8=name.endswith("int8"))
            run = onnx.encode
        else:
            model = embed.load_model(name)
            run = functools.partial(embed.encode_texts, model)
        run(data[:args.batch_size], args.batch_size)  # warm-up
        t = time.perf_counter()
        vecs = run(data, args.batch_size)
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
