"""Model resolution: clear, immediate errors; never a network call."""

from __future__ import annotations

import json
import time

import pytest

from simgen.errors import ModelError
from simgen.models import resolve_model


def test_missing_folder_is_an_immediate_error(tmp_path):
    with pytest.raises(ModelError, match="no such folder"):
        resolve_model(str(tmp_path / "nope"))


def test_id_not_in_local_cache_fails_fast_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    start = time.perf_counter()
    with pytest.raises(ModelError, match="not in the local Hugging Face cache, and simgen never downloads"):
        resolve_model("some-org/some-model-that-is-not-here")
    assert time.perf_counter() - start < 10


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_not_a_causal_lm(tmp_path):
    from transformers import BertConfig, ViTConfig

    BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
               architectures=["BertForSequenceClassification"]).save_pretrained(tmp_path / "nli")
    with pytest.raises(ModelError, match="is a BertForSequenceClassification model, not a causal language model"):
        resolve_model(str(tmp_path / "nli"))
    ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16).save_pretrained(tmp_path / "vit")
    with pytest.raises(ModelError, match="not a causal language model"):
        resolve_model(str(tmp_path / "vit"))


def test_remote_code_needs_the_flag(tiny_model_dir, tmp_path):
    import shutil

    folder = tmp_path / "remote"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="--trust-remote-code"):
        resolve_model(str(folder))


def test_local_folder_resolves_with_fingerprint(tiny_model_dir):
    src = resolve_model(str(tiny_model_dir))
    assert src.path == tiny_model_dir and len(src.fingerprint) == 64
    assert resolve_model(str(tiny_model_dir)).fingerprint == src.fingerprint


@pytest.mark.parametrize(("cpuinfo", "native"), [
    ("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512bw avx512_vnni\n", False),  # AVX-512 without BF16: oneDNN emulates
    ("flags\t\t: fpu avx512f avx512_bf16 avx512_vnni\n", True),
    ("flags\t\t: fpu avx512f amx_tile amx_bf16\n", True),
    ("Features\t: fp asimd bf16 i8mm\n", True),  # Arm FEAT_BF16
    ("Features\t: fp asimd\n", False),
    ("", False),
])
def test_auto_precision_is_bf16_only_where_the_cpu_has_bf16_arithmetic(cpuinfo, native):
    from simgen.models import native_bf16_cpu

    assert native_bf16_cpu(cpuinfo) is native


def test_auto_precision_follows_the_cpu_flags(monkeypatch):
    import torch

    import simgen.models as models

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for native, dtype in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(models, "native_bf16_cpu", lambda native=native: native)
        assert models.pick_dtype("auto") is dtype
    assert models.pick_dtype("bfloat16") is torch.bfloat16 and models.pick_dtype("float32") is torch.float32
