"""Shared fixtures: the real data in ../shared, a tiny random causal LM, the embedded model.

The tiny model is a 2-layer Llama with hidden size 32 and the real SmolLM2 tokenizer, built at
test time: it loads in a second and runs the real transformers code path.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "data").is_dir():
        pytest.skip(f"{SHARED}/data is missing: the shared data sets lie beside the repository in CI")
    return SHARED


@pytest.fixture(scope="session")
def iard_dir(shared_dir: Path) -> Path:
    """The IARD dialogues (../shared/data/iard); the test skips where they are missing."""
    path = shared_dir / "data" / "iard"
    if not path.is_dir():
        pytest.skip(f"IARD not found at {path}")
    return path


@pytest.fixture(scope="session")
def embedded_dir() -> Path:
    """The converted embedded SmolLM2 folder (converted once into the user cache, then reused)."""
    from simgen.models import embedded_model_dir

    return embedded_model_dir()


def build_tiny_model(out: Path, tokenizer_dir: Path) -> Path:
    """Save a random 2-layer Llama (hidden 32) with `tokenizer_dir`'s tokenizer and chat template
    into `out` and return it (benchmarks/scale.py builds its model the same way).

    Its output head favours a small random vocabulary: a few hundred word tokens, with sentence
    ends and the end-of-turn token weighted up (every other token keeps its small random weight), so its lines are gibberish made of words that do end
    sentences and turns now and then, and length targets and trimming run on real cuts."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        head = model.lm_head.weight.clone()  # every other token keeps its small random logit (judges read them)
        words = [i for i in range(1000, 1600) if tokenizer.decode([i]).startswith(" ") and tokenizer.decode([i]).strip().isalpha()]
        head[words] = torch.randn(len(words), config.hidden_size) * 2.0
        ends = [tokenizer.convert_tokens_to_ids(t) for t in (".", "!", "?")] + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
        head[ends] = torch.randn(len(ends), config.hidden_size) * 3.0
        model.lm_head.weight.copy_(head)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def load_benchmark(name: str):  # noqa: ANN201 - the module
    """`benchmarks/NAME.py` as a module (the benchmarks are scripts, not a package)."""
    return _load_file("benchmarks", name)


def load_script(name: str):  # noqa: ANN201 - the module
    """`scripts/NAME.py` as a module (the fitting scripts are not a package either)."""
    return _load_file("scripts", name)


def _load_file(folder: str, name: str):  # noqa: ANN202 - the module
    import importlib.util

    path = Path(__file__).resolve().parents[1] / folder / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def interrupt_second_shard(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the pipeline raise KeyboardInterrupt (as Ctrl-C would) as its second shard is done, before
    it is written: with refilling, mid-stream, while later dialogues are still running.
    `monkeypatch.undo()` restores it."""
    from simgen.generation import pipeline

    real, calls = pipeline.simulate_stream, {"n": 0}

    def stream(shards, cfg, sc, user, assistant, on_shard, *args, **kwargs):
        def interrupt(*shard):
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt
            on_shard(*shard)

        return real(shards, cfg, sc, user, assistant, interrupt, *args, **kwargs)

    monkeypatch.setattr(pipeline, "simulate_stream", stream)


@pytest.fixture(scope="session")
def llamacpp():
    """llama.cpp's real OpenAI-compatible server (xllamacpp, in-process) serving the embedded GGUF; yields its /v1 URL."""
    pytest.importorskip("xllamacpp")
    from simgen.backends.llamacpp import serve_gguf

    with serve_gguf(parallel=4, ctx_per_slot=2048, threads=1) as url:
        yield url


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, embedded_dir: Path) -> Path:
    """A random 2-layer Llama (hidden 32) with the SmolLM2 tokenizer and chat template."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), embedded_dir)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
