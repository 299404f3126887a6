"""llama.cpp's server in this process (the `xllamacpp` wheel), serving a GGUF on 127.0.0.1.

    with serve_gguf(parallel=16) as url:          # the embedded SmolLM2 GGUF by default
        simgen.generate(backend="openai", server=ServerConfig(base_url=url), model="smollm2", ...)

It is what the throughput benchmark compares simgen against and what the OpenAI-backend tests talk
to: a real OpenAI-compatible server, no network needed. `xllamacpp` is a dev dependency; a user who
lacks it gets a clear error.
"""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from simgen.errors import ConfigError, ModelError


@contextmanager
def serve_gguf(path: str | Path | None = None, parallel: int = 4, ctx_per_slot: int = 2048, threads: int | None = None,
               api_keys: Sequence[str] = (), cache_prompt: bool = True) -> Iterator[str]:
    """Serve `path` (default: the embedded model's GGUF) with `parallel` slots; yields the `/v1` URL."""
    try:
        import xllamacpp as xlc
    except ImportError:
        raise ConfigError("serving a GGUF in-process needs the xllamacpp wheel: pip install xllamacpp") from None
    from simgen.models import embedded_gguf

    params = xlc.CommonParams()
    params.model.path = str(path or embedded_gguf())
    params.n_parallel = parallel
    params.n_ctx = ctx_per_slot * parallel  # llama.cpp splits n_ctx across the slots
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = threads or os.cpu_count() or 1
    params.cache_prompt = cache_prompt
    params.api_keys = list(api_keys)
    params.verbosity = 0
    server = xlc.Server(params)
    try:
        yield server.listening_address + "/v1"
    finally:
        del server
        gc.collect()


def tuned_gguf(folder: str | Path) -> Path:
    """A GGUF of a `simgen tune` simulator built on the embedded model, for llama.cpp to serve the model
    simgen's transformers backend serves (cached beside the merged model; about 10 s the first time).

    It is the embedded GGUF with every weight matrix the tuning changed replaced by the merged matrix
    (the dequantised base plus the LoRA delta: what `--model FOLDER` loads), stored as Q8_0. Q4_1, the
    base's own type, would round most of the delta away (a Q4_1 step is larger than a typical delta
    entry); Q8_0 keeps it. Tensors the tuning left alone (embeddings, norms) are copied byte for byte,
    and so is the metadata (tokenizer, chat template, hyperparameters)."""
    import gguf
    import numpy as np
    import torch
    from safetensors.torch import load_file

    from simgen.models import TUNE_CARD, embedded_gguf, embedded_model_dir, resolve_model

    if not (Path(folder) / TUNE_CARD).is_file():
        raise ConfigError(f"{folder}: not a `simgen tune` folder; serve a model's own GGUF with serve_gguf(path).")
    source = resolve_model(str(folder))  # the merged model `--model FOLDER` loads (cached)
    target = source.path / "simgen_llamacpp.Q8_0.gguf"
    if target.is_file():
        return target
    base_dir = embedded_model_dir()
    reader = gguf.GGUFReader(embedded_gguf())
    config = json.loads((base_dir / "config.json").read_text())
    n_head, n_kv = config["num_attention_heads"], config.get("num_key_value_heads", config["num_attention_heads"])
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config["num_hidden_layers"])
    base, merged = load_file(base_dir / "model.safetensors"), load_file(source.path / "model.safetensors")
    if merged.keys() != base.keys():
        raise ModelError(f"{folder}: its merged model has other tensors than the embedded one; only simulators tuned on the embedded model are converted.")

    def permute(w: np.ndarray, heads: int) -> np.ndarray:  # the rotary layout llama.cpp's converter writes q and k in
        return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    replaced: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # GGUF name -> (merged, base), in GGUF layout
    for key, weight in merged.items():
        if torch.equal(weight, base[key]):
            continue
        name = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ModelError(f"{folder}: the tuning changed {key}, which has no GGUF name; it cannot be served by llama.cpp.")
        w, b = weight.float().numpy(), base[key].float().numpy()
        if key.endswith("q_proj.weight"):
            w, b = permute(w, n_head), permute(b, n_head)
        elif key.endswith("k_proj.weight"):
            w, b = permute(w, n_kv), permute(b, n_kv)
        replaced[name] = (w, b)
    tensors = {t.name: t for t in reader.tensors}
    for name, (_, b) in replaced.items():  # the mapping and layout are right only if the GGUF holds the base we subtract
        stored = gguf.quants.dequantize(tensors[name].data, tensors[name].tensor_type).reshape(b.shape)
        if not np.allclose(stored, b, atol=1e-6):
            raise ModelError(f"{name}: the embedded GGUF's tensor is not the base the adapter was merged into; cannot convert {folder}.")

    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    try:
        writer = gguf.GGUFWriter(tmp, arch=reader.fields[gguf.Keys.General.ARCHITECTURE].contents(), endianess=reader.endianess)
        for field in reader.fields.values():  # as gguf's own gguf_new_metadata.py copies them
            if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
                continue
            kind = field.types[0]
            writer.add_key_value(field.name, field.contents(), kind, sub_type=field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None)
        data = {}
        for t in reader.tensors:
            if t.name in replaced:
                q = gguf.quants.quantize(replaced[t.name][0], gguf.GGMLQuantizationType.Q8_0)
                data[t.name] = (q, gguf.GGMLQuantizationType.Q8_0)
            else:
                data[t.name] = (t.data, t.tensor_type)
            arr, kind = data[t.name]
            writer.add_tensor_info(t.name, arr.shape, arr.dtype, arr.nbytes, kind)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t in reader.tensors:
            writer.write_tensor_data(data[t.name][0], tensor_endianess=reader.endianess)
        writer.close()
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)  # a write cut short leaves nothing behind
    return target
