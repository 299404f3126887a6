"""`simgen.generate`: profiles -> latents -> templates -> simulator <-> backend -> run folder.

This is the one place the stages meet. It validates everything that can be validated before a
model loads (scenario, templates, output folder), then walks the run in shards of `batch_size`
dialogues: plan each dialogue from (seed, index), simulate the shard as one batch, write it. A
resumed run skips the shards its manifest lists, so it ends byte-identical to an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from simgen.backends import Backend, Session
from simgen.config import GenerateConfig, SamplingConfig
from simgen.data import dialogues_to_frame
from simgen.errors import ConfigError, RunError
from simgen.files import atomic_write_json, now
from simgen.generation.run import (MANIFEST, FORMAT_VERSION, Run, RunWriter, check_manifest, holds_no_run, load_run,
                        package_versions, prepare_out_dir, remove_leftovers)
from simgen.scenario import Scenario, load_recorded, load_scenario
from simgen.generation.plan import plan
from simgen.generation.simulator import simulate


OUTPUTS = Path("outputs")


def default_out_dir(cfg: GenerateConfig) -> Path:
    """`outputs/<scenario>-n<N>-seed<SEED>`, always one folder directly inside `outputs/`.

    The scenario part is the file's stem with anything but letters, digits, `.`, `_` and `-`
    replaced and leading dots dropped, so no scenario name or path (`../../x`, `/etc/x.yaml`)
    can place the run elsewhere.
    """
    name = Path(cfg.scenario).stem if cfg.scenario.endswith((".yaml", ".yml")) else Path(cfg.scenario).name
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "scenario"
    return OUTPUTS / f"{name}-n{cfg.n}-seed{cfg.seed}"


def generate(
    scenario: str = "movie-recommendation",
    n: int = 20,
    seed: int = 0,
    model: str | None = None,
    *,
    out: str | Path | None = None,
    max_turns: int = 6,
    batch_size: int = 16,
    temperature: float | None = None,
    user: SamplingConfig | None = None,
    assistant_sampling: SamplingConfig | None = None,
    assistant: Callable[[list[dict]], str] | Backend | None = None,
    assistant_model: str | None = None,
    dtype: str = "auto",
    trust_remote_code: bool = False,
    progress: bool = True,
    config: GenerateConfig | None = None,
) -> Run:
    """Generate `n` dialogues of `scenario` into a run folder and return the `Run`.

    `temperature` sets both sides' temperature (0 = greedy); `user` / `assistant_sampling` give
    full per-side control. `assistant` replaces the assistant side with your own function
    (`messages -> str`) or backend. `config` overrides every other argument.
    """
    if config is None:
        defaults = GenerateConfig()
        user = user or defaults.user
        assistant_sampling = assistant_sampling or defaults.assistant
        if temperature is not None:
            user = replace(user, temperature=temperature)
            assistant_sampling = replace(assistant_sampling, temperature=temperature)
        config = GenerateConfig(scenario=str(scenario), n=n, seed=seed, model=model, assistant_model=assistant_model,
                                max_turns=max_turns, batch_size=batch_size, dtype=dtype, user=user,
                                assistant=assistant_sampling, trust_remote_code=trust_remote_code)
    sc = load_scenario(config.scenario)  # fails on a bad scenario before any folder or model is touched
    from simgen.models import resolve_model

    backends = None
    if config.backend == "transformers":
        for spec in (config.model, config.assistant_model) if config.assistant_model else (config.model,):
            resolve_model(spec, config.trust_remote_code)  # a missing model fails before the folder exists
    else:
        backends = _backends(config, assistant)  # an unreachable server fails before the folder exists; built once
    out = Path(out) if out is not None else default_out_dir(config)
    prepare_out_dir(out)
    manifest = _new_manifest(config, sc, out, assistant)
    atomic_write_json(out / MANIFEST, manifest)
    return _run(out, manifest, config, sc, assistant, progress, backends)


def resume(path: str | Path, assistant: Callable[[list[dict]], str] | Backend | None = None, progress: bool = True) -> Run:
    """Finish an interrupted run with the config its manifest recorded."""
    out = Path(path)
    manifest_path = out / MANIFEST
    if not manifest_path.is_file():
        if out.is_dir() and holds_no_run(out):
            raise RunError(f"--resume {out}: the run was stopped before it wrote {MANIFEST}, so no settings were saved. "
                           f"Run the original `simgen generate` command again with --out {shlex.quote(str(out))}; the folder is reused.")
        raise RunError(f"--resume {out}: no {MANIFEST} there, so there is nothing to resume. Start a new run with --out.")
    try:
        manifest = json.loads(manifest_path.read_text())
        raw = manifest["config"]
    except (ValueError, KeyError, TypeError) as e:
        raise RunError(f"{manifest_path}: unreadable manifest ({e}); the run cannot be resumed.") from None
    if manifest.get("status") == "complete":
        remove_leftovers(out)  # a run killed while it cleaned up after itself
        return load_run(out)
    check_manifest(manifest, manifest_path)
    try:
        config = GenerateConfig(**{**raw, "user": SamplingConfig(**raw["user"]), "assistant": SamplingConfig(**raw["assistant"])})
    except TypeError as e:  # an unknown or missing setting
        raise RunError(f"{manifest_path}: the recorded config does not match this simgen's settings ({e}); "
                       "resume with the simgen version that started the run, or start a new run.") from None
    sc = load_recorded(manifest["scenario"], f"--resume {out}",
                       "the rest of the run would be written from other prompts than its finished dialogues")
    if manifest.get("backend", {}).get("assistant", {}).get("backend") == "callable" and assistant is None:
        raise RunError(f"--resume {out}: the run's assistant was {manifest['backend']['assistant'].get('callable')}; pass it again (--assistant).")
    return _run(out, manifest, config, sc, assistant, progress)


def _new_manifest(cfg: GenerateConfig, sc: Scenario, out: Path, assistant: Any) -> dict[str, Any]:
    return {
        "format": FORMAT_VERSION,
        "status": "running",
        "created": now(),
        "finished": None,
        "out": str(out),
        "seed": cfg.seed,
        "n": cfg.n,
        "scenario": sc.describe(),
        "config": cfg.to_dict(),
        "backend": _declared_assistant(assistant),  # the models' descriptions are added once they load
        "versions": package_versions(),
        "progress": {"batch_size": cfg.batch_size, "n_shards": math.ceil(cfg.n / cfg.batch_size), "dialogues_done": 0, "shards": []},
        "counts": {},
        "timings": {},
    }


def _declared_assistant(assistant: Any) -> dict[str, Any]:
    """{"assistant": description} for an assistant the caller passed, so a run killed before its
    models loaded still knows on resume that it needs it; else {}."""
    from simgen.backends.callable import CallableBackend

    if assistant is None:
        return {}
    return {"assistant": (assistant if isinstance(assistant, Backend) else CallableBackend(assistant)).describe()}


def _backends(cfg: GenerateConfig, assistant: Any) -> tuple[Backend, Backend]:
    from simgen.backends.callable import CallableBackend

    if cfg.backend == "openai":
        from simgen.backends.openai import OpenAIBackend

        def load(name: str | None) -> Backend:
            return OpenAIBackend(cfg.base_url, name, cfg.api_key_env, cfg.concurrency, cfg.request_timeout, cfg.max_retries)
    else:
        from simgen.backends.transformers import TransformersBackend

        def load(name: str | None) -> Backend:
            return TransformersBackend(name, cfg.dtype, cfg.trust_remote_code)

    model = load(cfg.model)
    user: Backend = model if cfg.persona_cap is None else CappedBackend(model, cfg.persona_cap, cfg.persona_axis)
    if isinstance(assistant, Backend):
        return user, assistant
    if assistant is not None:
        return user, CallableBackend(assistant)
    if cfg.assistant_model is None or cfg.assistant_model == cfg.model:
        return user, model
    return user, load(cfg.assistant_model)


class CappedBackend(Backend):
    """The user side with activation capping on the persona axis (Lu et al. 2026), hooked only
    while the user side generates, so an assistant sharing the same model is left alone."""

    name = "transformers"
    batched = seeded = True

    def __init__(self, inner: Any, spec: str, axis_path: str | None) -> None:
        from simgen.consistency.axis import PersonaAxis, parse_persona_cap

        self.inner = inner
        self.layer, self.threshold = parse_persona_cap(spec)
        self.axis = PersonaAxis.load(axis_path)
        if self.axis.layer != self.layer:
            raise ConfigError(f"--persona-cap {spec!r}: the axis in {axis_path} was fitted at layer {self.axis.layer}; cap that layer.")

    def _capped(self):  # noqa: ANN202
        from simgen.consistency.axis import persona_cap

        return persona_cap(self.inner, self.layer, self.threshold, self.axis)

    def generate(self, chats, sampling, seeds):  # noqa: ANN001, ANN201
        with self._capped():
            return self.inner.generate(chats, sampling, seeds)

    def session(self) -> Session:
        return _CappedSession(self.inner.session(), self._capped)

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "persona_cap": {"layer": self.layer, "threshold": self.threshold, "axis_model": self.axis.model}}


class _CappedSession(Session):
    def __init__(self, inner: Session, capped: Callable[[], Any]) -> None:
        self.inner, self.capped = inner, capped

    def generate(self, chats, sampling, seeds, keys):  # noqa: ANN001, ANN201
        with self.capped():
            return self.inner.generate(chats, sampling, seeds, keys)

    def close(self) -> None:
        self.inner.close()


def _run(out: Path, manifest: dict[str, Any], cfg: GenerateConfig, sc: Scenario, assistant: Any, progress: bool,
         backends: tuple[Backend, Backend] | None = None) -> Run:
    """Generate the shards the manifest lacks, then merge them. On Ctrl-C the finished shards
    stay, stderr says how to resume, and `KeyboardInterrupt` propagates (the CLI exits 130)."""
    writer = RunWriter(out, manifest)
    try:
        load_seconds = _generate_shards(writer, cfg, sc, assistant, progress, backends)
        shards = manifest["progress"]["shards"]
        gen_seconds = sum(s["seconds"] for s in shards)
        tokens = sum(s["tokens"] for s in shards)
        writer.finish({
            **({"load_seconds": round(load_seconds, 3)} if load_seconds is not None else {}),
            "generate_seconds": round(gen_seconds, 3),
            "dialogues_per_min": round(cfg.n / gen_seconds * 60, 2) if gen_seconds else None,
            "tokens_per_s": round(tokens / gen_seconds, 1) if gen_seconds else None,
        })
    except KeyboardInterrupt:
        if manifest["status"] != "complete":
            manifest["status"] = "interrupted"
            writer.save()
        print(f"\nInterrupted; finished shards are saved in {out}. Resume with: simgen generate --resume {shlex.quote(str(out))}",
              file=sys.stderr, flush=True)
        raise
    return load_run(out)


def _generate_shards(writer: RunWriter, cfg: GenerateConfig, sc: Scenario, assistant: Any, progress: bool,
                     backends: tuple[Backend, Backend] | None = None) -> float | None:
    """Simulate and write every shard the manifest does not list; the model's load time in
    seconds, or None when every shard was already written (nothing is loaded then). `backends`
    are ones `generate` already built (a server's, checked before the folder was made)."""
    from tqdm.auto import tqdm

    manifest = writer.manifest
    n_shards = manifest["progress"]["n_shards"]
    todo = [shard for shard in range(n_shards) if shard not in writer.done_shards]
    if not todo:
        return None
    started = time.perf_counter()
    user_backend, assistant_backend = backends or _backends(cfg, assistant)
    load_seconds = time.perf_counter() - started
    manifest["backend"] = {"user": user_backend.describe(), "assistant": assistant_backend.describe()}
    manifest["status"] = "running"
    writer.save()

    bar = tqdm(total=cfg.n, initial=manifest["progress"]["dialogues_done"], unit="dlg", desc=f"simgen {sc.name}",
               disable=not progress, dynamic_ncols=True)
    totals = {"lines": 0, "tokens": 0}
    t0 = time.perf_counter()

    def on_step(lines: int, tokens: int) -> None:
        totals["lines"] += lines
        totals["tokens"] += tokens
        elapsed = max(time.perf_counter() - t0, 1e-9)
        bar.set_postfix(turns_s=f"{totals['lines'] / elapsed:.1f}", tok_s=f"{totals['tokens'] / elapsed:.0f}", refresh=False)
        bar.refresh()

    try:
        for shard in todo:
            first, last = shard * cfg.batch_size, min((shard + 1) * cfg.batch_size, cfg.n) - 1
            shard_start = time.perf_counter()
            jobs = [plan(sc, cfg.seed, i, cfg.max_turns) for i in range(first, last + 1)]
            dialogues = simulate(jobs, sc, user_backend, assistant_backend, cfg.user, cfg.assistant, cfg.seed, cfg.max_turns, on_step)
            frame = dialogues_to_frame(dialogues, sc.profile.polars_schema())
            tokens = sum(t.n_tokens for d in dialogues for t in d.turns)
            writer.write_shard(shard, frame, first, last, tokens, time.perf_counter() - shard_start)
            bar.update(len(jobs))
    finally:
        bar.close()
    return load_seconds
